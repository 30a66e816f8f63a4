"""Concat of network tensors (and constants) along one axis."""
from __future__ import annotations

import numpy as np
import torch

from vnnx.errors import UnsupportedOpError
from vnnx.ops import Var, onnx_builder
from vnnx.ops.base import LinearOperator


class Concat(LinearOperator):
    """``parts``: per argument, None for a network tensor (in input order) or a float64 constant
    (per-sample shape); ``axis``: in the per-sample shape."""

    kind = "Concat"

    def __init__(self, axis: int, parts: list) -> None:
        self.axis = int(axis)
        self.parts = [None if p is None else torch.as_tensor(np.asarray(p, dtype=np.float64)) for p in parts]

    def _cat(self, xs, with_constants: bool):
        it = iter(xs)
        pieces = []
        batch = xs[0].shape[0]
        for p in self.parts:
            if p is None:
                pieces.append(next(it))
            else:
                c = p.to(xs[0]) if with_constants else torch.zeros_like(p, dtype=xs[0].dtype)
                pieces.append(c.unsqueeze(0).expand((batch,) + tuple(p.shape)))
        return torch.cat(pieces, dim=self.axis + 1)

    def forward(self, *xs):
        return self._cat(xs, True)

    def linear_part(self, *xs):
        return self._cat(xs, False)

    def abs_linear_part(self, *rs):
        return self._cat(rs, False)

    def transpose(self, A):
        sizes = [s[self.axis] for s in self._all_shapes()]
        chunks = torch.split(A, sizes, dim=self.axis + 2)
        return [c for c, p in zip(chunks, self.parts) if p is None]

    def _all_shapes(self):
        it = iter(self.in_shapes)
        return [next(it) if p is None else tuple(p.shape) for p in self.parts]


@onnx_builder("Concat")
def _concat(node, attrs, args, label):
    vars_ = [a for a in args if isinstance(a, Var)]
    rank = len(vars_[0].shape)
    axis = int(attrs.get("axis", 0))
    axis = axis + rank if axis < 0 else axis
    if axis == 0:
        raise UnsupportedOpError(f"{label}: Concat node '{node.name}' joins along the batch axis")
    parts = [None if isinstance(a, Var) else np.asarray(a) for a in args]
    for p in parts:
        if p is not None and p.ndim != rank:
            raise UnsupportedOpError(f"{label}: Concat node '{node.name}': constant of rank {p.ndim}")
    return Concat(axis, parts), vars_
