"""Linear relaxation of one max-pool window as a chain of ReLUs (CAPM).

CAPM ("Fast and Robust Verification on Maxpool-based CNN via Dual Network", Sec. 3) writes the
max of a window's cells ``x_1..x_K`` as a running max

    z_1 = x_1,    z_{j+1} = z_j + ReLU(x_{j+1} − z_j)            (CAPM eq. for z^M_{j+1})

with interval bounds ``l^M_j = max_{i<=j} l_i`` and ``u^M_j = max_{i<=j} u_i`` on ``z_j`` (these
are exact for a max). Each inner ReLU of ``d_j = x_{j+1} − z_j`` gets the CROWN / dual-network
relaxation on ``d_j ∈ [l^R_j − u^M_j, u^R_j − l^M_j]`` (sound: ``x_{j+1}`` and ``z_j`` each lie in
their interval, whatever their dependence):

    a_j d ≤ ReLU(d) ≤ s_j (d − ld_j),   s_j = ud_j / (ud_j − ld_j),  a_j ∈ [0, 1]    (unstable)
    ReLU(d) = d  if ld_j ≥ 0 ;  ReLU(d) = 0  if ud_j ≤ 0.

Because every step has non-negative coefficients on ``z_j`` and ``x_{j+1}`` (1 − a_j, 1 − s_j ≥ 0),
substituting the bound of ``z_j`` in the bound of ``z_{j+1}`` keeps the direction, so the chain
collapses to one pair of linear bounds per window:

    Σ_i w_i x_i  ≤  max_i x_i  ≤  Σ_i v_i x_i + b,     w, v on the simplex, b ≥ 0.

Extension, not in the paper: at every step the upper bound may be mixed with the constant
``u^M_{j+1}`` (DeepPoly's upper bound for a max), ``z_{j+1} ≤ (1 − β_j)·chain + β_j·u^M_{j+1}``.
A convex combination of two sound upper bounds is sound; ``β`` is optimised by α-CROWN like ``a``.
Without it the chain's upper bound can be much looser than the constant (four cells in [0, 1]:
the chain alone gives ``max ≤ (x1+x2)/8 + x3/4 + x4/2 + 7/8``).

Padding cells (−∞) never win: they are made inactive steps, so their weights are exactly zero.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import Tensor

ORDERS = ("lower", "natural")


@dataclass
class WindowRelaxation:
    """Linear bounds of every window's max, in the (sorted) slot order ``order``.

    Shapes: ``order`` (B, C, P, K) int64 slot positions (the chain visits slot ``order[..., 0]``
    first); ``w_lower``, ``w_upper`` (..., B, C, P, K) (a leading spec dimension appears when the
    parameters have one); ``b_upper`` (..., B, C, P). ``lower_slope`` / ``upper_mix``
    (..., B, C, P, K−1) are the ``a_j`` / ``β_j`` actually used (the CROWN choice when none were
    given), used to initialise α-CROWN.
    """

    order: Tensor
    w_lower: Tensor
    w_upper: Tensor
    b_upper: Tensor
    lower_slope: Tensor
    upper_mix: Tensor


def relax_windows(lower: Tensor, upper: Tensor, valid: Tensor, *,
                  lower_slope: Optional[Tensor] = None, upper_mix: Optional[Tensor] = None,
                  order: str = "lower") -> WindowRelaxation:
    """Relax ``max`` over each window (CAPM chain of ReLUs, see the module docstring).

    ``lower``, ``upper``: (B, C, P, K) bounds of the window slots; ``valid``: (P, K) or
    (B, C, P, K) bool, False for padding slots (every window needs a valid slot).
    ``lower_slope`` (``a_j``) and ``upper_mix`` (``β_j``): optional (S, B, C, P, K−1) or
    (B, C, P, K−1) parameters in [0, 1] for α-CROWN; when ``None`` each step takes the choice
    whose bound has the larger (lower) / smaller (upper) mean over the box, the rule CROWN's
    adaptive ReLU slope amounts to.
    ``order``: ``"lower"`` visits slots by decreasing lower bound (so a dominant cell comes first
    and every other step is inactive: the bound is then exact); ``"natural"`` keeps row-major
    order. The max is symmetric, so any order is sound.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    valid = valid.to(lower.device).expand_as(lower)
    key = torch.where(valid, lower, torch.full_like(lower, float("-inf")))
    if order == "natural":
        key = valid.to(lower.dtype)
    perm = torch.sort(key, dim=-1, descending=True, stable=True).indices
    ls, us, vs = (torch.gather(t, -1, perm) for t in (lower, upper, valid))
    # Filling a padding slot with l_1 keeps the running-max bounds unchanged and makes its step
    # inactive (ud = l_1 − l^M_j ≤ 0); the explicit mask below is a second guard.
    first = ls[..., :1].expand_as(ls)
    ls, us = torch.where(vs, ls, first), torch.where(vs, us, first)
    run_l = torch.cummax(ls, dim=-1).values          # l^M_j
    run_u = torch.cummax(us, dim=-1).values          # u^M_j
    mid = (ls + us) / 2
    k = lower.shape[-1]
    if k == 1:
        w = vs.to(lower.dtype)
        return WindowRelaxation(perm, w, w.clone(), torch.zeros_like(ls[..., 0]), ls[..., :0], ls[..., :0])

    # Step j (d_j = x_{j+1} − z_j) for every j at once: its ReLU's phase and upper line s d + t.
    ld = ls[..., 1:] - run_u[..., :-1]
    ud = us[..., 1:] - run_l[..., :-1]
    inactive = (ud <= 0) | ~vs[..., 1:]
    active = (ld >= 0) & ~inactive
    unstable = ~(active | inactive)
    one, zero = torch.ones_like(ld), torch.zeros_like(ld)
    s = torch.where(active, one, torch.where(unstable, ud / torch.where(unstable, ud - ld, one), zero))
    t = torch.where(unstable, -s * ld, zero)
    const = run_u[..., 1:]                           # u^M_{j+1}, the constant upper bound

    # The free choices: given, or CROWN's rule, which follows the mean over the box of the bounds
    # built so far (lower: z_{j+1} ≥ (1 − a) z_j + a x_{j+1}; upper: the chain's line mixed with
    # the constant by β).
    a_free, beta = lower_slope, upper_mix
    if a_free is None or beta is None:
        a_free, beta = _crown_choices(mid, s, t, const, active, unstable, lower_slope, upper_mix)
    a = torch.where(active, one, torch.where(unstable, a_free, zero))

    # The chain collapsed: slot i (i ≥ 1) enters at step i − 1 and is then scaled by every later
    # step's factor on z; slot 0 only by the factors. keep[..., i] = Π_{j ≥ i} factor_j.
    def collapse(enter, factor):
        keep = torch.flip(torch.cumprod(torch.flip(factor, [-1]), -1), [-1])
        keep = torch.cat([keep, torch.ones_like(keep[..., :1])], -1)
        return torch.cat([keep[..., :1], enter * keep[..., 1:]], -1), keep

    w_lo, _ = collapse(a, 1 - a)
    up_factor = (1 - beta) * (1 - s)
    w_up, keep = collapse((1 - beta) * s, up_factor)
    # Step j's intercept, (1 − β_j) t_j + β_j u^M_{j+1}, is scaled by the factors after it.
    b_up = (((1 - beta) * t + beta * const) * keep[..., 1:]).sum(-1)
    w_lo, w_up = w_lo * vs, w_up * vs
    return WindowRelaxation(perm, w_lo, w_up, b_up, a_free.expand_as(a), beta.expand_as(up_factor))


def _crown_choices(mid: Tensor, s: Tensor, t: Tensor, const: Tensor, active: Tensor, unstable: Tensor,
                   lower_slope: Optional[Tensor], upper_mix: Optional[Tensor],
                   backend: str = "auto") -> tuple[Tensor, Tensor]:
    """CROWN's choice of every step's ``a_j`` and ``β_j`` (those not given): ``a_j = 1`` when the
    step's input ``x_{j+1}`` has the larger mean over the box than the lower bound built so far,
    ``β_j = 1`` when the constant ``u^M_{j+1}`` is below the chain's mean. Sequential in j (each
    choice moves the means), so this loop is most of a relaxation's time: on the CPU, without
    gradients, it runs on numpy arrays (a few microseconds per operation, not torch's ten).
    ``backend``: "auto", or "numpy" / "torch" to force one (tests)."""
    dtype = mid.dtype
    grads = any(x is not None and x.requires_grad for x in (lower_slope, upper_mix))
    if backend == "numpy" or (backend == "auto" and mid.device.type == "cpu" and not grads):
        # Step axis first and contiguous: each step reads one block.
        # (The choices come from comparisons: no gradient flows through them, so bounds that
        # carry gradients, as in CROWN-IBP training, are read detached.)
        to = lambda x: None if x is None else np.ascontiguousarray(np.moveaxis(x.detach().numpy(), -1, 0))  # noqa: E731
        flt = lambda c, d=mid.detach().numpy().dtype: c.astype(d)  # noqa: E731
        bcast = lambda x, like: np.broadcast_to(x, np.broadcast_shapes(np.shape(x), like.shape))  # noqa: E731
        stack, back = np.stack, lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(dtype)  # noqa: E731
    else:
        to = lambda x: None if x is None else x.movedim(-1, 0)  # noqa: E731
        flt, stack, back = (lambda c: c.to(dtype)), torch.stack, (lambda x: x)
        bcast = lambda x, like: x.expand(torch.broadcast_shapes(x.shape, like.shape))  # noqa: E731
    mid, s, t, const, given_a, given_b = (to(x) for x in (mid, s, t, const, lower_slope, upper_mix))
    fixed, free = flt(to(active)), flt(to(unstable))       # a = fixed + free * a_j: exactly 1, 0 or a_j
    mean_lo, mean_up = mid[0], mid[0]
    picks_a, picks_b = [], []
    for j in range(s.shape[0]):
        m = mid[j + 1]
        aj = flt(m > mean_lo) if given_a is None else given_a[j]
        a_eff = fixed[j] + free[j] * aj
        mean_lo = (1 - a_eff) * mean_lo + a_eff * m
        chain_mean = (1 - s[j]) * mean_up + s[j] * m + t[j]
        bj = flt(chain_mean >= const[j]) if given_b is None else given_b[j]
        mean_up = (1 - bj) * chain_mean + bj * const[j]
        picks_a.append(bcast(aj, a_eff))
        picks_b.append(bcast(bj, mean_up))
    return (back(stack(picks_a, -1)) if lower_slope is None else lower_slope,
            back(stack(picks_b, -1)) if upper_mix is None else upper_mix)
