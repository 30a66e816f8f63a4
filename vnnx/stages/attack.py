"""Stages that look for a witness: the box centre of a clause that always holds, and PGD."""
from __future__ import annotations

import time
from typing import Optional

from vnnx.stages import Outcome, Problem, Stage


class TrivialStage(Stage):
    """A clause without rows holds for every output: every input in the box violates the
    property, and the box centre is a witness (confirmed like any other)."""

    name = "trivial"

    def run(self, verifier, problem: Problem, deadline) -> Optional[Outcome]:
        if problem.clauses and all(len(b) for _, b in problem.clauses):
            return None
        prop = problem.prop
        t0 = time.monotonic()
        cex = verifier.witness(prop, (prop.x_lower + prop.x_upper) / 2)
        problem.log(self.name, "sat" if cex else "centre failed the onnxruntime check", t0)
        return Outcome("sat", self.name, cex) if cex else Outcome("unknown")


class AttackStage(Stage):
    """PGD (:func:`vnnx.attack.pgd_spec`) aimed at the unsafe region, with a tenth of the time
    left (at least 1 s); a candidate counts only once onnxruntime confirms it."""

    name = "pgd"

    def run(self, verifier, problem: Problem, deadline) -> Optional[Outcome]:
        from vnnx.attack import pgd_spec

        prop = problem.prop
        t0 = time.monotonic()
        left = deadline.left()
        res = pgd_spec(verifier.module(), prop.x_lower, prop.x_upper, problem.clauses, seed=verifier.seed,
                       time_limit=None if left is None else min(left, max(1.0, 0.1 * left)))
        if res.x is not None and res.margin <= verifier.witness_tol:
            cex = verifier.witness(prop, res.x)
            if cex is not None:
                problem.log(self.name, "sat", t0, margin=res.margin)
                return Outcome("sat", self.name, cex)
        problem.log(self.name, "no counterexample", t0, margin=res.margin)
        return None
