"""Branch and bound on the input box, for networks with few inputs (ACAS Xu)."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from vnnx.stages import Outcome, Problem, Stage

# Input splitting runs for networks with at most this many inputs (ACAS Xu has 5); boxes are
# bounded this many at a time, and it gives up beyond INPUT_SPLIT_MAX_BOXES open boxes.
INPUT_SPLIT_MAX_INPUTS = 16
INPUT_SPLIT_BATCH = 512
INPUT_SPLIT_MAX_BOXES = 200_000


class InputSplitStage(Stage):
    """Sub-boxes are bounded with CROWN, ``batch`` at a time; a box is closed once every clause
    is refuted on it (a clause refuted on a box stays refuted on its halves). An open box is
    halved along the input with the largest |gradient of its least-refuted row| x width at its
    centre, and its centre is tried as a witness. The halves of a box cover it exactly, so
    'unsat' means every clause is refuted on a cover of the box.

    Under 'auto' (``optional``) a search that gives up hands the property on; alone, it ends the
    property 'unknown' (or 'timeout')."""

    name = "input-split"

    def __init__(self, optional: bool = False, batch: int = INPUT_SPLIT_BATCH,
                 max_boxes: int = INPUT_SPLIT_MAX_BOXES) -> None:
        self.optional = optional
        self.batch = batch
        self.max_boxes = max_boxes

    def applies(self, verifier) -> Optional[str]:
        if verifier.n_inputs > INPUT_SPLIT_MAX_INPUTS:
            return f"more than {INPUT_SPLIT_MAX_INPUTS} inputs"
        return None

    def run(self, verifier, problem: Problem, deadline) -> Optional[Outcome]:
        t0 = time.monotonic()
        outcome, cex, n_boxes = self.search(verifier, problem.prop, problem.open_rows(), deadline)
        problem.log(self.name, outcome, t0, boxes=n_boxes)
        if outcome == "sat":
            return Outcome("sat", self.name, cex)
        if outcome == "unsat":
            problem.open_clauses = []
            return Outcome("unsat", self.name)
        if not self.optional:
            return Outcome("timeout" if outcome == "timeout" else "unknown")
        return None

    def search(self, verifier, prop, clauses, deadline):
        """Returns ``(outcome, counterexample, boxes bounded)``, outcome 'sat' | 'unsat' |
        'timeout' | 'gave up' (more than ``max_boxes`` open boxes)."""
        import torch

        from vnnx.verify import REFUTE_MARGIN

        engine = verifier.bound_engine()
        C = np.vstack([a for a, _ in clauses])
        rhs = np.concatenate([b for _, b in clauses])
        starts = np.cumsum([0] + [len(b) for _, b in clauses])
        width0 = np.maximum(prop.x_upper - prop.x_lower, 1e-12)
        boxes_lo, boxes_hi = prop.x_lower[None].copy(), prop.x_upper[None].copy()
        refuted = np.zeros((1, len(clauses)), dtype=bool)
        bounded = 0
        batch = self.batch
        while boxes_lo.shape[0]:
            if deadline.expired():
                return "timeout", None, bounded
            if boxes_lo.shape[0] > self.max_boxes:
                return "gave up", None, bounded
            lo, hi, ref = boxes_lo[:batch], boxes_hi[:batch], refuted[:batch]
            rest = (boxes_lo[batch:], boxes_hi[batch:], refuted[batch:])
            margin = engine.lower_bounds_batch(lo, hi, C) - rhs            # (B, rows)
            bounded += lo.shape[0]
            row_refuted = margin > REFUTE_MARGIN
            ref = ref | np.stack([row_refuted[:, s:e].any(1) for s, e in zip(starts[:-1], starts[1:])], 1)
            open_ = ~ref.all(1)
            lo, hi, ref, margin = lo[open_], hi[open_], ref[open_], margin[open_]
            if lo.shape[0]:
                centre = (lo + hi) / 2
                xc = torch.as_tensor(centre).requires_grad_(True)
                with torch.enable_grad():
                    y = engine.module(xc)
                    # Per box, the output row least refuted among its open clauses steers the split.
                    masked = np.where(np.repeat(ref, np.diff(starts), axis=1), np.inf, margin)
                    worst = masked.argmin(1)
                    obj = (y * torch.as_tensor(C[worst])).sum()
                    (grad,) = torch.autograd.grad(obj, xc)
                yc = y.detach().numpy()
                for i in np.flatnonzero(_violating(yc, clauses, ref)):
                    cex = verifier.witness(prop, centre[i])
                    if cex is not None:
                        return "sat", cex, bounded
                w = hi - lo
                score = np.abs(grad.numpy()) * w + 1e-9 * w / width0
                d = score.argmax(1)
                rows = np.arange(lo.shape[0])
                mid = centre[rows, d]
                lo2, hi1 = lo.copy(), hi.copy()
                hi1[rows, d] = mid
                lo2[rows, d] = mid
                new_lo, new_hi, new_ref = np.concatenate([lo, lo2]), np.concatenate([hi1, hi]), np.concatenate([ref, ref])
            else:
                new_lo, new_hi, new_ref = lo, hi, ref
            boxes_lo = np.concatenate([rest[0], new_lo])
            boxes_hi = np.concatenate([rest[1], new_hi])
            refuted = np.concatenate([rest[2], new_ref])
        return "unsat", None, bounded


def _violating(y: np.ndarray, clauses, refuted: np.ndarray) -> np.ndarray:
    """(B,) whether output ``y[i]`` satisfies some clause not yet refuted on box i."""
    hit = np.zeros(y.shape[0], dtype=bool)
    for j, (a, b) in enumerate(clauses):
        hit |= ~refuted[:, j] & np.all(y @ np.atleast_2d(a).T <= b, axis=1)
    return hit
