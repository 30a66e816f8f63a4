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


#: PGD's starts are the best of a pool of this many points per restart (at most PGD_POOL_MAX
#: points and PGD_POOL_ENTRIES input entries), evaluated in chunks of PGD_POOL_CHUNK without
#: gradients, for at most a quarter of the attack's time limit. The entries cap keeps the pool
#: cheap on image networks (83 points for MNIST's 784 inputs: a 1,000-point pool cost 0.7 s per
#: instance on verivital's CNN, three times its verification) and full on few-input ones (ACAS
#: Xu: 1,000 points, what finds 1_9 prop_7 in seconds).
PGD_POOL_PER_RESTART = 100
PGD_POOL_MAX = 4096
PGD_POOL_ENTRIES = 2 ** 16
PGD_POOL_CHUNK = 512


def box_points(lo: torch.Tensor, hi: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """``count`` points of each box ``[lo, hi]`` (``lo``, ``hi``: (..., n)) -> (..., count, n):
    the first half uniform, the others with each coordinate at a random bound of the box with
    probability 1/2 (else uniform). Violations often sit on a box's faces, where PGD from inside
    stalls (:func:`pgd_spec`)."""
    shape = tuple(lo.shape[:-1]) + (count, lo.shape[-1])
    lo, hi = lo.unsqueeze(-2), hi.unsqueeze(-2)
    points = lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=lo.dtype)
    face = torch.rand(shape, generator=gen) < 0.5
    face[..., : count // 2, :] = False
    side = torch.where(torch.rand(shape, generator=gen) < 0.5, lo, hi)
    return torch.where(face, side, points)


def _starts(module, lo, hi, clauses, shape, restarts: int, gen, time_limit: Optional[float] = None) -> torch.Tensor:
    """(restarts, n) PGD starts: the centre and the points of smallest spec margin in a pool of
    uniform points and points on random faces of the box (see :func:`pgd_spec`)."""
    n = lo.numel()
    size = max(restarts, min(PGD_POOL_MAX, PGD_POOL_PER_RESTART * restarts, PGD_POOL_ENTRIES // max(1, n)))
    pool = box_points(lo, hi, size, gen)
    pool[0] = (lo + hi) / 2
    if size == restarts:
        return pool
    start, margins = time.monotonic(), []
    with torch.no_grad():
        for part in pool.split(PGD_POOL_CHUNK):
            y = module(part.reshape((len(part),) + shape)).reshape(len(part), -1)
            margins.append(spec_margin(y.double(), clauses))
            if time_limit is not None and time.monotonic() - start > time_limit / 4:
                break
    margin = torch.cat(margins)
    margin[0] = -torch.inf                                    # the centre always starts
    if len(margin) < restarts:                                # out of time: the rest as drawn
        return pool[:restarts]
    return pool[:len(margin)][torch.argsort(margin)[:restarts]]


@dataclass
class PgdResult:
    x: Optional[np.ndarray]        # (n_inputs,) best point found, float32
    margin: float                  # spec_margin at x (<= 0: candidate counterexample)
    seconds: float


def pgd_spec(module: nn.Module, x_lower: np.ndarray, x_upper: np.ndarray,
             clauses: Sequence[tuple[np.ndarray, np.ndarray]], *, restarts: int = 10, steps: int = 50,
             seed: int = 0, time_limit: Optional[float] = None, input_shape: Optional[tuple] = None) -> PgdResult:
    """Search the box for a point whose output satisfies one of the ``clauses`` (A y <= b).

    ``module`` maps (N, *input_shape) (default (N, n_inputs)) to (N, n_out). The starts: the
    box centre and a pool of :data:`PGD_POOL_PER_RESTART` x ``restarts`` points (at most
    :data:`PGD_POOL_MAX`), half uniform in the box and half with each coordinate at a random bound
    of the box with probability 1/2 (else uniform), evaluated without gradients; the ``restarts``
    best of them (the centre among them) run PGD as one batch. Violations often sit on the box's
    faces, where PGD from the inside stalls in a local minimum (ACAS Xu 1_9 prop_7: every inside
    start stops at a margin of 5e-4; about 1 in 900 face points violates). Sign steps shrink
    geometrically from a quarter of the box width.
    """
    start = time.monotonic()
    gen = torch.Generator().manual_seed(seed)
    # The search runs in float32: a box beyond ±PGD_MAX_ABS (e.g. ±1e300) is searched inside it,
    # where widths and steps stay finite (a witness found there is in the box all the same).
    lo = torch.as_tensor(np.clip(np.asarray(x_lower, dtype=np.float64), -PGD_MAX_ABS, PGD_MAX_ABS).astype(np.float32))
    hi = torch.as_tensor(np.clip(np.asarray(x_upper, dtype=np.float64), -PGD_MAX_ABS, PGD_MAX_ABS).astype(np.float32))
    shape = tuple(input_shape) if input_shape is not None else (lo.numel(),)
    width = hi - lo
    module.eval()
    x0 = _starts(module, lo, hi, clauses, shape, restarts, gen, time_limit)
    xa = x0
    best_x, best_m = None, float("inf")
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
