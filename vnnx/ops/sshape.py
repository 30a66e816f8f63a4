"""The relaxation shared by S-shaped activations (Sigmoid, Tanh): two parallel lines.

On ``[lo, hi]`` both bounds take the chord's slope ``s``; their intercepts are the exact minimum
and maximum of ``f(x) - s x`` over the interval, which sit at an end point or where
``f'(x) = s`` (``f'`` is even and unimodal, so those points have a closed form,
:meth:`SShaped.tangent_points`). A small slack covers the rounding of ``f``.
"""
from __future__ import annotations

import torch

from vnnx.ops.base import Activation

# Each intercept is widened by this, relative to max(1, |f|): float64 evaluations of exp/tanh are
# accurate to a few ulps.
SLACK = 1e-12


class SShaped(Activation):
    piecewise_linear = False
    # The branch and bound splits an entry's range (:meth:`split_point`); each side's lines are
    # recomputed on its narrower interval, so the gap between them shrinks (about as the square
    # of the width, where f is smooth).
    splittable = True
    split_min_width = 1e-3

    def split_point(self, lo, hi):
        """Of the inflection point 0 (when inside) and the points at 1/4, 1/2 and 3/4 of
        ``[lo, hi]``, the one whose worse side has the smallest gap between the relaxation's
        lines (:meth:`gap`). Measured on 2-input nets, the midpoint alone closed more trees than
        0 alone; neither wins everywhere (tests/test_sigmoid_bab.py, tools/bench_sigmoid.py)."""
        width = hi - lo
        cands = [lo + f * width for f in (0.5, 0.25, 0.75)]
        cands.append(torch.where((lo < 0) & (hi > 0), torch.zeros_like(lo), lo + 0.5 * width))
        best, best_gap = cands[0], None
        for t in cands:
            g = torch.maximum(self.gap(lo, t), self.gap(t, hi))
            if best_gap is None:
                best_gap = g
                continue
            better = g < best_gap
            best, best_gap = torch.where(better, t, best), torch.where(better, g, best_gap)
        return best

    def gap(self, lo, hi):
        """The vertical distance between the two parallel lines of :meth:`relax` on [lo, hi]."""
        _, low_b, _, up_b = self.relax(lo, hi)
        return up_b - low_b

    def derivative(self, x):
        raise NotImplementedError

    def tangent_points(self, s):
        """The x with ``f'(x) = s``, as (x_neg, x_pos) (NaN where there is none)."""
        raise NotImplementedError

    def relax(self, lo, hi, alpha=None):
        f = self.function
        width = hi - lo
        narrow = width <= 1e-9
        mid = (lo + hi) / 2
        s = torch.where(narrow, self.derivative(mid), (f(hi) - f(lo)) / torch.where(narrow, torch.ones_like(width), width))
        s = s.clamp(min=0)
        cand = [lo, hi]
        for t in self.tangent_points(s):
            inside = (t > lo) & (t < hi)
            cand.append(torch.where(inside, t, lo))
        vals = torch.stack([f(c) - s * c for c in cand])
        low_b, up_b = vals.min(0).values, vals.max(0).values
        slack = SLACK * (1 + vals.abs().max(0).values) + SLACK * s * (lo.abs() + hi.abs())
        return s, low_b - slack, s, up_b + slack
