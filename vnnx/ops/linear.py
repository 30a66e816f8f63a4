"""Gemm and MatMul with a constant matrix: ``y = x W^T + b`` on the last axis."""
from __future__ import annotations

import numpy as np
import torch

from vnnx.errors import UnsupportedOpError
from vnnx.ops import Var, onnx_builder
from vnnx.ops.base import LinearOperator


# The transposed product skips all-zero columns of the coefficients when at most this share of
# them is live, the block has at least LIVE_MIN_ROWS rows (a gather is not worth it on a few)
# and the layer at least LIVE_MIN_INPUTS inputs: finding the columns costs about 1/inputs of the
# product (on ACAS Xu's 50-wide layers, batched over boxes, the search cost 9 % of CROWN's time
# and found little: each box has its own inactive neurons).
LIVE_SHARE = 0.8
LIVE_MIN_ROWS = 16
LIVE_MIN_INPUTS = 128


class Linear(LinearOperator):
    """``weight``: (out, in) float64, ``bias``: (out,) or None, acting on the last axis."""

    kind = "Linear"

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None) -> None:
        self.weight = torch.as_tensor(np.asarray(weight, dtype=np.float64))
        self.bias = None if bias is None else torch.as_tensor(np.asarray(bias, dtype=np.float64))

    def forward(self, x):
        y = x @ self.weight.to(x).T
        return y if self.bias is None else y + self.bias.to(x)

    def linear_part(self, x):
        return x @ self.weight.to(x).T

    def abs_linear_part(self, r):
        return r @ self.weight.abs().to(r).T

    def transpose(self, A):
        w = self.weight.to(A)
        flat = A.reshape(-1, w.shape[0])
        if flat.shape[0] >= LIVE_MIN_ROWS and w.shape[1] >= LIVE_MIN_INPUTS and not flat.requires_grad:
            # Coefficients arriving through a ReLU are zero on its inactive neurons, for every
            # row: those columns of A, and rows of W, add nothing to the product. (Not under
            # α-CROWN's gradients: a column zero at this step may still have a gradient.)
            live = torch.nonzero(flat.abs().amax(0) != 0).reshape(-1)
            if live.numel() <= LIVE_SHARE * w.shape[0]:
                flat, w = flat[:, live], w[live]
        return [(flat @ w).reshape(tuple(A.shape[:-1]) + (w.shape[1],))]

    def constant(self, like):
        if self.bias is None:
            return None
        return torch.zeros((1,) + tuple(self.out_shape), dtype=like.dtype, device=like.device) + self.bias.to(like)

    def backward_rows(self, idx, B, bounds):
        shape = tuple(self.in_shapes[0])
        if int(np.prod(shape[:-1])) != 1:        # a product over a leading axis: the generic step
            return super().backward_rows(idx, B, bounds)
        like = bounds[0][0]
        r = idx.numel()
        w = self.weight.to(like)[idx]            # (r, in): the rows' coefficients on the input
        bias = like.new_zeros((1, r)) if self.bias is None else self.bias.to(like)[idx].reshape(1, r)
        return [w.reshape((1, r) + shape).expand((B, r) + shape)], bias.expand(B, r)

    def sparse_matrices(self):
        import scipy.sparse as sp

        w, b = self.matrix()
        lead = int(np.prod(self.in_shapes[0][:-1]))      # rows of the last-axis product
        W = sp.kron(sp.identity(lead, format="csr"), sp.csr_matrix(w), format="csr")
        return [W], np.tile(b, lead)

    def matrix(self):
        """(W, b) as float64 numpy on the last axis."""
        b = np.zeros(self.weight.shape[0]) if self.bias is None else self.bias.numpy()
        return self.weight.numpy(), b

    def describe(self):
        return f"Linear {self.weight.shape[1]}->{self.weight.shape[0]}"


@onnx_builder("Gemm")
def _gemm(node, attrs, args, label):
    a, b = args[0], args[1]
    c = args[2] if len(args) > 2 else None
    if not isinstance(a, Var) or isinstance(b, Var) or isinstance(c, Var):
        raise UnsupportedOpError(f"{label}: Gemm node '{node.name}' multiplies two network tensors; "
                                 "vnnx needs the second factor and the bias constant")
    if attrs.get("transA", 0):
        raise UnsupportedOpError(f"{label}: Gemm node '{node.name}' with transA=1 is not supported")
    w = np.asarray(b, dtype=np.float64)
    w = w if attrs.get("transB", 0) else w.T          # (out, in)
    w = float(attrs.get("alpha", 1.0)) * w
    bias = None
    if c is not None:
        try:
            bias = float(attrs.get("beta", 1.0)) * np.broadcast_to(np.asarray(c, dtype=np.float64).reshape(-1),
                                                                    (w.shape[0],))
        except ValueError:
            raise UnsupportedOpError(f"{label}: Gemm node '{node.name}': bias of shape {np.shape(c)} does not "
                                     f"match {w.shape[0]} outputs") from None
    return Linear(w, None if bias is None else np.array(bias)), [a]


class LeftLinear(LinearOperator):
    """``y = W @ x`` with a constant ``weight`` W (k, n) acting on the second-to-last axis (a
    MatMul with the constant on the left, e.g. on column vectors)."""

    kind = "Linear"
    has_constant = False

    def __init__(self, weight: np.ndarray) -> None:
        self.weight = torch.as_tensor(np.asarray(weight, dtype=np.float64))

    def forward(self, x):
        return torch.matmul(self.weight.to(x), x)

    linear_part = forward

    def abs_linear_part(self, r):
        return torch.matmul(self.weight.abs().to(r), r)

    def transpose(self, A):
        return [torch.matmul(self.weight.to(A).T, A)]

    def describe(self):
        return f"Linear {self.weight.shape[1]}->{self.weight.shape[0]} (left)"


@onnx_builder("MatMul")
def _matmul(node, attrs, args, label):
    a, b = args
    if isinstance(a, Var) and not isinstance(b, Var) and np.ndim(b) == 2:
        return Linear(np.asarray(b, dtype=np.float64).T, None), [a]
    if isinstance(b, Var) and not isinstance(a, Var) and np.ndim(a) == 2:
        # W @ x: on a vector x it is the last axis's product, on a matrix the second-to-last's.
        if len(b.shape) == 1:
            return Linear(np.asarray(a, dtype=np.float64), None), [b]
        return LeftLinear(np.asarray(a, dtype=np.float64)), [b]
    raise UnsupportedOpError(f"{label}: MatMul node '{node.name}' must multiply a network tensor by a constant "
                             "2-D matrix")
