"""The verification stages, and the table of stages each ``--method`` runs.

A stage is a small object with one entry point, ``run(verifier, problem, deadline)``: it works on
one property (an input box and its clauses), may close clauses, and returns an :class:`Outcome`
that ends the property (``sat`` with a confirmed witness, ``unsat``, ``timeout``, ``unknown``) or
``None`` to hand the still-open clauses to the next stage. ``applies(verifier)`` says whether the
stage fits the network at all (``None``) or why not; :data:`METHOD_STAGES` is the table that
``vnnx.verify.Verifier`` walks, so a method is a list of stages, not a branch of an if-chain.

Soundness contract (docs: ../shared/DESIGN.md, "Soundness rules"): a stage returns ``unsat`` only
when its own bound, computed on the whole box, refutes every open clause (or an optimal MILP
does), and ``sat`` only with a witness that :meth:`vnnx.verify.Verifier.witness` confirmed.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np


@dataclass
class Outcome:
    """How a stage ended the property: ``verdict`` 'sat' | 'unsat' | 'timeout' | 'unknown'."""

    verdict: str
    by: str = ""
    counterexample: object = None


@dataclass
class Problem:
    """One property under verification, and what the stages so far learnt about it.

    ``open_clauses``: indices into ``clauses`` not yet refuted; ``margins[i]``: the best lower
    bound of clause i's most refuted row (> 0: refuted); ``pre_activation``: sound bounds per
    network layer index, intersected over the stages that computed them; ``crown_seconds``: what
    CROWN cost on this property (the α-CROWN budget is estimated from it)."""

    prop: object
    method: str
    log: Callable[..., None]
    clauses: list = field(default_factory=list)
    open_clauses: list = field(default_factory=list)
    margins: dict = field(default_factory=dict)
    pre_activation: Optional[dict] = None
    crown_seconds: Optional[float] = None

    def open_rows(self) -> list:
        return [self.clauses[i] for i in self.open_clauses]


class Stage:
    """Base class: ``name`` is what the per-stage log shows."""

    name = "stage"
    # Under 'auto' a stage that does not fit the network is left out silently; a method that
    # names the stage logs why it was skipped and ends 'unknown'.
    optional = False

    def applies(self, verifier) -> Optional[str]:
        """None when the stage fits the verifier's network, else why not."""
        return None

    def run(self, verifier, problem: Problem, deadline) -> Optional[Outcome]:
        raise NotImplementedError


def _table() -> dict[str, Sequence[Stage]]:
    from vnnx.stages.attack import AttackStage, TrivialStage
    from vnnx.stages.bound import BoundStage
    from vnnx.stages.input_split import InputSplitStage
    from vnnx.stages.milp import MilpStage
    from vnnx.stages.relu_bab import ReluBabStage

    trivial = TrivialStage()
    return {
        # PGD, CROWN, α-CROWN (budgeted when the ReLU branch and bound follows), input splitting
        # on few inputs, ReLU branch and bound, then the MILP.
        "auto": (trivial, AttackStage(), BoundStage("crown", lenient=True),
                 BoundStage("alpha-crown", lenient=True, budgeted=True),
                 InputSplitStage(optional=True), ReluBabStage(optional=True), MilpStage()),
        "pgd": (trivial, AttackStage()),
        "ibp": (trivial, BoundStage("ibp")),
        "crown": (trivial, BoundStage("crown")),
        "alpha-crown": (trivial, BoundStage("alpha-crown")),
        "input-split": (trivial, BoundStage("crown"), InputSplitStage()),
        "bab": (trivial, BoundStage("crown"), BoundStage("alpha-crown", budgeted=True), ReluBabStage()),
        "milp": (trivial, BoundStage("crown"), MilpStage()),
    }


_METHOD_STAGES: Optional[dict] = None


def method_stages(method: str) -> Sequence[Stage]:
    """The stages ``method`` runs, in order (:data:`vnnx.verify.METHODS`)."""
    global _METHOD_STAGES
    if _METHOD_STAGES is None:
        _METHOD_STAGES = _table()
    return _METHOD_STAGES[method]


def run_stages(verifier, problem: Problem, stages: Sequence[Stage], deadline) -> Outcome:
    """Walk ``stages`` on one property until one of them ends it; 'unknown' if none does."""
    for k, stage in enumerate(stages):
        why = stage.applies(verifier)
        if why is not None:
            if stage.optional:
                continue
            problem.log(stage.name, f"skipped: {why}", time.monotonic())
            return Outcome("unknown")
        if k > 0 and deadline.expired():
            return Outcome("timeout")
        outcome = stage.run(verifier, problem, deadline)
        if outcome is not None:
            return outcome
        if not problem.open_clauses:   # a stage closed the last clause without saying so
            return Outcome("unsat", stage.name)
    return Outcome("unknown")


#: Batches of boxes or domains on a GPU are this many times the CPU's (the stages' sizes are
#: tuned on 2 CPU cores, where a batch of 256 keeps each pass in cache; a GPU wants thousands).
GPU_BATCH_FACTOR = 16


def device_batch(verifier, cpu_batch: int) -> int:
    """A stage's batch on the verifier's device: ``cpu_batch`` on the CPU, GPU_BATCH_FACTOR
    times it on a CUDA device."""
    device = str(getattr(verifier, "device", "cpu"))
    return cpu_batch * GPU_BATCH_FACTOR if device.startswith("cuda") else cpu_batch


def clause_margins(lower: np.ndarray, clauses) -> list[float]:
    """For stacked rows of all clauses (in order), each clause's best row ``lower(a y) - b``
    (positive: that row can never hold; -inf for a clause without rows, which always holds)."""
    out, r = [], 0
    for a, b in clauses:
        k = len(b)
        out.append(float(np.max(lower[r:r + k] - b)) if k else -np.inf)
        r += k
    return out


def intersect_bounds(old: Optional[dict], new: dict) -> dict:
    """Two sound sets of pre-activation bounds, intersected per layer."""
    if not old:
        return dict(new)
    out = dict(old)
    for k, (lo, hi) in new.items():
        if k in out:
            lo2, hi2 = np.maximum(out[k][0], lo), np.minimum(out[k][1], hi)
            # Both are sound, so they overlap in exact arithmetic; where round-off makes them
            # cross, keep the span between the two ends (it holds the true value) rather than an
            # empty interval (an infeasible MILP would read as 'unsat').
            out[k] = (np.minimum(lo2, hi2), np.maximum(lo2, hi2))
        else:
            out[k] = (lo, hi)
    return out
