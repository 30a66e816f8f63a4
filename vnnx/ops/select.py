"""Select: each output entry is one input entry, picked by a fixed flat index (entries may be
picked several times). No ONNX node maps to it; graph passes make it, e.g.
:func:`vnnx.graph.as_splittable` picks one slot of every MaxPool window. Linear and exact:
interval bounds are the picked entries' bounds; the backward step adds each output's coefficient
onto its source entry; the MILP reuses the source columns (``index_map``)."""
from __future__ import annotations

import numpy as np
import torch

from vnnx.ops.base import LinearOperator


class Select(LinearOperator):
    """``y.flat[i] = x.flat[index[i]]``, with ``y`` of per-sample shape ``out_shape``."""

    kind = "Select"
    has_constant = False

    def __init__(self, index, in_shape, out_shape) -> None:
        self.index = np.asarray(index, dtype=np.int64).reshape(-1)
        self.in_shapes, self.out_shape = (tuple(in_shape),), tuple(out_shape)
        if self.index.size != int(np.prod(self.out_shape)):
            raise ValueError(f"Select: {self.index.size} indices for an output of shape {self.out_shape}")
        if self.index.size and not (0 <= self.index.min() and self.index.max() < int(np.prod(in_shape))):
            raise ValueError(f"Select: an index is out of range for an input of shape {tuple(in_shape)}")

    def forward(self, x):
        idx = torch.as_tensor(self.index, device=x.device)
        return x.reshape(x.shape[0], -1)[:, idx].reshape((x.shape[0],) + self.out_shape)

    linear_part = abs_linear_part = forward

    def transpose(self, A):
        B, K = A.shape[:2]
        idx = torch.as_tensor(self.index, device=A.device)
        out = A.new_zeros((B, K, int(np.prod(self.in_shapes[0]))))
        out.index_add_(-1, idx, A.reshape(B, K, -1))
        return [out.reshape((B, K) + self.in_shapes[0])]

    def index_map(self):
        """The flat input index of each flat output entry (MILP columns are reused)."""
        return self.index

    def describe(self):
        return f"Select {self.index.size} of {int(np.prod(self.in_shapes[0]))}"
