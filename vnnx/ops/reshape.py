"""Reshape, Flatten, Squeeze and Unsqueeze: the same numbers in C order, a new shape."""
from __future__ import annotations

import math

import numpy as np

from vnnx.errors import UnsupportedOpError
from vnnx.ops import Var, onnx_builder
from vnnx.ops.base import LinearOperator


class Reshape(LinearOperator):
    kind = "Reshape"
    has_constant = False
    #: each output entry is one input entry (a box stays a box)
    permutes = True

    def __init__(self, shape) -> None:
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x):
        return x.reshape((x.shape[0],) + self.shape)

    linear_part = abs_linear_part = forward

    def transpose(self, A):
        return [A.reshape(tuple(A.shape[:2]) + tuple(self.in_shapes[0]))]

    def index_map(self):
        """The flat input index of each flat output entry (MILP columns are reused)."""
        import numpy as np

        return np.arange(int(np.prod(self.shape)))

    def describe(self):
        return f"Reshape {self.shape}"


def _onnx_reshape_target(shape, target, allowzero, where):
    out = []
    for i, t in enumerate(int(v) for v in target):
        out.append(shape[i] if (t == 0 and not allowzero) else t)
    if out.count(-1) > 1:
        raise UnsupportedOpError(f"{where}: more than one -1 in the target shape")
    if -1 in out:
        known = math.prod(v for v in out if v != -1)
        out[out.index(-1)] = math.prod(shape) // max(known, 1)
    if math.prod(out) != math.prod(shape):
        raise UnsupportedOpError(f"{where}: cannot reshape {tuple(shape)} to {tuple(out)}")
    return tuple(out)


@onnx_builder("Reshape")
def _reshape(node, attrs, args, label):
    x, target = args[0], args[1]
    if isinstance(target, Var):
        raise UnsupportedOpError(f"{label}: Reshape node '{node.name}' has a shape computed from the input")
    shape = _onnx_reshape_target(x.shape, np.asarray(target).reshape(-1), attrs.get("allowzero", 0),
                                 f"{label}: Reshape node '{node.name}'")
    return Reshape(shape), [x]


@onnx_builder("Flatten")
def _flatten(node, attrs, args, label):
    x = args[0]
    axis = int(attrs.get("axis", 1))
    axis = axis + len(x.shape) if axis < 0 else axis
    return Reshape((math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))), [x]


def _axes(node, attrs, args, label):
    axes = attrs.get("axes")
    if axes is None and len(args) > 1:
        if isinstance(args[1], Var):
            raise UnsupportedOpError(f"{label}: {node.op_type} node '{node.name}' has axes computed from the input")
        axes = np.asarray(args[1]).reshape(-1).tolist()
    return axes


@onnx_builder("Squeeze")
def _squeeze(node, attrs, args, label):
    x = args[0]
    axes = _axes(node, attrs, args, label)
    rank = len(x.shape)
    axes = [i for i, s in enumerate(x.shape) if s == 1] if axes is None else [a + rank if a < 0 else a for a in axes]
    return Reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes)), [x]


@onnx_builder("Unsqueeze")
def _unsqueeze(node, attrs, args, label):
    x = args[0]
    axes = _axes(node, attrs, args, label)
    rank = len(x.shape) + len(axes)
    axes = sorted(a + rank if a < 0 else a for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return Reshape(tuple(shape)), [x]
