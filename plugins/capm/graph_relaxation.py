"""CAPM's MaxPool relaxation as the MaxPool backward step of vnnx's graph engine.

Each window's max is bounded by the CAPM chain of ReLUs (:func:`relaxation.relax_windows`, the
same code as the auto_LiRPA operator), with CROWN's choice of the chain's step parameters:
``Σ w_i x_i <= max <= Σ v_i x_i + b`` per window. The plugin announces it in
``PLUGIN.extras["relaxations"]``; the CLI hands it to :class:`vnnx.engine.GraphEngine` under
``--maxpool capm``.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from vnnx.ops.base import Relaxation, by_sign, memo, rowdot

from .relaxation import relax_windows


class CapmMaxPool(Relaxation):
    """CAPM's chain relaxation as the MaxPool operator's backward step, dense and sparse.

    α-CROWN optimises the chain's parameters per spec row: each step's lower slope ``a_j`` and
    upper mix ``β_j`` in [0, 1] (:func:`relaxation.relax_windows`), ``alpha``: (B, rows, 2, P,
    K−1) for P windows of K slots, initialised at CROWN's choice."""

    has_alpha = True

    def alpha_init(self, op, lo, hi, rows):
        cells_lo, cells_hi, valid, _ = _cells(op, lo, hi)
        rel = relax_windows(cells_lo, cells_hi, valid)
        init = torch.stack([rel.lower_slope, rel.upper_mix], dim=2)      # (B, 1, 2, P, K-1)
        return init.expand((init.shape[0], rows) + tuple(init.shape[2:])).clone()

    def alpha_clamp(self, op, alpha):
        alpha.data.clamp_(0.0, 1.0)

    def backward(self, op, A: torch.Tensor, bounds, alpha=None):
        lo, hi = bounds[0]
        B, K = A.shape[:2]
        out = A.new_zeros((B, K, int(lo[0].numel())))
        if alpha is None:
            # CROWN's weights are fixed: only the (window, slot) pairs with a weight are visited.
            windows, slots, w_lo, w_up, b_up = memo(op, "capm_used", (lo, hi), lambda: _used(op, lo, hi))
            P = b_up.shape[-1]
            a = A.reshape(B, K, P)[:, :, windows]
        else:
            slots, w_lo, w_up, b_up = _relax(op, lo, hi, alpha)
            P, W = w_lo.shape[-2:]
            a = A.reshape(B, K, P, 1)
        coeff = (a * torch.where(a >= 0, w_lo, w_up)).reshape(B, K, -1)
        bias = rowdot(A.clamp(max=0).reshape(B, K, P), b_up)
        out.scatter_add_(-1, slots.expand(B, K, slots.shape[-1]), coeff)
        return [out.reshape((B, K) + tuple(lo.shape[1:]))], bias

    def backward_sparse(self, op, A, bounds):
        lo, hi = bounds[0]
        lines, const = memo(op, "capm_sparse", (lo, hi), lambda: _sparse(op, lo, hi))
        A = by_sign(A)
        return [A @ lines], A @ const


def _sparse(op, lo, hi):
    """The relaxation of one sample as :func:`vnnx.ops.base.by_sign` takes it: the lower weights
    stacked on the upper ones, (2P, n_in) CSR (a cell twice in a padded window's slots is summed),
    and the intercepts (2P,): none below, the upper ones above."""
    slots, w_lo, w_up, b_up = memo(op, "capm", (lo, hi), lambda: _relax(op, lo, hi))
    P, W = w_lo.shape[-2:]
    rows = np.repeat(np.arange(2 * P), W)
    cols = np.tile(slots[0, 0].cpu().numpy(), 2)
    weights = np.concatenate([w_lo[0, 0].reshape(-1).cpu().numpy(), w_up[0, 0].reshape(-1).cpu().numpy()])
    lines = sp.csr_matrix((weights, (rows, cols)), shape=(2 * P, int(lo[0].numel())))
    lines.eliminate_zeros()     # most slots of a window after a dominant cell weigh nothing
    return lines, np.concatenate([np.zeros(P), b_up[0, 0].cpu().numpy()])


def _used(op, lo, hi):
    """CROWN's relaxation (:func:`_relax`) on the (window, slot) pairs that carry a lower or an
    upper weight in some sample, flattened: their windows (N,), input cells (B, 1, N), lower and
    upper weights (B, 1, N), and the upper intercepts (B, 1, P). After a dominant cell every
    step of a window is inactive, so most pairs weigh nothing."""
    slots, w_lo, w_up, b_up = memo(op, "capm", (lo, hi), lambda: _relax(op, lo, hi))
    B, _, P, W = w_lo.shape
    w_lo, w_up = w_lo.reshape(B, 1, P * W), w_up.reshape(B, 1, P * W)
    keep = torch.nonzero(((w_lo != 0) | (w_up != 0)).reshape(B, -1).any(0)).reshape(-1)
    return keep // W, slots[..., keep], w_lo[..., keep], w_up[..., keep], b_up


def _cells(op, lo, hi):
    """Every window's slot bounds (B, 1, P, W), the slots' validity (P, W) and input cells (P, W)."""
    index, valid = op.window_table()
    idx = torch.as_tensor(index, device=lo.device)
    B = lo.shape[0]
    P, W = idx.shape
    cells_lo = lo.reshape(B, -1)[:, idx].reshape(B, 1, P, W)
    cells_hi = hi.reshape(B, -1)[:, idx].reshape(B, 1, P, W)
    return cells_lo, cells_hi, torch.as_tensor(valid, device=lo.device), idx


def _relax(op, lo, hi, alpha=None):
    """The windows' chain relaxation on these bounds: the input cell of every (window, slot) in
    the chain's order (B, 1, P*W), the lower and upper weights (B, R, P, W) and the upper
    intercepts (B, R, P); R = 1, or per spec row with ``alpha`` (B, R, 2, P, W-1)."""
    cells_lo, cells_hi, valid, idx = _cells(op, lo, hi)
    B, _, P, W = cells_lo.shape
    params = {} if alpha is None else {"lower_slope": alpha[:, :, 0], "upper_mix": alpha[:, :, 1]}
    # The rows ride on the relaxation's channel axis (1 here): (B, R, P, W-1) parameters
    # broadcast against (B, 1, P, W) bounds. The slot order depends on the bounds only.
    rel = relax_windows(cells_lo, cells_hi, valid, **params)
    slots = torch.gather(idx.expand(B, 1, P, W), -1, rel.order).reshape(B, 1, P * W)
    R = rel.w_lower.shape[1]
    return (slots, rel.w_lower.reshape(B, R, P, W), rel.w_upper.reshape(B, R, P, W),
            rel.b_upper.reshape(B, R, P))
