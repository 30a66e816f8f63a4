"""Sigmoid ``1 / (1 + e^-x)``: parallel-line relaxation (:mod:`vnnx.ops.sshape`); not
piecewise linear, so no MILP encoding."""
from __future__ import annotations

import torch

from vnnx.ops import onnx_builder
from vnnx.ops.sshape import SShaped


class Sigmoid(SShaped):
    kind = "Sigmoid"

    def function(self, x):
        return torch.sigmoid(x)

    def derivative(self, x):
        p = torch.sigmoid(x)
        return p * (1 - p)

    def tangent_points(self, s):
        # sigma' = p (1 - p) = s  <=>  p = (1 ± sqrt(1 - 4 s)) / 2, x = logit(p)
        root = torch.sqrt((1 - 4 * s).clamp(min=0))
        p_hi, p_lo = (1 + root) / 2, (1 - root) / 2
        ok = (s > 0) & (s < 0.25)
        nan = torch.full_like(s, float("nan"))
        return (torch.where(ok, torch.logit(p_lo), nan), torch.where(ok, torch.logit(p_hi), nan))


@onnx_builder("Sigmoid")
def _sigmoid(node, attrs, args, label):
    return Sigmoid(), [args[0]]
