"""Transpose: a permutation of the tensor's axes."""
from __future__ import annotations

from vnnx.errors import UnsupportedOpError
from vnnx.ops import onnx_builder
from vnnx.ops.base import LinearOperator


class Transpose(LinearOperator):
    """``perm`` over the per-sample axes (ONNX's, batch dim of 1 included)."""

    kind = "Transpose"
    has_constant = False
    #: each output entry is one input entry (a box stays a box)
    permutes = True

    def __init__(self, perm) -> None:
        self.perm = tuple(int(p) for p in perm)

    def forward(self, x):
        return x.permute((0,) + tuple(p + 1 for p in self.perm))

    linear_part = abs_linear_part = forward

    def index_map(self):
        """The flat input index of each flat output entry (MILP columns are reused)."""
        import numpy as np

        return np.arange(int(np.prod(self.in_shapes[0]))).reshape(self.in_shapes[0]).transpose(self.perm).reshape(-1)

    def transpose(self, A):
        inverse = [0] * len(self.perm)
        for i, p in enumerate(self.perm):
            inverse[p] = i
        return [A.permute((0, 1) + tuple(p + 2 for p in inverse))]


@onnx_builder("Transpose")
def _transpose(node, attrs, args, label):
    x = args[0]
    perm = attrs.get("perm", list(range(len(x.shape)))[::-1])
    if len(x.shape) and x.shape[0] != 1 and perm[0] != 0:
        raise UnsupportedOpError(f"{label}: Transpose node '{node.name}' moves the batch axis")
    return Transpose(perm), [x]
