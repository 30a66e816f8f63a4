"""onnx2torch conversion, made robust: old opsets, and a MaxPool variant it gets wrong.

Private to :mod:`vnnx.io.onnx`. Everything here exists because of a specific onnx2torch 1.5
behaviour, named where it is handled:

* it has converters only for some opset versions of each op (no Flatten-1, Gemm-7, ...), so
  opset-8 files such as ACAS Xu fail; :func:`convert_model` retries on an opset upgrade;
* it implements ONNX MaxPool with asymmetric pads and ``ceil_mode=1`` with torch's ceil rule
  applied to the pre-padded tensor, which can add an output row/column that onnxruntime does
  not produce; :class:`CeilModeMaxPool2d` replaces those modules.
"""
from __future__ import annotations

from typing import Sequence

import onnx
import torch

from vnnx.errors import UnsupportedOpError

#: Opset the fallback conversion upgrades old files to.
UPGRADE_OPSET = 13


def convert_model(model: onnx.ModelProto, label: str) -> tuple[torch.fx.GraphModule, onnx.ModelProto]:
    """``(module, converted_proto)``: onnx2torch's GraphModule (with ``onnx_mapping`` attached to
    every submodule) and the proto it was converted from (``model`` or its opset upgrade)."""
    module, converted = _convert(model, label)
    _repair_ceil_mode_maxpool(module, converted)
    return module, converted


def opset_version(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports."""
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            return int(o.version)
    return 1


def _convert(model: onnx.ModelProto, label: str) -> tuple[torch.nn.Module, onnx.ModelProto]:
    """onnx2torch, with one retry on an opset-upgraded copy when a converter is missing."""
    import onnx2torch
    from onnx import version_converter

    try:
        return onnx2torch.convert(model, attach_onnx_mapping=True), model
    except NotImplementedError as exc:
        first = exc
    except Exception as exc:
        raise UnsupportedOpError(f"{label}: onnx2torch cannot convert the model: {exc}") from exc
    # onnx2torch registers converters per opset version and lacks the oldest ones (opset 8
    # ACAS Xu: Flatten-1). Upgrading is only tried on failure because version_converter itself
    # fails on some current models (e.g. opset-14 Add).
    try:
        upgraded = version_converter.convert_version(model, max(UPGRADE_OPSET, opset_version(model)))
        return onnx2torch.convert(upgraded, attach_onnx_mapping=True), upgraded
    except Exception as exc:
        raise UnsupportedOpError(
            f"{label}: onnx2torch cannot convert the model ({first}), and upgrading it from opset "
            f"{opset_version(model)} to {UPGRADE_OPSET} failed: {exc}") from exc


class CeilModeMaxPool2d(torch.nn.Module):
    """ONNX MaxPool with asymmetric ``pads`` and ``ceil_mode=1``, with ONNX's output size.

    onnx2torch pads with -inf and then runs ``MaxPool2d(ceil_mode=True)`` on the padded tensor,
    so torch's rule "the last window starts inside the input or the left padding" sees the
    right padding as input and can keep one extra window per axis that ONNX (and onnxruntime)
    drop. This module runs the same two steps and crops to the ONNX size; it exports as the
    original single MaxPool node.
    """

    def __init__(self, pads: Sequence[int], kernel: Sequence[int], strides: Sequence[int]):
        super().__init__()
        self.pads = tuple(int(p) for p in pads)          # ONNX order: top, left, bottom, right
        self.kernel = tuple(int(k) for k in kernel)
        self.strides = tuple(int(s) for s in strides)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return _OnnxCeilMaxPool.apply(x, self.kernel, self.strides, self.pads)
        return _ceil_max_pool(x, self.kernel, self.strides, self.pads)


def _ceil_max_pool(x: torch.Tensor, kernel: tuple, strides: tuple, pads: tuple) -> torch.Tensor:
    top, left, bottom, right = pads
    y = torch.nn.functional.pad(x, (left, right, top, bottom), value=float("-inf"))
    y = torch.nn.functional.max_pool2d(y, kernel, strides, ceil_mode=True)
    sizes = [_onnx_pool_out(int(n), k, s, p0, p1)
             for n, k, s, p0, p1 in zip(x.shape[-2:], kernel, strides, pads[:2], pads[2:])]
    return y[..., :sizes[0], :sizes[1]]


class _OnnxCeilMaxPool(torch.autograd.Function):
    """Export hook: trace :class:`CeilModeMaxPool2d` as one ONNX MaxPool node."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kernel: tuple, strides: tuple, pads: tuple) -> torch.Tensor:  # noqa: ARG004
        return _ceil_max_pool(x, kernel, strides, pads)

    @staticmethod
    def symbolic(g, x, kernel: tuple, strides: tuple, pads: tuple):
        return g.op("MaxPool", x, kernel_shape_i=list(kernel), strides_i=list(strides),
                    pads_i=list(pads), ceil_mode_i=1)


def _onnx_pool_out(n: int, k: int, s: int, p0: int, p1: int) -> int:
    """ONNX pooling output length with ``ceil_mode=1`` (onnxruntime's rule)."""
    out = -(-(n + p0 + p1 - k) // s) + 1
    if (out - 1) * s >= n + p0:
        out -= 1
    return out


def _repair_ceil_mode_maxpool(module: torch.fx.GraphModule, converted: onnx.ModelProto) -> None:
    """Swap onnx2torch's padded ceil-mode MaxPools for :class:`CeilModeMaxPool2d` (in place)."""
    producer = {out: node for node in converted.graph.node for out in node.output}
    for node in module.graph.nodes:
        if node.op != "call_module":
            continue
        sub = module.get_submodule(node.target)
        mapping = getattr(sub, "onnx_mapping", None)
        proto = producer.get(mapping.outputs[0]) if mapping is not None and mapping.outputs else None
        if (proto is None or proto.op_type != "MaxPool" or not isinstance(sub, torch.nn.Sequential)
                or not any(isinstance(m, torch.nn.MaxPool2d) and m.ceil_mode for m in sub)):
            continue
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in proto.attribute}
        kernel = list(attrs["kernel_shape"])
        if len(kernel) != 2:
            continue
        repaired = CeilModeMaxPool2d(attrs.get("pads", [0] * 4), kernel,
                                     attrs.get("strides", [1] * len(kernel)))
        repaired.onnx_mapping = mapping
        module.add_submodule(node.target, repaired)
    module.recompile()
