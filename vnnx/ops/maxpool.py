"""MaxPool (2-D) with −∞ padding (ONNX semantics): each output is the max of its window's
in-range cells.

Default relaxation (DeepPoly's, Singh et al., POPL 2019, §4): when one cell's lower bound is at
least every other cell's upper bound, the output IS that cell; otherwise
``x_j* <= y <= max_i hi_i`` with ``j*`` the cell of largest lower bound. CAPM's tighter chain
replaces it when the engine is given it (``vnnx.engine.GraphEngine(relaxations=...)``).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from vnnx.errors import UnsupportedOpError
from vnnx.ops import onnx_builder
from vnnx.ops.base import Operator, by_sign, memo, pool_window


class MaxPool(Operator):
    """``pads`` (top, left, bottom, right). :meth:`window_table` gives, per output cell, the
    flat indices (in the per-sample input) of its window's in-range cells."""

    kind = "MaxPool"

    def __init__(self, kernel, stride, pads, ceil_mode: bool) -> None:
        self.kernel, self.stride, self.pads, self.ceil_mode = tuple(kernel), tuple(stride), tuple(pads), bool(ceil_mode)
        self._table = None

    def forward(self, x):
        lead = x.shape[:-3]
        t = x.reshape((-1,) + tuple(x.shape[-3:]))
        flat = t.flatten(1)
        index, valid = self.window_table()
        idx = torch.as_tensor(index, device=x.device)
        vals = flat[:, idx]                                    # (N, P, K)
        if self._table is None:
            self.window_table()
        vals = vals.masked_fill(~torch.as_tensor(valid, device=x.device), float("-inf"))
        y = vals.max(-1).values
        return y.reshape(tuple(lead) + self._out_chw)

    def as_splittable(self, add, name, inputs, in_shapes, shape):
        """Each window's max as ``z_1 = x_1``, ``z_{j+1} = z_j + ReLU(x_{j+1} - z_j)`` over its
        slots: one :class:`~vnnx.ops.select.Select` per slot picks that slot of every window, then
        a Sub, a ReLU and an Add per step (a padding slot picks the window's first in-range cell
        again: the max is unchanged). A ReLU split then decides which cell wins."""
        from vnnx.ops.add import Add
        from vnnx.ops.relu import Relu
        from vnnx.ops.select import Select

        index, valid = self.window_table()
        first = index[np.arange(len(index)), valid.argmax(1)]
        slots = np.where(valid, index, first[:, None])
        in_shape, shape = tuple(in_shapes[0]), tuple(shape)
        z = None
        for j in range(slots.shape[1]):
            s = add(f"{name}/slot{j}", Select(slots[:, j], in_shape, shape), inputs, shape, [in_shape])
            if z is None:
                z = s
                continue
            d = add(f"{name}/gap{j}", Add(-1.0), (s, z), shape, [shape, shape])
            r = add(f"{name}/relu{j}", Relu(), (d,), shape, [shape])
            z = add(f"{name}/max{j}", Add(1.0), (z, r), shape, [shape, shape])
        return z

    def window_table(self):
        """``index`` (P, K) int64 flat per-sample input indices, ``valid`` (P, K) bool; P output
        cells in C order over (C, OH, OW), K = kh * kw slots (invalid ones in the padding)."""
        if self._table is None:
            shape = self.in_shapes[0][-3:]
            c, h, w = shape
            ids = torch.arange(c * h * w, dtype=torch.float64).reshape(1, c, h, w)
            top, left, bottom, right = self.pads
            extra_h, extra_w = self._ceil_extra(h, w)
            padded = F.pad(ids, (left, right + extra_w, top, bottom + extra_h), value=-1.0)
            cols = F.unfold(padded, self.kernel, stride=self.stride)      # (1, C*kh*kw, L)
            self._out_chw = (c, (padded.shape[2] - self.kernel[0]) // self.stride[0] + 1,
                             (padded.shape[3] - self.kernel[1]) // self.stride[1] + 1)
            k = self.kernel[0] * self.kernel[1]
            cols = cols.reshape(c, k, -1).permute(0, 2, 1).reshape(-1, k)  # (C*L, K)
            index = cols.numpy().astype(np.int64)
            valid = index >= 0
            if not valid.any(1).all():
                raise UnsupportedOpError(f"MaxPool {self.kernel}/{self.stride} on {tuple(shape)} has a window "
                                         "made of padding only")
            self._table = (np.where(valid, index, 0), valid)
        return self._table

    def _ceil_extra(self, h, w):
        if not self.ceil_mode:
            return 0, 0
        extra = []
        for n, k, s, p0, p1 in ((h, self.kernel[0], self.stride[0], self.pads[0], self.pads[2]),
                                (w, self.kernel[1], self.stride[1], self.pads[1], self.pads[3])):
            span = n + p0 + p1 - k
            out = -(-span // s) + 1
            if (out - 1) * s >= n + p0:
                out -= 1
            extra.append(max(0, (out - 1) * s + k - (n + p0 + p1)))
        return tuple(extra)

    def _gather(self, t):
        """(B, *in_shape) -> (B, P, K) window values (padding slots repeat cell 0)."""
        index, _ = self.window_table()
        return t.reshape(t.shape[0], -1)[:, torch.as_tensor(index, device=t.device)]

    def interval(self, bounds):
        lo, hi = bounds
        return self.forward(lo), self.forward(hi)

    def _windows(self, lo, hi):
        """Per window, from the cells' bounds: the upper bounds ``wu`` (B, P, K; −∞ in padding),
        the slot ``arg`` (B, P) of the largest lower bound, and ``decided`` (B, P): that cell's lower
        bound is at least every other cell's upper bound, so the window's max IS that cell."""
        mask = torch.as_tensor(self.window_table()[1], device=lo.device)
        wl = self._gather(lo).masked_fill(~mask, float("-inf"))
        wu = self._gather(hi).masked_fill(~mask, float("-inf"))
        best_lo, arg = wl.max(-1)
        others_hi = wu.scatter(-1, arg.unsqueeze(-1), float("-inf")).max(-1).values
        return wu, arg, best_lo >= others_hi

    def needs_tight_input(self, lo, hi):
        # A decided window's cells' bounds do not shape any relaxation.
        index, valid = self.window_table()
        idx = torch.as_tensor(index, device=lo.device)
        _, _, decided = self._windows(lo, hi)
        open_ = (~decided).unsqueeze(-1) & torch.as_tensor(valid, device=lo.device)   # (B, P, K)
        count = torch.zeros(lo.shape[0], lo[0].numel(), dtype=torch.int64, device=lo.device)
        count.scatter_add_(1, idx.reshape(1, -1).expand(lo.shape[0], -1), open_.reshape(lo.shape[0], -1).long())
        return (count > 0).reshape(lo.shape)

    def _lines(self, lo, hi):
        """The relaxation, each (B, P): ``winner``, the input cell of the window's largest lower
        bound (``y >= x_winner``); ``decided``, whether ``y == x_winner``; ``top``, the window's
        largest upper bound (``y <= top``)."""
        idx = torch.as_tensor(self.window_table()[0], device=lo.device)
        wu, arg, decided = self._windows(lo, hi)
        winner = idx.unsqueeze(0).expand(arg.shape[0], -1, -1).gather(-1, arg.unsqueeze(-1)).squeeze(-1)
        return winner, decided, wu.max(-1).values

    def backward(self, A, bounds, alpha=None):
        lo, hi = bounds[0]
        winner, decided, top = self._lines(lo, hi)
        B, K = A.shape[:2]
        a = A.reshape(B, K, -1)
        pos, neg = a.clamp(min=0), a.clamp(max=0)
        d = decided.unsqueeze(1)
        # Lower bound of a*y: a >= 0 uses y >= x_winner; a < 0 uses y <= top unless decided.
        linear_part = torch.where(d, a, pos)
        const = torch.where(d, torch.zeros_like(neg), neg) * top.unsqueeze(1)
        coeff = a.new_zeros((B, K, int(np.prod(self.in_shapes[0]))))
        coeff.scatter_add_(-1, winner.unsqueeze(1).expand(-1, K, -1), linear_part)
        return [coeff.reshape((B, K) + tuple(self.in_shapes[0]))], const.sum(-1)

    def backward_sparse(self, A, bounds):
        lo, hi = bounds[0]
        lines, const = memo(self, "sparse", (lo, hi), lambda: self._sparse_relaxation(lo, hi))
        A = by_sign(A)
        return [A @ lines], A @ const

    def _sparse_relaxation(self, lo, hi):
        """For one sample, as :func:`by_sign` takes them: the windows' lower lines (the winner
        cell) stacked on the upper lines (the winner where decided, else none), (2P, n_in) CSR, and
        the constants (2P,): none below, the top upper bound above where undecided."""
        winner, decided, top = (t[0].cpu().numpy() for t in self._lines(lo, hi))
        P, n_in = winner.shape[0], int(np.prod(self.in_shapes[0]))
        rows = np.arange(P)
        lines = sp.csr_matrix((np.concatenate([np.ones(P), decided.astype(np.float64)]),
                               (np.concatenate([rows, rows + P]), np.concatenate([winner, winner]))), shape=(2 * P, n_in))
        return lines, np.concatenate([np.zeros(P), np.where(decided, 0.0, top)])

    def milp(self, builder, cols, bounds, out_bounds):
        return builder.maxpool(self, cols[0], bounds[0], out_bounds)


@onnx_builder("MaxPool")
def _maxpool(node, attrs, args, label):
    kernel, strides, pads = pool_window(node, attrs, label)
    if attrs.get("storage_order", 0) or len(node.output) > 1:
        raise UnsupportedOpError(f"{label}: MaxPool node '{node.name}' with a storage order or indices output")
    return MaxPool(kernel, strides, pads, attrs.get("ceil_mode", 0)), [args[0]]
