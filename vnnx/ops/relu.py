"""ReLU ``y = max(x, 0)``.

Relaxation on an unstable entry ``lo < 0 < hi`` (CROWN, Zhang et al. 2018, §3.2): the upper
bound is the chord ``y <= hi (x - lo) / (hi - lo)``; the lower bound is ``y >= a x`` for any
slope ``a`` in [0, 1]: CROWN's adaptive choice (1 when ``hi >= -lo``, else 0), or optimised
(α-CROWN). Stable entries are exact. Split: ``x >= 0`` / ``x <= 0``. MILP: Tjeng et al. eq. 5.
"""
from __future__ import annotations

import torch

from vnnx.ops import onnx_builder
from vnnx.ops.base import Activation


class Relu(Activation):
    kind = "Relu"
    has_alpha = True
    splittable = True
    #: the lower slopes' range
    alpha_range = (0.0, 1.0)

    def function(self, x):
        return torch.relu(x)

    def negative_slope(self):
        return 0.0

    def relax(self, lo, hi, alpha=None):
        s = self.negative_slope()
        unstable = (lo < 0) & (hi > 0)
        dead = hi <= 0
        width = torch.where(unstable, hi - lo, torch.ones_like(lo))
        stable_slope = torch.where(dead, torch.full_like(lo, s), torch.ones_like(lo))
        chord = torch.where(unstable, (hi - s * lo) / width, stable_slope)
        up_b = torch.where(unstable, -(1 - s) * hi * lo / width, torch.zeros_like(lo))
        if alpha is None:
            low_w = torch.where(unstable, self.default_slope(lo, hi), chord)
            return low_w, None, chord, up_b
        u, c, b = unstable.unsqueeze(1), chord.unsqueeze(1), up_b.unsqueeze(1)
        low_w = torch.where(u, alpha, c)
        return low_w, None, c, b

    def needs_tight_input(self, lo, hi):
        return (lo < 0) & (hi > 0)

    def default_slope(self, lo, hi):
        """CROWN's adaptive lower slope of an unstable entry: 1 when ``hi >= -lo``, else the
        negative side's slope."""
        return torch.where(hi >= -lo, torch.ones_like(lo), torch.full_like(lo, self.negative_slope()))

    def alpha_init(self, lo, hi, rows):
        default = self.default_slope(lo, hi)
        return default.unsqueeze(1).expand((lo.shape[0], rows) + tuple(lo.shape[1:])).clone()

    def alpha_clamp(self, alpha):
        lo, hi = sorted((self.negative_slope(), 1.0))
        alpha.data.clamp_(lo, hi)

    def milp(self, builder, cols, bounds, out_bounds):
        return builder.relu(cols[0], bounds[0], self.negative_slope())


@onnx_builder("Relu")
def _relu(node, attrs, args, label):
    return Relu(), [args[0]]
