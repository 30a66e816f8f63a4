"""2-D convolution (ONNX Conv): zero padding (possibly asymmetric), stride, dilation, groups.
1-D convolutions run as 2-D ones of height 1."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vnnx.errors import UnsupportedOpError
from vnnx.ops import Var, onnx_builder
from vnnx.ops.base import LinearOperator, check_auto_pad


class Conv(LinearOperator):
    """``weight``: (O, C/groups, kh, kw); ``pads``: (top, left, bottom, right). The per-sample
    input is ``(..., C, H, W)`` (leading dims of 1, e.g. ONNX's batch dim, are kept)."""

    kind = "Conv"

    def __init__(self, weight, bias, stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1) -> None:
        self.weight = torch.as_tensor(np.asarray(weight, dtype=np.float64))
        self.bias = None if bias is None else torch.as_tensor(np.asarray(bias, dtype=np.float64))
        self.stride, self.pads, self.dilation, self.groups = tuple(stride), tuple(pads), tuple(dilation), int(groups)

    def _conv(self, x, weight, bias):
        lead = x.shape[:-3]
        t = x.reshape((-1,) + tuple(x.shape[-3:]))
        t = F.pad(t, (self.pads[1], self.pads[3], self.pads[0], self.pads[2]))
        y = F.conv2d(t, weight, bias, stride=self.stride, dilation=self.dilation, groups=self.groups)
        return y.reshape(tuple(lead) + tuple(y.shape[1:]))

    def forward(self, x):
        return self._conv(x, self.weight.to(x), None if self.bias is None else self.bias.to(x))

    def linear_part(self, x):
        return self._conv(x, self.weight.to(x), None)

    def abs_linear_part(self, r):
        return self._conv(r, self.weight.abs().to(r), None)

    def constant(self, like):
        if self.bias is None:
            return None
        c = torch.zeros((1,) + tuple(self.out_shape), dtype=like.dtype, device=like.device)
        return c + self.bias.to(like).reshape(-1, 1, 1)

    def transpose(self, A):
        # The transposed convolution (conv2d's input gradient) on the padded input, then the
        # padding cropped off.
        B, K = A.shape[:2]
        c, h, w = self.in_shapes[0][-3:]
        size = (B * K * int(np.prod(self.in_shapes[0][:-3], dtype=np.int64)), c,
                h + self.pads[0] + self.pads[2], w + self.pads[1] + self.pads[3])
        g = torch.nn.grad.conv2d_input(size, self.weight.to(A), A.reshape((-1,) + tuple(A.shape[-3:])),
                                       stride=self.stride, dilation=self.dilation, groups=self.groups)
        g = g[:, :, self.pads[0]:self.pads[0] + h, self.pads[1]:self.pads[1] + w]
        return [g.reshape((B, K) + tuple(self.in_shapes[0]))]

    def sparse_matrices(self):
        from vnnx.network import Conv as ChainConv

        if int(np.prod(self.in_shapes[0][:-3])) != 1:
            return super().sparse_matrices()
        bias = np.zeros(self.weight.shape[0]) if self.bias is None else self.bias.numpy()
        view = ChainConv(self.weight.numpy(), bias, tuple(self.in_shapes[0][-3:]), tuple(self.out_shape[-3:]),
                         self.stride, self.pads, self.dilation, self.groups)
        w, b = view.sparse_matrix()
        return [w], b

    def describe(self):
        o, ci, kh, kw = self.weight.shape
        return f"Conv {ci * self.groups}->{o} {kh}x{kw}/{self.stride[0]}"


@onnx_builder("Conv")
def _conv(node, attrs, args, label):
    x, w = args[0], args[1]
    b = args[2] if len(args) > 2 else None
    if not isinstance(x, Var) or isinstance(w, Var) or isinstance(b, Var):
        raise UnsupportedOpError(f"{label}: Conv node '{node.name}' needs constant weights and bias")
    w = np.asarray(w, dtype=np.float64)
    check_auto_pad(node, attrs, label)
    if w.ndim == 3:        # 1-D: (O, C, k) -> (O, C, 1, k)
        w = w[:, :, None, :]
        one = lambda v, d: (d,) + tuple(v)  # noqa: E731
        stride = one(attrs.get("strides", [1]), 1)
        dil = one(attrs.get("dilations", [1]), 1)
        p = attrs.get("pads", [0, 0])
        pads = (0, p[0], 0, p[1])
        if len(x.shape) < 3:
            raise UnsupportedOpError(f"{label}: Conv node '{node.name}': input shape {x.shape} is not (N, C, L)")
        op = Conv1d(w, b, stride, pads, dil, attrs.get("group", 1))
        return op, [x]
    if w.ndim != 4:
        raise UnsupportedOpError(f"{label}: Conv node '{node.name}' is {w.ndim - 2}-D; vnnx handles 1-D and 2-D")
    pads = tuple(attrs.get("pads", [0, 0, 0, 0]))
    return Conv(w, b, tuple(attrs.get("strides", [1, 1])), pads, tuple(attrs.get("dilations", [1, 1])),
                attrs.get("group", 1)), [x]


class Conv1d(Conv):
    """A 1-D convolution on ``(..., C, L)``, run as a 2-D one on ``(..., C, 1, L)``."""

    kind = "Conv"

    def _conv(self, x, weight, bias):
        y = super()._conv(x.unsqueeze(-2), weight, bias)
        return y.squeeze(-2)

    def constant(self, like):
        if self.bias is None:
            return None
        c = torch.zeros((1,) + tuple(self.out_shape), dtype=like.dtype, device=like.device)
        return c + self.bias.to(like).reshape(-1, 1)

    def transpose(self, A):
        return LinearOperator.transpose(self, A)

    def sparse_matrices(self):
        return LinearOperator.sparse_matrices(self)
