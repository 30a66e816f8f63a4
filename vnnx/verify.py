"""The verification pipeline: PGD → CROWN → α-CROWN → branch and bound → MILP, within one deadline.

Branch and bound splits the input box for networks with few inputs (ACAS Xu) and ReLUs (with
β-CROWN bounds, :mod:`vnnx.bab`) for chains of affine layers and ReLUs; the MILP gets what is
left when neither applies or branch and bound gives up.

Verdicts follow VNN-COMP: a VNN-LIB file describes the *violation* of a property, so

* ``sat``: a counterexample exists. Only ever reported with a witness that onnxruntime, running
  the original ONNX file in float32, confirms (see "Witness semantics" below).
* ``unsat``: no counterexample exists. Only from a sound bound (every clause has a row whose
  lower bound exceeds its right-hand side) or an optimal / bound-proven MILP.
* ``unknown`` / ``timeout``: anything else.

Witness semantics (VNN-COMP's): a float32 point ``x`` is a witness when every ``x_i`` lies within
``witness_tol`` (default :data:`WITNESS_TOL` = 1e-4) of its range and the output that onnxruntime
computes at ``x`` on the original file satisfies every row of some clause within ``witness_tol``
(``A y <= b + tol``), for the same input box. The tolerance is what makes witnesses possible at all
for ranges that are single points float32 cannot hold (VNN-COMP 2022 ``collins_rul_cnn``).
``witness_tol=0`` is the strict mode: exact float64 membership of the float32 point and output.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import numpy as np

from vnnx.errors import VnnxError

# Every stage that can decide alone has a method of its own: 'input-split' is CROWN then the
# input-box branch and bound, 'network-engine' CROWN then a bound plugin's whole-network engine.
METHODS = ("auto", "pgd", "ibp", "crown", "alpha-crown", "input-split", "network-engine", "bab", "milp")
VERDICTS = ("sat", "unsat", "unknown", "timeout")
# A bound refutes a row ``a y <= b`` only when ``lower(a y) - b`` exceeds this. The bounds are
# computed in float64 on float32 weights; the margin absorbs float64 round-off, not modelling error.
REFUTE_MARGIN = 1e-7
# VNN-COMP's counterexample tolerance, on inputs (distance to the box) and on output rows.
WITNESS_TOL = 1e-4
# Input splitting (branch and bound on the input box) runs in 'auto' for networks with at most
# this many inputs (ACAS Xu has 5), before the MILP; boxes are bounded this many at a time.
INPUT_SPLIT_MAX_INPUTS = 16
INPUT_SPLIT_BATCH = 512
INPUT_SPLIT_MAX_BOXES = 200_000
# ReLU-splitting branch and bound (vnnx.bab): domains bounded at once, α/β iterations per batch,
# and the number of open domains at which it gives up (and the MILP takes over).
RELU_BAB_BATCH = 256
RELU_BAB_ITERATIONS = 20
RELU_BAB_MAX_DOMAINS = 100_000
# auto_LiRPA's α-CROWN re-derives every intermediate bound with gradients at each step: one
# step cost about 24 CROWN passes on a 4,804-ReLU CNN (measured 2026-11-23), and it takes
# BoundComputer.alpha_iterations steps. Under 'auto' and 'bab', when the ReLU branch and bound
# follows (its root is an α-CROWN of its own, ~1 s per clause there), α-CROWN is skipped if that
# estimate (ALPHA_STEP_CROWN_PASSES x steps x CROWN's time) exceeds half the time left, and
# otherwise stopped at half the time left, so that the branch and bound keeps the other half.
# (Before 2026-11-23 the estimate left out the number of steps: on the paper's MNIST CNN
# α-CROWN then took 144 of 150 s and the branch and bound, which needed 2 s per clause, timed
# out.)
ALPHA_STEP_CROWN_PASSES = 24
# A bound operator may name a whole-network engine (``network_engine(network)`` returning an
# object with ``bound(x_lower, x_upper, C, alpha_iterations)`` and ``layer_bounds``; CAPM's
# sparse CROWN refines every neuron). Under 'auto' it runs after CROWN on networks with MaxPool,
# with this many α iterations.
NETWORK_ENGINE_ALPHA_ITERATIONS = 20


@dataclass
class Counterexample:
    x: np.ndarray  # (n_inputs,) float32, flattened model input
    y: np.ndarray  # (n_outputs,) float32, onnxruntime output at x


@dataclass
class VerifyResult:
    verdict: str
    seconds: float
    decided_by: str = ""
    counterexample: Optional[Counterexample] = None
    stages: list[dict] = field(default_factory=list)

    def result_text(self) -> str:
        """The VNN-COMP result-file text: the verdict, then ``((X_i v) ... (Y_j v))`` after sat."""
        lines = [self.verdict]
        if self.verdict == "sat" and self.counterexample is not None:
            entries = [f"(X_{i} {float(v)!r})" for i, v in enumerate(self.counterexample.x)]
            entries += [f"(Y_{j} {float(v)!r})" for j, v in enumerate(self.counterexample.y)]
            lines.append("(" + "\n ".join(entries) + ")")
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        return {"verdict": self.verdict, "seconds": round(self.seconds, 4), "decided_by": self.decided_by,
                "stages": self.stages}


class _Deadline:
    """``timeout`` seconds from ``start`` (a ``time.monotonic()`` value; default: now)."""

    def __init__(self, timeout: Optional[float], start: Optional[float] = None) -> None:
        self.start = time.monotonic() if start is None else float(start)
        self.timeout = timeout

    def left(self) -> Optional[float]:
        if self.timeout is None:
            return None
        return max(0.0, self.timeout - (time.monotonic() - self.start))

    def expired(self) -> bool:
        left = self.left()
        return left is not None and left <= 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def check_counterexample(model, prop, x: np.ndarray, tol: float = WITNESS_TOL) -> Optional[Counterexample]:
    """Run ``x`` through the original ONNX model with onnxruntime (float32) and return a
    :class:`Counterexample` only if it is a witness for ``prop`` (module docstring: the point is
    within ``tol`` of the box and its output within ``tol`` of some clause; ``tol=0`` is exact).

    ``x`` is first clipped to the box in float64, then rounded to the nearest float32, so the
    point stays within half a float32 ulp of the box even where a range is a single point
    float32 cannot hold."""
    from vnnx.io.onnx import run_onnxruntime
    from vnnx.io.vnnlib import violates

    x64 = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), prop.x_lower, prop.x_upper)
    x32 = x64.astype(np.float32)
    if tol <= 0:
        # Strict mode: step rounded values back inside the box where float32 allows.
        x32 = np.where(x32 < prop.x_lower, np.nextafter(x32, np.float32(np.inf)), x32)
        x32 = np.where(x32 > prop.x_upper, np.nextafter(x32, np.float32(-np.inf)), x32)
    y = run_onnxruntime(model, x32[None, :])[0]
    if violates(prop, x32.astype(np.float64), y.astype(np.float64), tol=max(0.0, float(tol))):
        return Counterexample(x32, y.astype(np.float32))
    return None


def box_points(prop) -> np.ndarray:
    """The centre of ``prop``'s box, then its lower and upper corners: (3, n_inputs)."""
    return np.stack([(prop.x_lower + prop.x_upper) / 2, prop.x_lower, prop.x_upper])


def clause_margins(lower: np.ndarray, clauses: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """For stacked rows of all clauses (in order), each clause's best row ``lower(a y) - b``
    (positive: that row can never hold; -inf for a clause without rows, which always holds)."""
    out, r = [], 0
    for a, b in clauses:
        k = len(b)
        out.append(float(np.max(lower[r:r + k] - b)) if k else -np.inf)
        r += k
    return out


def refuted_clauses(lower: np.ndarray, clauses: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[bool]:
    """Which clauses are proven impossible: some row ``a y <= b`` has
    ``lower(a y) > b + REFUTE_MARGIN``."""
    return [m > REFUTE_MARGIN for m in clause_margins(lower, clauses)]


class Verifier:
    """Verifies properties of one loaded model. Holds the plain view and the bound engine so
    that many specs on one network (a benchmark) pay for them once.

    ``custom_ops``: auto_LiRPA bound operators from plugins (e.g. CAPM's MaxPool).
    ``witness_tol``: the counterexample tolerance (module docstring); 0 is the strict mode.
    """

    def __init__(self, model, custom_ops: Optional[Mapping[str, type]] = None,
                 milp_backend: str = "highs", seed: int = 0, witness_tol: float = WITNESS_TOL) -> None:
        from vnnx.io.onnx import to_network

        self.model = model
        self.network = to_network(model)
        self.custom_ops = dict(custom_ops or {})
        self.milp_backend = milp_backend
        self.seed = seed
        if not (witness_tol >= 0 and np.isfinite(witness_tol)):
            raise VnnxError(f"witness tolerance must be a finite number >= 0, got {witness_tol!r}")
        self.witness_tol = float(witness_tol)
        self._bounds = None
        self._torch = None
        self._chain = False   # not built yet; None when the network is not an affine/ReLU chain
        self._net_engine = False  # not built yet; None when no plugin offers one for this network

    def _bound_engine(self):
        from vnnx.bounds import BoundComputer

        if self._bounds is None:
            self._bounds = BoundComputer(self.network, self.custom_ops)
        return self._bounds

    def _relu_chain(self):
        if self._chain is False:
            from vnnx.bab import relu_chain

            self._chain = relu_chain(self.network)
        return self._chain

    def _network_engine(self):
        """The whole-network bound engine a custom MaxPool operator offers, for networks with
        MaxPool (see NETWORK_ENGINE_ALPHA_ITERATIONS), or None."""
        if self._net_engine is False:
            from vnnx.network import MaxPool

            self._net_engine = None
            if any(isinstance(layer, MaxPool) for layer in self.network.layers):
                for op in self.custom_ops.values():
                    factory = getattr(op, "network_engine", None)
                    if factory is None:
                        continue
                    try:
                        self._net_engine = factory(self.network)
                    except VnnxError:
                        self._net_engine = None
                    break
        return self._net_engine

    def prepare(self) -> None:
        """Build what every run needs now (the plain network view is built by the constructor;
        here the bound engine and the torch module), so that a network vnnx would refuse fails
        here with its :class:`VnnxError`, not in the middle of a run."""
        self._bound_engine()
        self._module()

    def _witness(self, prop, x) -> Optional[Counterexample]:
        return check_counterexample(self.model, prop, x, self.witness_tol)

    def _first_witness(self, prop, points) -> Optional[Counterexample]:
        for x in points:
            cex = self._witness(prop, x)
            if cex is not None:
                return cex
        return None

    def _module(self):
        if self._torch is None:
            import torch

            self._torch = self.network.to_torch(torch.float32).eval()
        return self._torch

    def verify(self, spec, method: str = "auto", timeout: Optional[float] = None,
               start: Optional[float] = None) -> VerifyResult:
        """Verify every property (input box) of ``spec``; sat if any is sat, unsat if all are.

        ``timeout`` counts from ``start`` (a ``time.monotonic()`` value, default now); the
        command line passes the start of the process, so that loading counts too."""
        if method not in METHODS:
            raise VnnxError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if spec.n_inputs != self.network.n_inputs or spec.n_outputs != self.network.n_outputs:
            raise VnnxError(f"{spec.path}: spec has {spec.n_inputs} inputs / {spec.n_outputs} outputs, "
                            f"network {self.model.path} has {self.network.n_inputs} / {self.network.n_outputs}")
        f32 = float(np.finfo(np.float32).max)
        for p_idx, prop in enumerate(spec.properties):
            big = np.flatnonzero((np.abs(prop.x_lower) > f32) | (np.abs(prop.x_upper) > f32))
            if big.size:
                i = int(big[0])
                raise VnnxError(f"{spec.path}: input X_{i} has range [{prop.x_lower[i]:g}, {prop.x_upper[i]:g}], "
                                f"beyond what a float32 network input can hold (|x| <= {f32:.3g})")
        deadline = _Deadline(timeout, start)
        stages: list[dict] = []
        verdicts = []
        decided = []
        for p_idx, prop in enumerate(spec.properties):
            verdict, by, cex = self._verify_property(prop, method, deadline, stages, p_idx)
            if verdict == "sat":
                return VerifyResult("sat", deadline.elapsed(), by, cex, stages)
            verdicts.append(verdict)
            decided.append(by)
            if verdict == "timeout":
                break
        if verdicts and all(v == "unsat" for v in verdicts) and len(verdicts) == len(spec.properties):
            return VerifyResult("unsat", deadline.elapsed(), "+".join(sorted(set(decided))), None, stages)
        final = "timeout" if (deadline.expired() or "timeout" in verdicts) else "unknown"
        return VerifyResult(final, deadline.elapsed(), "", None, stages)

    def _verify_property(self, prop, method, deadline, stages, p_idx):
        clauses = list(prop.clauses)
        open_clauses = list(range(len(clauses)))

        def log(stage, outcome, t0, **extra):
            stages.append({"property": p_idx, "stage": stage, "outcome": outcome,
                           "seconds": round(time.monotonic() - t0, 4), **extra})

        if not clauses or any(len(b) == 0 for _, b in clauses):
            # A clause without rows holds for every output: every input in the box violates the
            # property, and the box centre is a witness (confirmed like any other).
            t0 = time.monotonic()
            cex = self._witness(prop, (prop.x_lower + prop.x_upper) / 2)
            log("trivial", "sat" if cex else "centre failed the onnxruntime check", t0)
            return ("sat", "trivial", cex) if cex else ("unknown", "", None)

        if method in ("auto", "pgd"):
            from vnnx.attack import pgd_spec

            t0 = time.monotonic()
            left = deadline.left()
            res = pgd_spec(self._module(), prop.x_lower, prop.x_upper, clauses, seed=self.seed,
                           time_limit=None if left is None else min(left, max(1.0, 0.1 * left)))
            if res.x is not None and res.margin <= self.witness_tol:
                cex = self._witness(prop, res.x)
                if cex is not None:
                    log("pgd", "sat", t0, margin=res.margin)
                    return "sat", "pgd", cex
            log("pgd", "no counterexample", t0, margin=res.margin)
            if method == "pgd":
                return "unknown", "", None

        bound_methods = {"auto": ("crown", "alpha-crown"), "ibp": ("ibp",), "crown": ("crown",),
                         "alpha-crown": ("alpha-crown",), "bab": ("crown", "alpha-crown"),
                         "milp": ("crown",), "input-split": ("crown",),
                         "network-engine": ("crown",)}[method] if method != "pgd" else ()
        pre_activation = None
        margins = {}
        crown_seconds = None
        for bm in bound_methods:
            if deadline.expired():
                return "timeout", "", None
            left = deadline.left()
            # (The chain is built only here, when α-CROWN is next: a property CROWN proves never
            # pays for its dense matrices.)
            if (bm == "alpha-crown" and crown_seconds is not None and left is not None
                    and method in ("auto", "bab") and self._relu_chain() is not None):
                estimate = ALPHA_STEP_CROWN_PASSES * self._bound_engine().alpha_iterations * crown_seconds
                if estimate > left / 2:
                    log(bm, f"skipped: CROWN took {crown_seconds:.2f} s, so alpha-CROWN would take about "
                            f"{estimate:.0f} s of the {left:.0f} s left; the ReLU branch and bound optimises "
                            f"its own alpha", time.monotonic())
                    continue
                left = left / 2
            t0 = time.monotonic()
            sub = [clauses[i] for i in open_clauses]
            C = np.vstack([a for a, _ in sub])
            try:
                res = self._bound_engine().compute(prop.x_lower, prop.x_upper, bm, C,
                                                   deadline=None if left is None else time.monotonic() + left)
            except VnnxError as exc:
                if method != "auto":
                    raise
                log(bm, f"failed: {exc}", t0)
                continue
            if bm == "crown":
                crown_seconds = time.monotonic() - t0
            if bm == "crown" or (bm == "alpha-crown" and res.pre_activation):
                pre_activation = intersect_bounds(pre_activation, res.pre_activation)
            sub_margins = clause_margins(res.lower, sub)
            margins.update(zip(open_clauses, sub_margins))
            open_clauses = [i for i, m in zip(open_clauses, sub_margins) if not m > REFUTE_MARGIN]
            log(bm, "unsat" if not open_clauses else f"{len(open_clauses)} clause(s) open", t0,
                min_margin=float(np.min(res.lower - np.concatenate([b for _, b in sub]))))
            if not open_clauses:
                return "unsat", bm, None
            # Early exit: a clause whose every row has upper bound <= 0 on the whole box holds
            # everywhere, so every point is a counterexample; the centre and corners are checked
            # like any other witness.
            rhs = np.concatenate([b for _, b in sub])
            starts = np.cumsum([0] + [len(b) for _, b in sub])
            if any(np.all(res.upper[s0:s1] - rhs[s0:s1] <= 0) for s0, s1 in zip(starts[:-1], starts[1:])):
                t1 = time.monotonic()
                cex = self._first_witness(prop, box_points(prop))
                log(f"{bm}-upper", "sat" if cex else "witness failed the onnxruntime check", t1)
                if cex is not None:
                    return "sat", f"{bm}-upper", cex
            if bm == "crown" and method in ("auto", "network-engine") and self._network_engine() is not None:
                if deadline.expired():
                    return "timeout", "", None
                t0 = time.monotonic()
                try:
                    outcome, open_clauses, pre_activation = self._network_bounds(prop, clauses, open_clauses,
                                                                                 margins, pre_activation)
                except (VnnxError, MemoryError) as exc:
                    outcome = f"failed: {exc}"
                log("network-engine", outcome, t0)
                if not open_clauses:
                    return "unsat", "network-engine", None

        if method == "network-engine" and self._network_engine() is None:
            log("network-engine", "skipped: no bound plugin offers a network engine for this network",
                time.monotonic())
        if method == "input-split" and self.network.n_inputs > INPUT_SPLIT_MAX_INPUTS:
            log("input-split", f"skipped: more than {INPUT_SPLIT_MAX_INPUTS} inputs", time.monotonic())
            return "unknown", "", None
        if method not in ("auto", "milp", "bab", "input-split"):
            return "unknown", "", None
        if method in ("auto", "input-split") and self.network.n_inputs <= INPUT_SPLIT_MAX_INPUTS:
            if deadline.expired():
                return "timeout", "", None
            t0 = time.monotonic()
            sub = [clauses[i] for i in open_clauses]
            outcome, cex, n_boxes = self._input_split(prop, sub, deadline)
            log("input-split", outcome, t0, boxes=n_boxes)
            if outcome == "sat":
                return "sat", "input-split", cex
            if outcome == "unsat":
                return "unsat", "input-split", None
            if method == "input-split":
                return ("timeout" if outcome == "timeout" else "unknown"), "", None
        if method in ("auto", "bab") and self._relu_chain() is not None:
            outcome, by, cex, open_clauses = self._relu_bab(prop, clauses, open_clauses, margins, pre_activation,
                                                           deadline, log)
            if outcome in ("sat", "unsat", "timeout"):
                return outcome, by, cex
            if method == "bab":
                return "unknown", "", None
        elif method == "bab":
            log("relu-bab", "skipped: network is not a chain of affine layers and ReLUs", time.monotonic())
            return "unknown", "", None
        if not self.network.is_piecewise_linear:
            log("milp", "skipped: network has non-piecewise-linear layers", time.monotonic())
            return "unknown", "", None
        if deadline.expired():
            return "timeout", "", None
        from vnnx.milp import verify_milp

        t0 = time.monotonic()
        # CROWN's pre-activation bounds (when computed) are intersected with interval bounds
        # inside the encoding; both are sound, so big-M stays valid and gets smaller.
        layer_bounds = pre_activation or None
        sub_prop = _with_clauses(prop, [clauses[i] for i in open_clauses])
        res = verify_milp(self.network, sub_prop, layer_bounds=layer_bounds, time_limit=deadline.left(),
                          backend=self.milp_backend)
        if res.status == "sat" and res.x is not None:
            cex = self._witness(prop, res.x)
            if cex is not None:
                log("milp", "sat", t0, binaries=res.n_binaries)
                return "sat", "milp", cex
            log("milp", "candidate failed the onnxruntime check", t0, binaries=res.n_binaries)
            return "unknown", "", None
        log("milp", res.status, t0, binaries=res.n_binaries, message=res.message)
        if res.status == "unsat":
            return "unsat", "milp", None
        return ("timeout" if res.status == "timeout" else "unknown"), "", None


    def _network_bounds(self, prop, clauses, open_clauses, margins, pre_activation):
        """α-CROWN of the plugin's whole-network engine on the open clauses; returns the stage's
        outcome, the clauses still open and the pre-activation bounds intersected with its own."""
        engine = self._network_engine()
        sub = [clauses[i] for i in open_clauses]
        C = np.vstack([a for a, _ in sub])
        lower = engine.bound(prop.x_lower, prop.x_upper, C, alpha_iterations=NETWORK_ENGINE_ALPHA_ITERATIONS)
        sub_margins = clause_margins(lower, sub)
        for i, m in zip(open_clauses, sub_margins):
            margins[i] = max(margins.get(i, -np.inf), m)
        still = [i for i, m in zip(open_clauses, sub_margins) if not m > REFUTE_MARGIN]
        mine = engine.last_pre_activation
        pre_activation = intersect_bounds(pre_activation, mine) if mine else pre_activation
        return ("unsat" if not still else f"{len(still)} clause(s) open"), still, pre_activation

    def _relu_bab(self, prop, clauses, open_clauses, margins, pre_activation, deadline, log):
        """ReLU-splitting branch and bound on each open clause, the nearest-to-refuted first.

        Returns ``(outcome, by, counterexample, clauses still open)``; outcome 'sat' | 'unsat' |
        'timeout' | 'unknown' (some clause made it give up: the MILP gets the open ones)."""
        from vnnx.bab import ReluBab

        found = {}

        def check(x):
            cex = self._witness(prop, x)
            if cex is not None:
                found["cex"] = cex
            return cex is not None

        # Probe every clause first (root bound plus the box corners it points at): cheap, and
        # it finds counterexamples that PGD missed before any time goes into a deep tree.
        babs = {}
        for i in open_clauses:
            if deadline.expired():
                return "timeout", "", None, open_clauses
            t0 = time.monotonic()
            a, b = clauses[i]
            babs[i] = ReluBab(self._relu_chain(), prop.x_lower, prop.x_upper, a, b, margin=REFUTE_MARGIN,
                              batch=RELU_BAB_BATCH, iterations=RELU_BAB_ITERATIONS,
                              max_domains=RELU_BAB_MAX_DOMAINS, check=check)
            left = deadline.left()
            margins[i] = babs[i].probe(pre_activation, None if left is None else time.monotonic() + left)
            if babs[i].counterexample is not None and "cex" in found:
                log("relu-bab", "sat", t0, clause=i, domains=1)
                return "sat", "relu-bab", found["cex"], open_clauses
        still_open = []
        for i in sorted(open_clauses, key=lambda j: -margins[j]):
            if deadline.expired():
                return "timeout", "", None, open_clauses
            t0 = time.monotonic()
            bab = babs[i]
            left = deadline.left()
            res = bab.run(pre_activation, None if left is None else time.monotonic() + left)
            log("relu-bab", res.status, t0, clause=i, domains=res.domains, max_open=res.max_open,
                **({"message": res.message} if res.message else {}))
            if res.status == "sat" and "cex" in found:
                return "sat", "relu-bab", found["cex"], open_clauses
            if res.status == "timeout":
                return "timeout", "", None, open_clauses
            if res.status != "unsat":
                still_open.append(i)
        if not still_open:
            return "unsat", "relu-bab", None, []
        return "unknown", "", None, still_open

    def _input_split(self, prop, clauses, deadline, batch: int = INPUT_SPLIT_BATCH,
                     max_boxes: int = INPUT_SPLIT_MAX_BOXES):
        """Branch and bound on the input box (for networks with few inputs, e.g. ACAS Xu).

        Sub-boxes are bounded with CROWN, ``batch`` at a time; a box is closed once every clause
        is refuted on it (a clause refuted on a box stays refuted on its halves). An open box is
        halved along the input with the largest |gradient of its least-refuted row| x width at its
        centre, and its centre is tried as a counterexample (checked with onnxruntime). The halves
        of a box cover it exactly, so 'unsat' means every clause is refuted on a cover of the box.

        Returns ``(outcome, counterexample, boxes bounded)``, outcome 'sat' | 'unsat' | 'timeout' |
        'gave up' (more than ``max_boxes`` open boxes).
        """
        import torch

        engine = self._bound_engine()
        C = np.vstack([a for a, _ in clauses])
        rhs = np.concatenate([b for _, b in clauses])
        starts = np.cumsum([0] + [len(b) for _, b in clauses])
        width0 = np.maximum(prop.x_upper - prop.x_lower, 1e-12)
        boxes_lo, boxes_hi = prop.x_lower[None].copy(), prop.x_upper[None].copy()
        refuted = np.zeros((1, len(clauses)), dtype=bool)
        bounded = 0
        while boxes_lo.shape[0]:
            if deadline.expired():
                return "timeout", None, bounded
            if boxes_lo.shape[0] > max_boxes:
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
                module = engine.module
                xc = torch.as_tensor(centre).requires_grad_(True)
                with torch.enable_grad():
                    y = module(xc)
                    # Per box, the output row least refuted among its open clauses steers the split.
                    masked = np.where(np.repeat(ref, np.diff(starts), axis=1), np.inf, margin)
                    worst = masked.argmin(1)
                    obj = (y * torch.as_tensor(C[worst])).sum()
                    (grad,) = torch.autograd.grad(obj, xc)
                yc = y.detach().numpy()
                for i in np.flatnonzero(_violating(yc, clauses, ref)):
                    cex = self._witness(prop, centre[i])
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


def _with_clauses(prop, clauses):
    from dataclasses import replace

    return replace(prop, clauses=list(clauses))


def verify(model, spec, method: str = "auto", timeout: Optional[float] = None,
           custom_ops: Optional[Mapping[str, type]] = None, milp_backend: str = "highs",
           witness_tol: float = WITNESS_TOL) -> VerifyResult:
    """Verify a loaded model (:func:`vnnx.io.onnx.load_onnx`) against a spec
    (:func:`vnnx.io.vnnlib.read_vnnlib`). See :class:`Verifier`."""
    return Verifier(model, custom_ops, milp_backend, witness_tol=witness_tol).verify(spec, method, timeout)
