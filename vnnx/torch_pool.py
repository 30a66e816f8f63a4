"""A torch max pool with ONNX semantics that exports (and traces for auto_LiRPA) as ONE node.

``nn.MaxPool2d`` cannot express asymmetric pads, and ``ConstantPad2d(−inf)`` in front of it is
unsafe under auto_LiRPA 0.3: its ``BoundPad`` cannot read the opset-12 ``pads`` attribute, and
its backward returns a zero bias for the pad cells, i.e. zero padding, which lets 0 win a max
of negative inputs. :class:`PaddedMaxPool2d` traces to a single ``onnx::MaxPool`` carrying
``pads = [top, left, bottom, right]`` (``ceil_mode`` folded into the bottom/right pads), which
``BoundCapmMaxPool`` reads.

This is the pool :meth:`vnnx.network.Network.to_torch` emits for padded or ``ceil_mode`` pools,
so that the bounded module sees one MaxPool node (the CAPM plugin re-exports it).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

def floor_mode_pads(height: int, width: int, kernel, stride, pads=(0, 0, 0, 0),
                    ceil_mode: bool = False) -> tuple[int, int, int, int]:
    """Pads ``(top, left, bottom, right)`` with which a floor-mode pool has exactly the windows
    of the given pool (ONNX / :class:`vnnx.network.MaxPool` semantics, ``ceil_mode`` included).

    Bottom/right are cut or extended to where the last window ends (always < kernel). ONNX shape
    inference and onnxruntime disagree on some ``ceil_mode`` output sizes; a floor-mode pool
    with these pads has one meaning everywhere.
    """
    from vnnx.network import MaxPool  # vnnx.network imports this module lazily

    _, oh, ow = MaxPool((1, height, width), tuple(kernel), tuple(stride), tuple(pads), bool(ceil_mode)).out_shape
    top, left = int(pads[0]), int(pads[1])
    bottom = max(0, (oh - 1) * stride[0] + kernel[0] - height - top)
    right = max(0, (ow - 1) * stride[1] + kernel[1] - width - left)
    return top, left, bottom, right


def padded_max_pool2d(x: torch.Tensor, kernel, stride, pads=(0, 0, 0, 0), ceil_mode=False) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, OH, OW): max over each window's in-range cells.

    ``pads``: (top, left, bottom, right). The output size is that of
    :class:`vnnx.network.MaxPool` (= onnxruntime, ``ceil_mode`` included): pad with −∞ to
    exactly the extent the windows cover, then pool in floor mode.
    """
    top, left, bottom, right = floor_mode_pads(int(x.shape[-2]), int(x.shape[-1]), kernel, stride, pads, ceil_mode)
    x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, tuple(kernel), tuple(stride))


class _OnnxMaxPool(torch.autograd.Function):
    """Floor-mode max pool with −∞ ``pads``; exports as one ONNX ``MaxPool`` (``ceil_mode=0``)."""

    @staticmethod
    def forward(ctx, x, kernel, stride, pads):
        ctx.args = (kernel, stride, pads)
        ctx.save_for_backward(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return padded_max_pool2d(x, kernel, stride, pads)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xx = x.detach().requires_grad_()
            (gx,) = torch.autograd.grad(padded_max_pool2d(xx, *ctx.args), xx, grad)
        return gx, None, None, None

    @staticmethod
    def symbolic(g, x, kernel, stride, pads):
        return g.op("MaxPool", x, kernel_shape_i=list(kernel), strides_i=list(stride), pads_i=list(pads))


class PaddedMaxPool2d(nn.Module):
    """Max pool on (N, C, H, W) with per-side −∞ pads ``(top, left, bottom, right)``.

    Example: ``PaddedMaxPool2d((3, 3), (2, 2), pads=(1, 0, 0, 1), ceil_mode=True)``.
    """

    def __init__(self, kernel, stride, pads=(0, 0, 0, 0), ceil_mode: bool = False):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.pads, self.ceil_mode = tuple(pads), bool(ceil_mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            # Traced (auto_LiRPA, ONNX export) the input size is a constant: the pads are too.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            pads = floor_mode_pads(int(x.shape[-2]), int(x.shape[-1]), self.kernel, self.stride, self.pads,
                                   self.ceil_mode)
        return _OnnxMaxPool.apply(x, self.kernel, self.stride, pads)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, stride={self.stride}, pads={self.pads}, ceil_mode={self.ceil_mode}"
