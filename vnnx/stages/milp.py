"""The MILP stage: Tjeng et al.'s encoding (:mod:`vnnx.milp`) of the open clauses, big-M from
the pre-activation bounds the bound stages found, solved within the time left."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Optional

from vnnx.stages import Outcome, Problem, Stage


class MilpStage(Stage):
    name = "milp"

    def applies(self, verifier) -> Optional[str]:
        if not verifier.graph().is_piecewise_linear:
            return "network has non-piecewise-linear layers"
        return None

    def run(self, verifier, problem: Problem, deadline) -> Optional[Outcome]:
        from vnnx.milp import verify_milp

        t0 = time.monotonic()
        # CROWN's pre-activation bounds (when computed) are intersected with interval bounds
        # inside the encoding; both are sound, so big-M stays valid and gets smaller.
        sub_prop = replace(problem.prop, clauses=problem.open_rows())
        # The graph is encoded node by node (vnnx.graph_milp); the pre-activation bounds are
        # keyed by node alike.
        res = verify_milp(verifier.graph(), sub_prop, layer_bounds=problem.pre_activation or None,
                          time_limit=deadline.left(), backend=verifier.milp_backend)
        if res.status == "sat" and res.x is not None:
            cex = verifier.witness(problem.prop, res.x)
            if cex is not None:
                problem.log(self.name, "sat", t0, binaries=res.n_binaries)
                return Outcome("sat", self.name, cex)
            problem.log(self.name, "candidate failed the onnxruntime check", t0, binaries=res.n_binaries)
            return Outcome("unknown")
        problem.log(self.name, res.status, t0, binaries=res.n_binaries, message=res.message)
        if res.status == "unsat":
            problem.open_clauses = []
            return Outcome("unsat", self.name)
        return Outcome("timeout" if res.status == "timeout" else "unknown")
