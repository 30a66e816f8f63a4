"""The sum (or difference) of two network tensors of one shape: residual connections."""
from __future__ import annotations

from vnnx.errors import UnsupportedOpError
from vnnx.ops.base import LinearOperator


class Add(LinearOperator):
    """``y = x1 + sign * x2``; ``sign`` is +1 (Add) or -1 (Sub)."""

    kind = "Add"
    has_constant = False

    def __init__(self, sign: float = 1.0) -> None:
        self.sign = float(sign)

    def forward(self, x1, x2):
        return x1 + self.sign * x2

    linear_part = forward

    def abs_linear_part(self, r1, r2):
        return r1 + r2

    def transpose(self, A):
        return [A, self.sign * A]

    def sparse_matrices(self):
        import numpy as np
        import scipy.sparse as sp

        n = int(np.prod(self.out_shape))
        return [sp.identity(n, format="csr"), self.sign * sp.identity(n, format="csr")], np.zeros(n)

    def describe(self):
        return "Add" if self.sign > 0 else "Sub"


def add_builder(node, a, b, label):
    if tuple(a.shape) != tuple(b.shape):
        raise UnsupportedOpError(f"{label}: {node.op_type} node '{node.name}' of shapes {a.shape} and {b.shape}; "
                                 "vnnx adds network tensors of one shape")
    return Add(1.0 if node.op_type == "Add" else -1.0), [a, b]
