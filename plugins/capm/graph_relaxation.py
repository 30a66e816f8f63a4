"""CAPM's MaxPool relaxation as the MaxPool backward step of vnnx's graph engine.

Each window's max is bounded by the CAPM chain of ReLUs (:func:`relaxation.relax_windows`, the
same code as the auto_LiRPA operator and the sparse engine), with CROWN's choice of the chain's
step parameters: ``Σ w_i x_i <= max <= Σ v_i x_i + b`` per window. The plugin announces it in
``PLUGIN.extras["relaxations"]``; the CLI hands it to :class:`vnnx.engine.GraphEngine` under
``--maxpool capm``.
"""
from __future__ import annotations

import torch

from .relaxation import relax_windows


def capm_maxpool_backward(op, A: torch.Tensor, bounds, alpha=None):
    """CROWN's backward step through ``op`` (a :class:`vnnx.ops.maxpool.MaxPool`):
    ``A`` (B, K, *out_shape) -> ([(B, K, *in_shape)], bias (B, K))."""
    lo, hi = bounds[0]
    index, valid = op.window_table()
    idx = torch.as_tensor(index, device=A.device)
    B, K = A.shape[:2]
    P, W = idx.shape
    cells_lo = lo.reshape(B, -1)[:, idx].reshape(B, 1, P, W)
    cells_hi = hi.reshape(B, -1)[:, idx].reshape(B, 1, P, W)
    rel = relax_windows(cells_lo, cells_hi, torch.as_tensor(valid, device=A.device))
    slots = torch.gather(idx.expand(B, 1, P, W), -1, rel.order).reshape(B, P, W)
    w_lo, w_up = rel.w_lower.reshape(B, 1, P, W), rel.w_upper.reshape(B, 1, P, W)
    a = A.reshape(B, K, P, 1)
    pos, neg = a.clamp(min=0), a.clamp(max=0)
    coeff = (pos * w_lo + neg * w_up).reshape(B, K, P * W)
    bias = (neg.reshape(B, K, P) * rel.b_upper.reshape(B, 1, P)).sum(-1)
    out = A.new_zeros((B, K, int(lo[0].numel())))
    out.scatter_add_(-1, slots.reshape(B, 1, P * W).expand(B, K, P * W), coeff)
    return [out.reshape((B, K) + tuple(lo.shape[1:]))], bias
