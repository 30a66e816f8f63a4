"""Branch and bound on the input box, for networks with few inputs (ACAS Xu)."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from vnnx.stages import Outcome, Problem, Stage, device_batch

# Input splitting runs for networks with at most this many inputs (ACAS Xu has 5); this many open
# boxes are split per round (each round bounds up to four children per box), and it gives up
# beyond INPUT_SPLIT_MAX_BOXES open boxes.
INPUT_SPLIT_MAX_INPUTS = 16
INPUT_SPLIT_BATCH = 256
INPUT_SPLIT_MAX_BOXES = 200_000
# PGD (this many restarts and steps) searches the few boxes furthest from refuted, in the rounds
# that keep its share of the search's time under INPUT_SPLIT_ATTACK_SHARE.
INPUT_SPLIT_ATTACK_SHARE = 0.15
INPUT_SPLIT_ATTACK_BOXES = 4
INPUT_SPLIT_ATTACK_RESTARTS = 16
INPUT_SPLIT_ATTACK_STEPS = 30
# Besides its centre, this many uniform points of every box split in a round are tried: the open
# boxes concentrate where the property is nearest to failing, so these samples go there (a forward
# pass of 256 x 16 points costs a few ms, next to the round's CROWN bounds).
INPUT_SPLIT_SAMPLES = 16


class InputSplitStage(Stage):
    """Branch and bound on the input box. Every box is bounded with CROWN (many at a time); a
    clause is refuted on a box once one of its rows is (and stays refuted on the box's halves), and
    a box is closed once every clause is. The halves of a box cover it exactly, so 'unsat' means
    every clause is refuted on a cover of the box.

    Which dimension to halve: two candidates, and when they differ both splits are bounded and the
    one refuting more clauses on its halves (then with the larger worst margin) is kept (its halves
    are already bounded, so only the other pair is extra work):

    * the dimension of largest |CROWN's input coefficient| x width of the box's *target row*: the
      best row (largest lower-bound margin) of its worst open clause. A clause (a conjunction) is
      refuted by any one of its rows, so the row nearest to refutation is the one to push;
    * the dimension of largest |gradient| x width at the box centre of its least refuted row
      (the only rule before 2026-12-02).

    Neither wins everywhere. On ACAS Xu 1_1 the gradient rule needed 46,429 boxes on prop_2 (one
    clause of four rows) and did not close prop_5 in 116 s; the coefficient rule alone needed
    60,000+ boxes on prop_4, where the gradient needed 783, and never closed a two-network product
    query whose relation row only the gradient of the least refuted row splits
    (tests/test_product.py). Both together: prop_2 965 boxes, prop_3 6,455, prop_4 1,249, prop_5
    14,363 (9 s), and 217 on that query.

    Witnesses: each split box's centre and :data:`INPUT_SPLIT_SAMPLES` points in it are tried
    (seeded per search; half of them uniform, half on random faces), the boxes furthest from refuted are split first, and PGD searches
    the few boxes of a round whose centres come nearest to a violation (within
    :data:`INPUT_SPLIT_ATTACK_SHARE` of the time). ACAS Xu 1_9 prop_7's counterexamples lie on
    the box's faces: PGD from inside stops at a margin of 5e-4 (a local minimum; VNN-COMP's
    tolerance is 1e-4), 2 million uniform points over the whole box hit the region once, and
    starts on random faces (:func:`vnnx.attack.pgd_spec`, these samples) find it at once.

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

        if any(len(b) == 0 for _, b in clauses):     # a clause with no rows holds everywhere
            cex = verifier.witness(prop, (prop.x_lower + prop.x_upper) / 2)
            return ("sat", cex, 0) if cex is not None else ("gave up", None, 0)
        engine = verifier.bound_engine()
        boxes = _Boxes(engine, clauses)
        t_start, attack_time, attacks = time.monotonic(), 0.0, 0
        gen = torch.Generator().manual_seed(int(verifier.seed))
        width0 = np.maximum(prop.x_upper - prop.x_lower, 1e-12)
        open_ = boxes.bound(prop.x_lower[None].copy(), prop.x_upper[None].copy(),
                            np.zeros((1, len(clauses)), dtype=bool)).still_open()
        while open_.n:
            if deadline.expired():
                return "timeout", None, boxes.bounded
            if open_.n > self.max_boxes:
                return "gave up", None, boxes.bounded
            cur, open_ = open_.worst_first(device_batch(verifier, self.batch))
            lo, hi, n = cur.lo, cur.hi, cur.n
            rows = np.arange(n)
            target, least = cur.target_rows(), cur.least_refuted_rows()
            centre = (lo + hi) / 2
            xc = torch.as_tensor(centre).requires_grad_(True)
            with torch.enable_grad():
                y = engine.module(xc)
                (grad,) = torch.autograd.grad((y * torch.as_tensor(boxes.C[least])).sum(), xc)
            centre_margin = _centre_margin(y.detach().numpy(), clauses, cur.refuted)
            cex = _first_witness(verifier, prop, centre, centre_margin)
            if cex is None:
                cex = self._sample(verifier, prop, clauses, cur, gen)
            if cex is not None:
                return "sat", cex, boxes.bounded
            if attack_time <= INPUT_SPLIT_ATTACK_SHARE * (time.monotonic() - t_start):
                t_attack = time.monotonic()
                cex = self._attack(verifier, prop, clauses, cur, centre_margin, verifier.seed + attacks)
                attacks += INPUT_SPLIT_ATTACK_BOXES
                attack_time += time.monotonic() - t_attack
                if cex is not None:
                    return "sat", cex, boxes.bounded
            w = hi - lo
            tie = 1e-9 * w / width0          # never a zero-width dimension while others are left
            by_grad = (np.abs(grad.numpy()) * w + tie).argmax(1)
            by_coeff = (np.abs(cur.coeffs[rows, target]) * w + tie).argmax(1)
            cands = [by_grad] if np.array_equal(by_grad, by_coeff) else [by_grad, by_coeff]
            halves = [_halve(lo, hi, d) for d in cands]
            kids = boxes.bound(np.concatenate([h[0] for h in halves]), np.concatenate([h[1] for h in halves]),
                               np.concatenate([cur.refuted] * (2 * len(cands))))
            choice = np.zeros(n, dtype=np.int64)
            if len(cands) > 1:
                choice = np.stack([kids.split_score(2 * n * c, n) for c in range(len(cands))], 1).argmax(1)
            keep = np.concatenate([2 * n * choice + rows, 2 * n * choice + n + rows])
            open_ = open_.cat(kids.take(keep).still_open())
        return "unsat", None, boxes.bounded

    @staticmethod
    def _sample(verifier, prop, clauses, cur: "_BoxBatch", gen):
        """:data:`INPUT_SPLIT_SAMPLES` points of each box of ``cur`` (:func:`vnnx.attack.box_points`)
        through the network: a witness onnxruntime confirms among the (at most 8) nearest to
        violating an open clause, or None."""
        import torch

        from vnnx.attack import box_points

        k = INPUT_SPLIT_SAMPLES
        if k <= 0:
            return None
        pts = box_points(torch.as_tensor(cur.lo), torch.as_tensor(cur.hi), k, gen).reshape(cur.n * k, -1)
        with torch.no_grad():
            y = verifier.bound_engine().module(pts).numpy()
        margin = _centre_margin(y, clauses, np.repeat(cur.refuted, k, axis=0))
        return _first_witness(verifier, prop, pts.numpy(), margin, limit=8)

    @staticmethod
    def _attack(verifier, prop, clauses, cur: "_BoxBatch", centre_margin: np.ndarray, seed: int):
        """PGD inside the boxes whose centre comes nearest to violating an open clause (where a
        violation most likely is nearby), seeds ``seed``, ``seed + 1``, ...: a witness
        onnxruntime confirms, or None."""
        from vnnx.attack import pgd_spec

        worst = np.argsort(centre_margin)[:INPUT_SPLIT_ATTACK_BOXES]
        for k, i in enumerate(worst):
            res = pgd_spec(verifier.module(), cur.lo[i], cur.hi[i], clauses, restarts=INPUT_SPLIT_ATTACK_RESTARTS,
                           steps=INPUT_SPLIT_ATTACK_STEPS, seed=seed + k)
            if res.x is not None and res.margin <= verifier.witness_tol:
                cex = verifier.witness(prop, res.x)
                if cex is not None:
                    return cex
        return None


def _first_witness(verifier, prop, points: np.ndarray, margin: np.ndarray, limit: Optional[int] = None):
    """A witness onnxruntime confirms among ``points`` whose outputs violate an open clause
    (``margin <= 0``), nearest first, at most ``limit`` of them tried; or None."""
    for i in np.argsort(margin)[:limit]:
        if margin[i] > 0:
            break
        cex = verifier.witness(prop, points[i])
        if cex is not None:
            return cex
    return None


def _halve(lo: np.ndarray, hi: np.ndarray, d: np.ndarray):
    """The two halves of each box along its dimension ``d`` (B,): (lower halves then upper halves)."""
    rows = np.arange(lo.shape[0])
    mid = (lo[rows, d] + hi[rows, d]) / 2
    hi1, lo2 = hi.copy(), lo.copy()
    hi1[rows, d] = mid
    lo2[rows, d] = mid
    return np.concatenate([lo, lo2]), np.concatenate([hi1, hi])


class _Boxes:
    """Bounds batches of boxes for one property's clauses (``bounded`` counts them)."""

    def __init__(self, engine, clauses) -> None:
        self.engine = engine
        self.C = np.vstack([a for a, _ in clauses])
        self.rhs = np.concatenate([b for _, b in clauses])
        self.starts = np.cumsum([0] + [len(b) for _, b in clauses])
        self.bounded = 0

    def bound(self, lo: np.ndarray, hi: np.ndarray, refuted: np.ndarray) -> "_BoxBatch":
        from vnnx.verify import REFUTE_MARGIN

        info: dict = {}
        margin = self.engine.lower_bounds_batch(lo, hi, self.C, info=info) - self.rhs   # (B, rows)
        self.bounded += lo.shape[0]
        spans = list(zip(self.starts[:-1], self.starts[1:]))
        refuted = refuted | np.stack([(margin[:, s:e] > REFUTE_MARGIN).any(1) for s, e in spans], 1)
        best = np.stack([margin[:, s:e].max(1) for s, e in spans], 1)
        best_row = np.stack([s + margin[:, s:e].argmax(1) for s, e in spans], 1)
        coeffs = info.get("input")
        if coeffs is None:     # the spec does not depend on the input: no dimension matters
            coeffs = np.zeros((lo.shape[0], self.C.shape[0], lo.shape[1]))
        row_margin = np.where(np.repeat(refuted, np.diff(self.starts), axis=1), np.inf, margin)
        return _BoxBatch(lo, hi, refuted, np.where(refuted, np.inf, best), best_row, row_margin, coeffs)


class _BoxBatch:
    """Bounded boxes: ``refuted`` (B, clauses), ``clause_margin`` (B, clauses; inf where refuted),
    ``best_row`` (B, clauses) the row of largest margin per clause, ``row_margin`` (B, rows; inf
    in refuted clauses), ``coeffs`` (B, rows, n_in)."""

    FIELDS = ("lo", "hi", "refuted", "clause_margin", "best_row", "row_margin", "coeffs")

    def __init__(self, lo, hi, refuted, clause_margin, best_row, row_margin, coeffs) -> None:
        self.lo, self.hi, self.refuted = lo, hi, refuted
        self.clause_margin, self.best_row, self.row_margin, self.coeffs = clause_margin, best_row, row_margin, coeffs

    @property
    def n(self) -> int:
        return self.lo.shape[0]

    def take(self, idx) -> "_BoxBatch":
        return _BoxBatch(*(getattr(self, f)[idx] for f in self.FIELDS))

    def cat(self, other: "_BoxBatch") -> "_BoxBatch":
        return _BoxBatch(*(np.concatenate([getattr(self, f), getattr(other, f)]) for f in self.FIELDS))

    def worst_first(self, k: int):
        """(the ``k`` boxes whose worst open clause is furthest from refuted, the rest)."""
        if self.n <= k:
            return self, self.take(slice(0, 0))
        order = np.argpartition(self.clause_margin.min(1), k)
        return self.take(order[:k]), self.take(order[k:])

    def still_open(self) -> "_BoxBatch":
        return self.take(~self.refuted.all(1))

    def target_rows(self) -> np.ndarray:
        """(B,) the best row of each box's worst open clause."""
        worst = self.clause_margin.argmin(1)
        return self.best_row[np.arange(self.n), worst]

    def least_refuted_rows(self) -> np.ndarray:
        """(B,) each box's row of smallest margin among its open clauses' rows."""
        return self.row_margin.argmin(1)

    def split_score(self, start: int, n: int) -> np.ndarray:
        """(n,) how good the split whose halves are boxes ``start .. start + 2n`` is: clauses
        refuted on both halves first, then the worse half's worst open clause margin."""
        lower, upper = slice(start, start + n), slice(start + n, start + 2 * n)
        refuted = self.refuted[lower].sum(1) + self.refuted[upper].sum(1)
        worst = np.minimum(self.clause_margin[lower].min(1), self.clause_margin[upper].min(1))
        return refuted * 1e6 + np.clip(worst, -1e5, 1e5)


def _centre_margin(y: np.ndarray, clauses, refuted: np.ndarray) -> np.ndarray:
    """(B,) how far output ``y[i]`` is from the box's open clauses: the smallest, over clauses not
    refuted on box i, of the largest row of ``A y - b`` (<= 0: ``y`` violates the property)."""
    out = np.full(y.shape[0], np.inf)
    for j, (a, b) in enumerate(clauses):
        m = (y @ np.atleast_2d(a).T - b).max(1)
        out = np.where(refuted[:, j], out, np.minimum(out, m))
    return out
