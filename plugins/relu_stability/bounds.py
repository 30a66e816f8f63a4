"""Pre-activation bounds for ReLU stability: naive and improved interval arithmetic.

Xiao et al. (ICLR 2019) estimate, per training input ``x``, bounds ``l <= z <= u`` on every
ReLU input ``z`` over the box ``{x' : |x' - x|_inf <= eps} ∩ [clip]``:

* **naive IA** (Section 4.2): layer by layer, ``[l, u]`` of layer ``i`` from ``[relu(l), relu(u)]``
  of layer ``i - 1`` only.
* **improved IA** (Appendix C): a stably active ReLU (``l > 0``) is the identity, so its
  layer and the one after it are one affine map. To bound layer ``i``, the weight columns that
  meet stably active neurons of layer ``i - 1`` are pushed back through layer ``i - 1``'s affine
  map (and so on, down to the input or the first MaxPool); only the columns of unstable or
  inactive neurons are concretised with their intervals. Cancellations between paths through
  active neurons are therefore kept. The bounds are never looser than naive IA's (the
  substituted part is bounded exactly by the same interval set, and the triangle inequality
  ``|Σ a_j W_j| <= Σ |a_j| |W_j|`` does the rest).

Both work on a :class:`~.chain.Chain` in torch and stay differentiable in the weights, so
the RS loss (:mod:`.losses`) trains through them; float64 chains give the report's numbers.
Neither is a verification result: the arithmetic is ordinary floating point.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from vnnx.errors import ConfigError

from .chain import AffineStep, Chain, PoolStep, ReluStep

Bounds = tuple[torch.Tensor, torch.Tensor]

#: names accepted for the interval methods (``ibp`` is the usual name of naive IA).
IA_METHODS = {"naive": "naive", "ibp": "naive", "naive-ia": "naive",
              "improved": "improved", "improved-ia": "improved"}


def input_box(x: torch.Tensor, epsilon: float, clip: Optional[tuple[float, float]] = (0.0, 1.0)) -> Bounds:
    """The L∞ ball of radius ``epsilon`` around each sample, intersected with ``clip``.

    ``x``: (B, ...) in model-input space -> ``(lo, hi)``, each (B, n_inputs) flattened.
    """
    flat = x.reshape(x.shape[0], -1)
    lo, hi = flat - epsilon, flat + epsilon
    if clip is not None:
        lo, hi = lo.clamp(clip[0], clip[1]), hi.clamp(clip[0], clip[1])
    return lo, hi


def naive_ia(chain: Chain, lo: torch.Tensor, hi: torch.Tensor) -> list[Bounds]:
    """Bounds on every step's output, ``(B, n_out)`` each, by naive interval arithmetic."""
    out: list[Bounds] = []
    for step in chain.steps:
        lo, hi = step.interval(lo, hi)
        out.append((lo, hi))
    return out


def _concretize(a: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> Bounds:
    """Range of ``a @ v`` for ``lo <= v <= hi``; ``a``: (1 or B, p, n), ``lo``/``hi``: (B, n)."""
    mid, rad = ((hi + lo) / 2).unsqueeze(-1), ((hi - lo) / 2).unsqueeze(-1)
    centre = (a @ mid).squeeze(-1)
    spread = (a.abs() @ rad).squeeze(-1)
    return centre - spread, centre + spread


def _improved_affine(chain: Chain, k: int, outs: list[Bounds], box: Bounds,
                     dense: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> Bounds:
    """Appendix C bounds on the output of affine step ``k``, given improved bounds ``outs`` of
    the steps before it. Walks back while the step input is a ReLU fed by an affine step."""
    def mat(j: int) -> tuple[torch.Tensor, torch.Tensor]:
        if j not in dense:
            dense[j] = chain.steps[j].dense()
        return dense[j]

    weight, bias = mat(k)
    a = weight.unsqueeze(0)                        # (1, p, n): rows are step k's outputs
    lower = upper = bias.unsqueeze(0).expand(box[0].shape[0], -1)
    j = k
    while True:
        in_lo, in_hi = outs[j - 1] if j > 0 else box
        feeds = j >= 2 and isinstance(chain.steps[j - 1], ReluStep) and isinstance(chain.steps[j - 2], AffineStep)
        if not feeds:
            dl, du = _concretize(a, in_lo, in_hi)
            return lower + dl, upper + du
        active = (outs[j - 2][0] > 0).to(a.dtype)   # stably active ReLUs of step j - 1, (B, n)
        rest = 1 - active
        # Unstable and inactive neurons: their post-ReLU interval, as naive IA would use it.
        dl, du = _concretize(a, in_lo * rest, in_hi * rest)
        lower, upper = lower + dl, upper + du
        if not bool(active.any()):
            return lower, upper
        a = a * active.unsqueeze(1)                # (B, p, n): columns of active neurons
        w_prev, b_prev = mat(j - 2)
        shift = (a @ b_prev.unsqueeze(-1)).squeeze(-1)
        lower, upper = lower + shift, upper + shift
        a = a @ w_prev                             # through the identity ReLU and step j - 2
        j -= 2


def improved_ia(chain: Chain, lo: torch.Tensor, hi: torch.Tensor,
                chunk_size: Optional[int] = None) -> list[Bounds]:
    """Bounds on every step's output by improved interval arithmetic (Appendix C).

    ``lo``/``hi``: (B, n_inputs). Memory grows as B x (rows x columns of the products), so
    ``chunk_size`` splits the batch (the result is the same).
    """
    n = lo.shape[0]
    if chunk_size is not None and n > chunk_size:
        parts = [improved_ia(chain, lo[i:i + chunk_size], hi[i:i + chunk_size]) for i in range(0, n, chunk_size)]
        return [(torch.cat([p[s][0] for p in parts]), torch.cat([p[s][1] for p in parts]))
                for s in range(len(chain.steps))]
    outs: list[Bounds] = []
    dense: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    box = (lo, hi)
    for k, step in enumerate(chain.steps):
        if isinstance(step, AffineStep):
            outs.append(_improved_affine(chain, k, outs, box, dense))
        else:
            outs.append(step.interval(*(outs[k - 1] if k > 0 else box)))
    return outs


def step_bounds(chain: Chain, lo: torch.Tensor, hi: torch.Tensor, method: str = "naive",
                chunk_size: Optional[int] = None) -> list[Bounds]:
    """Bounds on every step's output by ``method`` ('naive'/'ibp' or 'improved')."""
    kind = IA_METHODS.get(method)
    if kind is None:
        raise ConfigError(f"unknown interval method {method!r}; choose one of {', '.join(sorted(IA_METHODS))}")
    if kind == "naive":
        return naive_ia(chain, lo, hi)
    return improved_ia(chain, lo, hi, chunk_size)


def relu_input_bounds(chain: Chain, outs: Sequence[Bounds], box: Bounds) -> list[Bounds]:
    """For each ReLU step, in order, the bounds ``(l, u)`` of its input (the pre-activation)."""
    return [outs[i - 1] if i > 0 else box for i in chain.relu_indices()]


def pre_activation_bounds(chain: Chain, lo: torch.Tensor, hi: torch.Tensor, method: str = "naive",
                          chunk_size: Optional[int] = None) -> list[Bounds]:
    """``[(l, u), ...]``, one (B, n_j) pair per ReLU layer, over the box ``lo <= x <= hi``."""
    return relu_input_bounds(chain, step_bounds(chain, lo, hi, method, chunk_size), (lo, hi))


def unstable_mask(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """ReLUs whose sign is not fixed over the box: ``l < 0 < u`` (the paper's ``l·u < 0``)."""
    return (lower < 0) & (upper > 0)


def maxpool_binaries(step: PoolStep, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Binaries a MILP needs for a MaxPool (Tjeng et al.): per window, the inputs that can
    still be the max (upper bound >= the largest lower bound in the window), when more than
    one can. ``lower``/``upper``: (B, n_in) -> (B,) counts."""
    pad = torch.full((lower.shape[0], 1), float("-inf"), dtype=lower.dtype, device=lower.device)
    lo_w = torch.cat([lower, pad], 1)[:, step.index]          # (B, n_out, window)
    hi_w = torch.cat([upper, pad], 1)[:, step.index]
    best_lower = lo_w.amax(dim=2, keepdim=True)
    candidates = (hi_w >= best_lower) & torch.isfinite(hi_w)
    count = candidates.sum(dim=2)
    return torch.where(count > 1, count, torch.zeros_like(count)).sum(dim=1)
