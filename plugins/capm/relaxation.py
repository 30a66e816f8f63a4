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
    eye = torch.eye(k, dtype=lower.dtype, device=lower.device)
    w_lo = eye[0].expand_as(ls)                      # z_1 = x_1 exactly
    w_up = eye[0].expand_as(ls)
    b_up = torch.zeros_like(ls[..., 0])
    mean_lo, mean_up = mid[..., 0], mid[..., 0]      # mean over the box of the current bounds
    used_a, used_beta = [], []
    for j in range(k - 1):
        ld = ls[..., j + 1] - run_u[..., j]
        ud = us[..., j + 1] - run_l[..., j]
        inactive = (ud <= 0) | ~vs[..., j + 1]
        active = (ld >= 0) & ~inactive
        unstable = ~(active | inactive)
        one, zero = torch.ones_like(ld), torch.zeros_like(ld)
        s = torch.where(active, one, torch.where(unstable, ud / torch.where(unstable, ud - ld, one), zero))
        t = torch.where(unstable, -s * ld, zero)

        # Lower bound of step j: z_{j+1} ≥ (1 − a) z_j + a x_{j+1}.
        a_free = (mid[..., j + 1] > mean_lo).to(ld.dtype) if lower_slope is None else lower_slope[..., j]
        a = torch.where(active, one, torch.where(unstable, a_free, zero))
        w_lo = w_lo * (1 - a).unsqueeze(-1) + a.unsqueeze(-1) * eye[j + 1]
        mean_lo = (1 - a) * mean_lo + a * mid[..., j + 1]

        # Upper bound: z_{j+1} ≤ (1 − s) z_j + s x_{j+1} + t, mixed with the constant u^M_{j+1}.
        chain_w = w_up * (1 - s).unsqueeze(-1) + s.unsqueeze(-1) * eye[j + 1]
        chain_b = (1 - s) * b_up + t
        chain_mean = (1 - s) * mean_up + s * mid[..., j + 1] + t
        const = run_u[..., j + 1]
        beta = (chain_mean >= const).to(ld.dtype) if upper_mix is None else upper_mix[..., j]
        w_up = chain_w * (1 - beta).unsqueeze(-1)
        b_up = (1 - beta) * chain_b + beta * const
        mean_up = (1 - beta) * chain_mean + beta * const
        used_a.append(a_free.expand_as(a))
        used_beta.append(beta.expand_as(b_up))
    w_lo, w_up = w_lo * vs, w_up * vs
    stack = (lambda xs: torch.stack(xs, -1)) if k > 1 else (lambda xs: ls[..., :0])
    return WindowRelaxation(perm, w_lo, w_up, b_up, stack(used_a), stack(used_beta))
