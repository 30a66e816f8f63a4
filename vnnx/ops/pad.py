"""Pad in constant mode: ``value`` around the tensor (zero by default)."""
from __future__ import annotations

import numpy as np
import torch.nn.functional as F

from vnnx.errors import UnsupportedOpError
from vnnx.ops import Var, onnx_builder
from vnnx.ops.base import LinearOperator


class Pad(LinearOperator):
    """``pads``: ONNX order (begin of every axis, then end of every axis), all >= 0."""

    kind = "Pad"

    def __init__(self, pads, value: float = 0.0) -> None:
        self.pads = tuple(int(p) for p in pads)
        self.value = float(value)

    def _torch_pads(self):
        n = len(self.pads) // 2
        out = []
        for axis in reversed(range(n)):
            out += [self.pads[axis], self.pads[axis + n]]
        return out

    def forward(self, x):
        return F.pad(x, self._torch_pads(), value=self.value)

    def linear_part(self, x):
        return F.pad(x, self._torch_pads())

    abs_linear_part = linear_part

    def transpose(self, A):
        n = len(self.pads) // 2
        index = tuple(slice(self.pads[a], self.pads[a] + self.in_shapes[0][a]) for a in range(n))
        return [A[(slice(None), slice(None)) + index]]


@onnx_builder("Pad")
def _pad(node, attrs, args, label):
    x = args[0]
    mode = attrs.get("mode", b"constant")
    if mode not in (b"constant", "constant"):
        raise UnsupportedOpError(f"{label}: Pad node '{node.name}' in mode {mode!r}; vnnx handles constant padding")
    pads = attrs.get("pads")
    if pads is None:
        if len(args) < 2 or isinstance(args[1], Var):
            raise UnsupportedOpError(f"{label}: Pad node '{node.name}' needs constant pads")
        pads = np.asarray(args[1]).reshape(-1).tolist()
    value = attrs.get("value", 0.0)
    if len(args) > 2 and args[2] is not None and np.size(args[2]):
        if isinstance(args[2], Var):
            raise UnsupportedOpError(f"{label}: Pad node '{node.name}' pads with a network value")
        value = float(np.asarray(args[2]).reshape(-1)[0])
    if len(args) > 3 and args[3] is not None:
        raise UnsupportedOpError(f"{label}: Pad node '{node.name}' with an axes input is not supported")
    if any(p < 0 for p in pads) or len(pads) != 2 * len(x.shape):
        raise UnsupportedOpError(f"{label}: Pad node '{node.name}': pads {pads} are negative or do not match "
                                 f"rank {len(x.shape)}")
    return Pad(pads, value), [x]
