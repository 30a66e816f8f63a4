"""Tanh: parallel-line relaxation (:mod:`vnnx.ops.sshape`); no MILP encoding."""
from __future__ import annotations

import torch

from vnnx.ops import onnx_builder
from vnnx.ops.sshape import SShaped


class Tanh(SShaped):
    kind = "Tanh"

    def function(self, x):
        return torch.tanh(x)

    def derivative(self, x):
        return 1 - torch.tanh(x) ** 2

    def tangent_points(self, s):
        # tanh' = 1 - t^2 = s  <=>  t = ±sqrt(1 - s), x = atanh(t)
        ok = (s > 0) & (s < 1)
        t = torch.sqrt((1 - s).clamp(min=0))
        nan = torch.full_like(s, float("nan"))
        return (torch.where(ok, -torch.atanh(t), nan), torch.where(ok, torch.atanh(t), nan))


@onnx_builder("Tanh")
def _tanh(node, attrs, args, label):
    return Tanh(), [args[0]]
