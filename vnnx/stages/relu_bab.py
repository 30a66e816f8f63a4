"""Activation-splitting branch and bound on each open clause (:mod:`vnnx.graph_bab` on the bound
graph: every network the graph engine bounds, residual nets and MaxPool included; ReLU split at 0,
Sigmoid / Tanh split at their operator's split point and closed by bounds alone)."""
from __future__ import annotations

import time
from typing import Optional

from vnnx.stages import Outcome, Problem, Stage, device_batch

# Domains bounded at once, α/β iterations per batch, and the number of open domains at which the
# search gives up (and the MILP takes over).
RELU_BAB_BATCH = 256
RELU_BAB_ITERATIONS = 20
RELU_BAB_MAX_DOMAINS = 100_000
# On a graph with MaxPool, under 'auto', the search gets this share of the time left and the
# MILP the rest: on small MaxPool CNNs near their exact maximum the MILP decides in seconds where
# the search (complete there, but with a split per window step) needed minutes
# (tests/test_verify.py's seeds 1 and 5).
RELU_BAB_SHARE_MAXPOOL = 0.1


class ReluBabStage(Stage):
    """Every open clause is probed first (root bound plus the box corners it points at: cheap,
    and it finds witnesses PGD missed before any time goes into a deep tree), then searched,
    the nearest-to-refuted first. Only a fully closed tree refutes a clause.

    Under 'auto' (``optional``) clauses it gives up on go to the MILP; alone, the property ends
    'unknown'. On a graph with MaxPool the search runs on the graph with each MaxPool written as
    ReLUs (:meth:`vnnx.verify.Verifier.bab_engine`), whose splits decide the max; under 'auto' it
    then stops at :data:`RELU_BAB_SHARE_MAXPOOL` of the time left and its open clauses go to the
    MILP."""

    name = "relu-bab"

    def __init__(self, optional: bool = False) -> None:
        self.optional = optional

    def applies(self, verifier) -> Optional[str]:
        return None if verifier.can_split() else "network has no activation to split (ReLU, Sigmoid, Tanh)"

    @staticmethod
    def _searcher(verifier, prop, clause, check):
        from vnnx.graph_bab import GraphBab
        from vnnx.verify import REFUTE_MARGIN

        a, b = clause
        return GraphBab(verifier.bab_engine()[0], prop.x_lower, prop.x_upper, a, b, margin=REFUTE_MARGIN,
                        batch=device_batch(verifier, RELU_BAB_BATCH), iterations=RELU_BAB_ITERATIONS, max_domains=RELU_BAB_MAX_DOMAINS,
                        check=check)

    def run(self, verifier, problem: Problem, deadline) -> Optional[Outcome]:
        prop, found = problem.prop, {}
        layer_bounds = problem.pre_activation
        left_of, share = deadline.left, False
        if verifier.bab_engine()[1] is not None:
            # The search's graph numbers its nodes differently: carry the bounds over by the map
            # (a node and its image compute the same values, so they share sound bounds).
            node_map = verifier.bab_engine()[1]
            layer_bounds = {node_map[k]: v for k, v in (layer_bounds or {}).items() if k in node_map}
            if self.optional and deadline.left() is not None:
                stop, share = time.monotonic() + RELU_BAB_SHARE_MAXPOOL * deadline.left(), True
                left_of = lambda: max(0.0, stop - time.monotonic())  # noqa: E731

        def check(x):
            cex = verifier.witness(prop, x)
            if cex is not None:
                found["cex"] = cex
            return cex is not None

        babs = {}
        for i in problem.open_clauses:
            if deadline.expired():
                return Outcome("timeout")
            t0 = time.monotonic()
            babs[i] = self._searcher(verifier, prop, problem.clauses[i], check)
            left = deadline.left()
            problem.margins[i] = babs[i].probe(layer_bounds,
                                               None if left is None else time.monotonic() + left)
            if babs[i].counterexample is not None and "cex" in found:
                problem.log(self.name, "sat", t0, clause=i, domains=1)
                return Outcome("sat", self.name, found["cex"])
        still_open = []
        for i in sorted(problem.open_clauses, key=lambda j: -problem.margins[j]):
            if deadline.expired():
                return Outcome("timeout")
            t0 = time.monotonic()
            left = left_of()
            res = babs[i].run(layer_bounds, None if left is None else time.monotonic() + left)
            problem.log(self.name, res.status, t0, clause=i, domains=res.domains, max_open=res.max_open,
                        **({"message": res.message} if res.message else {}))
            if res.status == "sat" and "cex" in found:
                return Outcome("sat", self.name, found["cex"])
            if res.status == "timeout" and not share:
                return Outcome("timeout")
            if res.status != "unsat":
                still_open.append(i)
        problem.open_clauses = still_open
        if not still_open:
            return Outcome("unsat", self.name)
        return None if self.optional else Outcome("unknown")
