"""Projected gradient descent (Madry et al. 2018) inside an input box.

Two uses: ``pgd_linf`` perturbs a batch of labelled samples (adversarial training, robustness
estimates), and ``pgd_spec`` searches a VNN-LIB property's input box for a point whose output
lies in the property's unsafe region. Neither is a proof of anything: ``pgd_spec`` candidates
are re-checked with onnxruntime by :mod:`vnnx.verify` before anyone is told "sat".
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from torch import nn


def pgd_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float, *, steps: int = 8,
             step_size: Optional[float] = None, random_start: bool = True,
             clip: tuple[float, float] = (0.0, 1.0), generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Untargeted L∞ PGD on cross-entropy. ``x``: (N, ...) in model-input space; returns x_adv
    with ``|x_adv - x| <= epsilon`` and inside ``clip``. Step size defaults to 2.5 ε / steps."""
    if epsilon <= 0:
        return x.detach().clone()
    alpha = step_size if step_size is not None else 2.5 * epsilon / steps
    lo = torch.clamp(x - epsilon, *clip)
    hi = torch.clamp(x + epsilon, *clip)
    if random_start:
        noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
        xa = torch.max(torch.min(x + epsilon * noise, hi), lo)
    else:
        xa = x.clone()
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        loss = nn.functional.cross_entropy(model(xa), y)
        (grad,) = torch.autograd.grad(loss, xa)
        xa = torch.max(torch.min(xa.detach() + alpha * grad.sign(), hi), lo)
    return xa.detach()


PGD_MAX_ABS = 1e18


def spec_margin(y: torch.Tensor, clauses: Sequence[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
    """How far ``y`` (N, n_out) is from the unsafe region: min over clauses of max_i (A y - b)_i.

    ``<= 0`` means some clause holds (the point is a counterexample). A clause without rows holds
    everywhere (-inf); no clause at all means nothing is unsafe (+inf)."""
    if not len(clauses):
        return torch.full((y.shape[0],), torch.inf, dtype=y.dtype)
    per_clause = []
    for a, b in clauses:
        if len(b) == 0:
            per_clause.append(torch.full((y.shape[0],), -torch.inf, dtype=y.dtype))
            continue
        at = torch.as_tensor(a, dtype=y.dtype)
        bt = torch.as_tensor(b, dtype=y.dtype)
        per_clause.append((y @ at.T - bt).max(dim=1).values)
    return torch.stack(per_clause, dim=1).min(dim=1).values


@dataclass
class PgdResult:
    x: Optional[np.ndarray]        # (n_inputs,) best point found, float32
    margin: float                  # spec_margin at x (<= 0: candidate counterexample)
    seconds: float


def pgd_spec(module: nn.Module, x_lower: np.ndarray, x_upper: np.ndarray,
             clauses: Sequence[tuple[np.ndarray, np.ndarray]], *, restarts: int = 10, steps: int = 50,
             seed: int = 0, time_limit: Optional[float] = None, input_shape: Optional[tuple] = None) -> PgdResult:
    """Search the box for a point whose output satisfies one of the ``clauses`` (A y <= b).

    ``module`` maps (N, *input_shape) (default (N, n_inputs)) to (N, n_out). Restarts run as
    one batch: restart 0 starts at the box centre, the others uniformly at random. Adam-style
    sign steps shrink geometrically from a quarter of the box width.
    """
    start = time.monotonic()
    gen = torch.Generator().manual_seed(seed)
    # The search runs in float32: a box beyond ±PGD_MAX_ABS (e.g. ±1e300) is searched inside it,
    # where widths and steps stay finite (a witness found there is in the box all the same).
    lo = torch.as_tensor(np.clip(np.asarray(x_lower, dtype=np.float64), -PGD_MAX_ABS, PGD_MAX_ABS).astype(np.float32))
    hi = torch.as_tensor(np.clip(np.asarray(x_upper, dtype=np.float64), -PGD_MAX_ABS, PGD_MAX_ABS).astype(np.float32))
    shape = tuple(input_shape) if input_shape is not None else (lo.numel(),)
    width = hi - lo
    x0 = lo + width * torch.rand((restarts, lo.numel()), generator=gen)
    x0[0] = (lo + hi) / 2
    xa = x0
    best_x, best_m = None, float("inf")
    module.eval()
    for step in range(steps):
        xa = xa.detach().requires_grad_(True)
        margin = spec_margin(module(xa.reshape((restarts,) + shape)).reshape(restarts, -1), clauses)
        m_min, i_min = margin.detach().min(dim=0)
        if m_min.item() < best_m:
            best_m, best_x = m_min.item(), xa[int(i_min)].detach().clone()
        if best_m <= 0 or (time_limit is not None and time.monotonic() - start > time_limit):
            break
        (grad,) = torch.autograd.grad(margin.sum(), xa)
        alpha = width * 0.25 * (0.9 ** step)
        xa = torch.max(torch.min(xa.detach() - alpha * grad.sign(), hi), lo)
    return PgdResult(None if best_x is None else best_x.numpy().astype(np.float32), best_m,
                     time.monotonic() - start)
