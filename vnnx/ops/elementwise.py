"""Add, Sub, Mul and Div of a network tensor and a constant: ``y = x * scale + shift``
(``c - x`` is ``scale = -1``; ``x / c`` is ``scale = 1 / c``). Sums of two network tensors are
:mod:`vnnx.ops.add`; products of two are not affine and are refused."""
from __future__ import annotations

import numpy as np

from vnnx.errors import UnsupportedOpError
from vnnx.ops import Var, onnx_builder
from vnnx.ops.add import add_builder
from vnnx.ops.batchnorm import ChannelAffine


class ScaleShift(ChannelAffine):
    kind = "ScaleShift"

    def describe(self):
        return "ScaleShift"


@onnx_builder("Add", "Sub", "Mul", "Div")
def _elementwise(node, attrs, args, label):
    a, b = args
    op = node.op_type
    if isinstance(a, Var) and isinstance(b, Var):
        if op in ("Add", "Sub"):
            return add_builder(node, a, b, label)
        raise UnsupportedOpError(f"{label}: {op} node '{node.name}' multiplies two network tensors; "
                                 "vnnx handles products with constants only")
    x, c = (a, np.asarray(b, dtype=np.float64)) if isinstance(a, Var) else (b, np.asarray(a, dtype=np.float64))
    x_first = isinstance(a, Var)
    if c.ndim > len(x.shape):
        raise UnsupportedOpError(f"{label}: {op} node '{node.name}': constant of shape {c.shape} "
                                 f"broadcasts the tensor of shape {x.shape}")
    one, zero = np.ones_like(c), np.zeros_like(c)
    if op == "Add":
        scale, shift = one, c
    elif op == "Sub":
        scale, shift = (one, -c) if x_first else (-one, c)
    elif op == "Mul":
        scale, shift = c, zero
    else:
        if not x_first:
            raise UnsupportedOpError(f"{label}: Div node '{node.name}' divides by a network tensor")
        if np.any(c == 0):
            raise UnsupportedOpError(f"{label}: Div node '{node.name}' divides by zero")
        scale, shift = 1.0 / c, zero
    if np.broadcast_shapes(np.shape(scale), tuple(x.shape)) != tuple(x.shape):
        raise UnsupportedOpError(f"{label}: {op} node '{node.name}': constant of shape {c.shape} "
                                 f"broadcasts the tensor of shape {x.shape}")
    return ScaleShift(scale, shift), [x]
