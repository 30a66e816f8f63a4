"""Bound stages: IBP / CROWN / α-CROWN of the verifier's bound engine
(:class:`vnnx.engine.GraphEngine`) on the open clauses' rows."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from vnnx.errors import VnnxError
from vnnx.stages import Outcome, Problem, Stage, clause_margins, intersect_bounds

# auto_LiRPA's α-CROWN re-derives every intermediate bound with gradients at each step: one
# step cost about 24 CROWN passes on a 4,804-ReLU CNN (measured 2026-11-23), and it takes
# BoundComputer.alpha_iterations steps. A budgeted α-CROWN (before the ReLU branch and bound,
# whose root is an α-CROWN of its own, ~1 s per clause there) is skipped if that estimate
# (ALPHA_STEP_CROWN_PASSES x steps x CROWN's time) exceeds half the time left, and otherwise
# stopped at half the time left, so that the branch and bound keeps the other half. (Before
# 2026-11-23 the estimate left out the number of steps: on the paper's MNIST CNN α-CROWN then
# took 144 of 150 s and the branch and bound, which needed 2 s per clause, timed out.)
ALPHA_STEP_CROWN_PASSES = 24


def refute_margin() -> float:
    from vnnx.verify import REFUTE_MARGIN

    return REFUTE_MARGIN


class BoundStage(Stage):
    """Bounds on the open clauses' rows over the whole box: a clause is refuted when some row's
    lower bound exceeds its right-hand side by ``REFUTE_MARGIN``; a clause whose every row has
    upper bound <= 0 holds everywhere, so the box centre or a corner is a witness.

    ``lenient``: a failing bound computation is logged and skipped (under 'auto') instead of
    raised. ``budgeted``: α-CROWN before the ReLU branch and bound (see
    :data:`ALPHA_STEP_CROWN_PASSES`)."""

    def __init__(self, method: str, lenient: bool = False, budgeted: bool = False) -> None:
        self.method = self.name = method
        self.lenient = lenient
        self.budgeted = budgeted

    def run(self, verifier, problem: Problem, deadline) -> Optional[Outcome]:
        bm, prop = self.method, problem.prop
        left = deadline.left()
        if (self.budgeted and problem.crown_seconds is not None and left is not None
                and verifier.can_split()):
            estimate = ALPHA_STEP_CROWN_PASSES * verifier.bound_engine().alpha_iterations * problem.crown_seconds
            if estimate > left / 2:
                problem.log(bm, f"skipped: CROWN took {problem.crown_seconds:.2f} s, so alpha-CROWN would take "
                                f"about {estimate:.0f} s of the {left:.0f} s left; the ReLU branch and bound "
                                "optimises its own alpha", time.monotonic())
                return None
            left = left / 2
        t0 = time.monotonic()
        sub = problem.open_rows()
        C = np.vstack([a for a, _ in sub])
        try:
            res = verifier.bound_engine().compute(prop.x_lower, prop.x_upper, bm, C,
                                                  deadline=None if left is None else time.monotonic() + left)
        except VnnxError as exc:
            if not self.lenient:
                raise
            problem.log(bm, f"failed: {exc}", t0)
            return None
        if bm == "crown":
            problem.crown_seconds = time.monotonic() - t0
        if bm == "crown" or (bm == "alpha-crown" and res.pre_activation):
            problem.pre_activation = intersect_bounds(problem.pre_activation, res.pre_activation)
        sub_margins = clause_margins(res.lower, sub)
        problem.margins.update(zip(problem.open_clauses, sub_margins))
        still = [i for i, m in zip(problem.open_clauses, sub_margins) if not m > refute_margin()]
        rhs = np.concatenate([b for _, b in sub])
        problem.open_clauses = still
        problem.log(bm, "unsat" if not still else f"{len(still)} clause(s) open", t0,
                    min_margin=float(np.min(res.lower - rhs)))
        if not still:
            return Outcome("unsat", bm)
        # Early exit: a clause whose every row has upper bound <= 0 on the whole box holds
        # everywhere, so every point is a counterexample; the centre and corners are checked
        # like any other witness.
        starts = np.cumsum([0] + [len(b) for _, b in sub])
        if any(np.all(res.upper[s0:s1] - rhs[s0:s1] <= 0) for s0, s1 in zip(starts[:-1], starts[1:])):
            t1 = time.monotonic()
            cex = verifier.first_witness(prop, box_points(prop))
            problem.log(f"{bm}-upper", "sat" if cex else "witness failed the onnxruntime check", t1)
            if cex is not None:
                return Outcome("sat", f"{bm}-upper", cex)
        return None


def box_points(prop) -> np.ndarray:
    """The centre of ``prop``'s box, then its lower and upper corners: (3, n_inputs)."""
    return np.stack([(prop.x_lower + prop.x_upper) / 2, prop.x_lower, prop.x_upper])
