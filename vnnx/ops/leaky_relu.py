"""LeakyReLU ``y = x`` for ``x >= 0``, ``slope * x`` otherwise (ONNX ``alpha``, 0 <= slope <= 1).

Convex like ReLU, so the same relaxation with the negative side's slope: the chord above, any
lower slope in [slope, 1] below (optimisable). MILP: ReLU's encoding of ``x - slope x`` shifted
(:meth:`vnnx.graph_milp.Builder.relu`)."""
from __future__ import annotations

import torch

from vnnx.errors import UnsupportedOpError
from vnnx.ops import onnx_builder
from vnnx.ops.relu import Relu


class LeakyRelu(Relu):
    kind = "LeakyRelu"

    def __init__(self, slope: float) -> None:
        self.slope = float(slope)

    def function(self, x):
        return torch.where(x >= 0, x, self.slope * x)

    def negative_slope(self):
        return self.slope

    def describe(self):
        return f"LeakyRelu {self.slope:g}"


@onnx_builder("LeakyRelu")
def _leaky_relu(node, attrs, args, label):
    slope = float(attrs.get("alpha", 0.01))
    if not 0.0 <= slope <= 1.0:
        raise UnsupportedOpError(f"{label}: LeakyRelu node '{node.name}' has slope {slope:g}; vnnx handles "
                                 "slopes in [0, 1] (convex)")
    return LeakyRelu(slope), [args[0]]
