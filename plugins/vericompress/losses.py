"""The CROWN-IBP loss (Zhang et al., ICLR 2020, Eq. 7) through auto_LiRPA, as a loss term of
:func:`vnnx.training.train`.

For a batch ``x`` with labels ``y`` and radius ε, the margins ``z_y - z_j`` (j ≠ y) are lower-
bounded over ``{x' : |x' - x|_inf <= ε} ∩ clip`` by ``β · CROWN-IBP + (1 - β) · IBP``, where β goes
from 1 at ε = 0 to 0 at ε = ε_max as in the paper; the term is ``weight · CE(-lower, y)`` (the
logit of class y is 0 and of class j is ``-lower_j``). The loop adds the clean cross-entropy.

With ``kappa_end`` (CROWN-IBP's κ schedule, Zhang et al. 2020, Sec. 4): the loss is
``κ · CE(clean) + (1 - κ) · weight · CE(-lower)``, ``κ = 1 - (1 - κ_end) · ε/ε_max``, so that at
ε = ε_max with κ_end = 0 it is the worst-case loss alone (VeriCompress, Eq. 1). :func:`kappa`
gives the loop's clean weight, the term scales itself by ``1 - κ``.
"""
from __future__ import annotations

import weakref
from typing import Optional

import torch
from torch import nn

from vnnx.errors import ConfigError
from vnnx.training import LossTerm


def margin_matrix(y: torch.Tensor, n_classes: int) -> torch.Tensor:
    """(B, n_classes - 1, n_classes) rows ``e_y - e_j`` for every j ≠ y."""
    eye = torch.eye(n_classes, dtype=torch.float32)
    c = eye[y].unsqueeze(1) - eye.unsqueeze(0)                    # (B, n, n)
    keep = ~torch.eye(n_classes, dtype=torch.bool)[y]              # drop j == y
    return c[keep].reshape(len(y), n_classes - 1, n_classes)


class BoundedCache:
    """One auto_LiRPA BoundedModule per (model, input shape) that uses the model's own parameter
    objects, so bounds follow in-place weight updates (masks) and gradients reach the model."""

    def __init__(self) -> None:
        self._cache: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()

    def get(self, model: nn.Module, shape: tuple[int, ...]):
        from vnnx.bounds import tied_bounded_module

        per = self._cache.setdefault(model, {})
        if shape not in per:
            bounded = tied_bounded_module(model, shape)
            per[shape] = bounded
        return per[shape]


def margin_lower_bounds(bounded, x: torch.Tensor, y: torch.Tensor, epsilon: float, method: str,
                        clip: Optional[tuple[float, float]] = (0.0, 1.0), n_classes: int = 10) -> torch.Tensor:
    """(B, n_classes - 1) lower bounds of ``z_y - z_j`` by 'IBP', 'CROWN-IBP' or 'CROWN'."""
    from vnnx._compat import import_auto_lirpa

    lirpa = import_auto_lirpa()
    lo, hi = x - epsilon, x + epsilon
    if clip is not None:
        lo, hi = lo.clamp(*clip), hi.clamp(*clip)
    bx = lirpa.BoundedTensor(x, lirpa.PerturbationLpNorm(norm=float("inf"), x_L=lo, x_U=hi))
    c = margin_matrix(y, n_classes)
    lower, _ = bounded.compute_bounds(x=(bx,), C=c, method=method, bound_upper=False)
    return lower


def kappa(eps: float, epsilon_max: float, kappa_end: float) -> float:
    """CROWN-IBP's κ, the weight of the clean loss: 1 at ε = 0, linear in ε to ``kappa_end`` at
    ε = ``epsilon_max``. Example: ``kappa(0.05, 0.1, 0.0) == 0.5``."""
    if epsilon_max <= 0:
        return 1.0
    return 1.0 - (1.0 - kappa_end) * min(1.0, max(0.0, eps / epsilon_max))


def crown_ibp_term(weight: float, epsilon_max: float, *, clip: Optional[tuple[float, float]] = (0.0, 1.0),
                   n_classes: int = 10, kappa_end: Optional[float] = None) -> LossTerm:
    """``weight · CE(-lower bounds of the margins)`` at the loop's scheduled ε; zero while ε = 0.

    ``epsilon_max`` sets β = 1 - ε/ε_max, the CROWN-IBP / IBP mix. With ``kappa_end`` the term
    is scaled by ``1 - kappa(ε)`` (pass ``clean_weight=lambda e: kappa(e, ε_max, κ_end)`` to the
    loop). Example:
    ``train(model, x, y, loss_terms=[crown_ibp_term(1.0, 0.1)], epsilon=epsilon_schedule(0.1, 10, 1, 5))``.
    """
    if weight < 0 or epsilon_max < 0:
        raise ConfigError(f"CROWN-IBP weight and epsilon must be >= 0 (got {weight}, {epsilon_max})")
    if kappa_end is not None and not 0 <= kappa_end <= 1:
        raise ConfigError(f"kappa_end must lie in [0, 1], got {kappa_end}")
    cache = BoundedCache()

    def term(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        if eps <= 0 or weight == 0:
            return torch.zeros(())
        bounded = cache.get(model, tuple(int(d) for d in x.shape[1:]))
        # BoundParams.forward sets requires_grad = training on the shared parameters.
        bounded.train()
        beta = max(0.0, 1.0 - eps / epsilon_max) if epsilon_max > 0 else 0.0
        lower = margin_lower_bounds(bounded, x, y, eps, "IBP", clip, n_classes)
        if beta > 0:
            lower_ci = margin_lower_bounds(bounded, x, y, eps, "CROWN-IBP", clip, n_classes)
            lower = beta * lower_ci + (1 - beta) * lower
        logits = torch.cat([torch.zeros(len(x), 1), -lower], dim=1)
        scale = weight if kappa_end is None else weight * (1.0 - kappa(eps, epsilon_max, kappa_end))
        return scale * nn.functional.cross_entropy(logits, torch.zeros(len(x), dtype=torch.int64))
    return term
