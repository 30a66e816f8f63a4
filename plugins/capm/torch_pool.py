"""A torch max pool with ONNX semantics that exports (and traces for auto_LiRPA) as ONE node.

``nn.MaxPool2d`` cannot express asymmetric pads, and ``ConstantPad2d(−inf)`` in front of it is
unsafe under auto_LiRPA 0.3: its ``BoundPad`` cannot read the opset-12 ``pads`` attribute, and
its backward returns a zero bias for the pad cells, i.e. zero padding, which lets 0 win a max
of negative inputs. :class:`PaddedMaxPool2d` traces to a single ``onnx::MaxPool`` carrying
``pads = [top, left, bottom, right]`` and ``ceil_mode``, which ``BoundCapmMaxPool`` reads.

Depends on :mod:`vnnx.network` only, so it can move into the core (``Network.to_torch``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vnnx.network import MaxPool


def padded_max_pool2d(x: torch.Tensor, kernel, stride, pads=(0, 0, 0, 0), ceil_mode=False) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, OH, OW): max over each window's in-range cells.

    ``pads``: (top, left, bottom, right). The output size is that of
    :class:`vnnx.network.MaxPool` (= onnxruntime, ``ceil_mode`` included): pad with −∞ to
    exactly the extent the windows cover (or crop rows no window reaches), then pool.
    """
    height, width = int(x.shape[-2]), int(x.shape[-1])
    _, oh, ow = MaxPool((1, height, width), tuple(kernel), tuple(stride), tuple(pads), bool(ceil_mode)).out_shape
    top, left = pads[0], pads[1]
    bottom = (oh - 1) * stride[0] + kernel[0] - height - top
    right = (ow - 1) * stride[1] + kernel[1] - width - left
    x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, tuple(kernel), tuple(stride))


class _OnnxMaxPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, pads, ceil_mode):
        ctx.args = (kernel, stride, pads, ceil_mode)
        ctx.save_for_backward(x)
        return padded_max_pool2d(x, kernel, stride, pads, ceil_mode)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xx = x.detach().requires_grad_()
            (gx,) = torch.autograd.grad(padded_max_pool2d(xx, *ctx.args), xx, grad)
        return gx, None, None, None, None

    @staticmethod
    def symbolic(g, x, kernel, stride, pads, ceil_mode):
        return g.op("MaxPool", x, kernel_shape_i=list(kernel), strides_i=list(stride),
                    pads_i=list(pads), ceil_mode_i=int(ceil_mode))


class PaddedMaxPool2d(nn.Module):
    """Max pool on (N, C, H, W) with per-side −∞ pads ``(top, left, bottom, right)``.

    Example: ``PaddedMaxPool2d((3, 3), (2, 2), pads=(1, 0, 0, 1), ceil_mode=True)``.
    """

    def __init__(self, kernel, stride, pads=(0, 0, 0, 0), ceil_mode: bool = False):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.pads, self.ceil_mode = tuple(pads), bool(ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _OnnxMaxPool.apply(x, self.kernel, self.stride, self.pads, self.ceil_mode)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, pads={self.pads}, ceil_mode={self.ceil_mode}"
