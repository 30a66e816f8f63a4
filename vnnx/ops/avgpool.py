"""AveragePool (2-D): a fixed nonnegative average over each window."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vnnx.ops import onnx_builder
from vnnx.ops.base import LinearOperator, pool_window


class AveragePool(LinearOperator):
    """``pads`` (top, left, bottom, right); with ``count_include_pad`` false the divisor of a
    window is its number of in-range cells (ONNX's default)."""

    kind = "AveragePool"
    has_constant = False

    def __init__(self, kernel, stride, pads, count_include_pad: bool, ceil_mode: bool) -> None:
        self.kernel, self.stride, self.pads = tuple(kernel), tuple(stride), tuple(pads)
        self.count_include_pad, self.ceil_mode = bool(count_include_pad), bool(ceil_mode)

    def forward(self, x):
        lead = x.shape[:-3]
        t = x.reshape((-1,) + tuple(x.shape[-3:]))
        top, left, bottom, right = self.pads
        if (top, left) == (bottom, right) and top <= self.kernel[0] // 2 and left <= self.kernel[1] // 2:
            y = F.avg_pool2d(t, self.kernel, self.stride, (top, left), self.ceil_mode, self.count_include_pad)
        else:   # asymmetric padding: pad explicitly, divide by the window's cell count
            padded = F.pad(t, (left, right, top, bottom))
            s = F.avg_pool2d(padded, self.kernel, self.stride, 0, self.ceil_mode) * (self.kernel[0] * self.kernel[1])
            if self.count_include_pad:
                n = self.kernel[0] * self.kernel[1]
            else:
                ones = F.pad(torch.ones_like(t[:1, :1]), (left, right, top, bottom))
                n = F.avg_pool2d(ones, self.kernel, self.stride, 0, self.ceil_mode) * (self.kernel[0] * self.kernel[1])
            y = s / n
        return y.reshape(tuple(lead) + tuple(y.shape[1:]))

    linear_part = abs_linear_part = forward


@onnx_builder("AveragePool")
def _avgpool(node, attrs, args, label):
    kernel, strides, pads = pool_window(node, attrs, label)
    return AveragePool(kernel, strides, pads, attrs.get("count_include_pad", 0), attrs.get("ceil_mode", 0)), [args[0]]
