"""The verification pipeline: PGD → CROWN → α-CROWN → branch and bound → MILP, within one deadline.

Each ``--method`` is a table of stage objects (:mod:`vnnx.stages`): attack, bounds, input
splitting (networks with few inputs, ACAS Xu), ReLU splitting with β-CROWN bounds
(:mod:`vnnx.bab`, chains of affine layers and ReLUs) and the MILP, which gets what is left when
neither branch and bound applies or they give up. :class:`Verifier` holds what the stages share
for one network (the bound engines, the torch module, the witness check).

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
from vnnx.stages import Problem, clause_margins, intersect_bounds, method_stages, run_stages  # noqa: F401

# Every stage that can decide alone has a method of its own: 'input-split' is CROWN then the
# input-box branch and bound.
METHODS = ("auto", "pgd", "ibp", "crown", "alpha-crown", "input-split", "bab", "milp")
VERDICTS = ("sat", "unsat", "unknown", "timeout")
# A bound refutes a row ``a y <= b`` only when ``lower(a y) - b`` exceeds this. The bounds are
# computed in float64 on float32 weights; the margin absorbs float64 round-off, not modelling error.
REFUTE_MARGIN = 1e-7
# VNN-COMP's counterexample tolerance, on inputs (distance to the box) and on output rows.
WITNESS_TOL = 1e-4
# The stages' own settings live with them: vnnx.stages.input_split (INPUT_SPLIT_*),
# vnnx.stages.relu_bab (RELU_BAB_*), vnnx.stages.bound (ALPHA_STEP_CROWN_PASSES).


@dataclass
class Counterexample:
    x: np.ndarray  # (n_inputs,) float32, flattened model input
    y: np.ndarray  # (n_outputs,) float32, onnxruntime output at x
    # A multi-network query's witness: (name, value) of every query column in declaration order
    # (``X_f[0]``, ..., ``Y_g[4]``), written to the result file instead of X_i / Y_j.
    named: Optional[list] = None


@dataclass
class VerifyResult:
    verdict: str
    seconds: float
    decided_by: str = ""
    counterexample: Optional[Counterexample] = None
    stages: list[dict] = field(default_factory=list)

    def result_text(self) -> str:
        """The VNN-COMP result-file text: the verdict, then ``((X_i v) ... (Y_j v))`` after sat
        (for a multi-network query the 2.0 names: ``((X_f[0] v) ... (Y_g[4] v))``)."""
        lines = [self.verdict]
        cex = self.counterexample
        if self.verdict == "sat" and cex is not None:
            named = cex.named or ([(f"X_{i}", v) for i, v in enumerate(cex.x)] +
                                  [(f"Y_{j}", v) for j, v in enumerate(cex.y)])
            lines.append("(" + "\n ".join(f"({name} {float(v)!r})" for name, v in named) + ")")
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


def float32_in_box(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``x`` clipped to ``[lo, hi]`` in float64 and rounded to float32, each value stepped one
    float32 ulp back inwards where rounding put it outside (a range too narrow for any float32
    keeps the nearest one, within half an ulp of the box)."""
    x32 = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), lo, hi).astype(np.float32)
    x32 = np.where(x32 < lo, np.nextafter(x32, np.float32(np.inf)), x32)
    return np.where(x32 > hi, np.nextafter(x32, np.float32(-np.inf)), x32)


def check_counterexample(model, prop, x: np.ndarray, tol: float = WITNESS_TOL) -> Optional[Counterexample]:
    """Run ``x`` through the original ONNX model with onnxruntime (float32) and return a
    :class:`Counterexample` only if it is a witness for ``prop`` (module docstring: the point is
    within ``tol`` of the box and its output within ``tol`` of some clause; ``tol=0`` is exact).

    ``x`` is clipped to the box in float64 and rounded to float32, stepped one ulp back inside
    where rounding put it outside (:func:`float32_in_box`), so the witness lies in the box
    wherever float32 can (within half an ulp of it where a range is a single point float32
    cannot hold); with ``tol > 0`` the plain nearest float32 point is tried too."""
    from vnnx.io.onnx import run_onnxruntime
    from vnnx.io.vnnlib import violates

    # The float32 point stepped back inside the box where float32 allows (a witness on a face
    # of the box, where rounding may put it outside, stays in it); with a tolerance, also the
    # plain nearest float32 point, within half an ulp of the box.
    inside = float32_in_box(x, prop.x_lower, prop.x_upper)
    tries = [inside]
    if tol > 0:
        nearest = np.clip(np.asarray(x, dtype=np.float64).reshape(-1), prop.x_lower, prop.x_upper).astype(np.float32)
        if not np.array_equal(nearest, inside):
            tries.append(nearest)
    for x32 in tries:
        y = run_onnxruntime(model, x32[None, :])[0]
        if violates(prop, x32.astype(np.float64), y.astype(np.float64), tol=max(0.0, float(tol))):
            return Counterexample(x32, y.astype(np.float32))
    return None


def check_device(device: str) -> str:
    """``device`` if torch can compute there ('cpu', 'cuda', 'cuda:N'), else a :class:`VnnxError`;
    'auto' is 'cuda' when torch sees a CUDA GPU, else 'cpu'."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if not device.startswith("cuda"):
        raise VnnxError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if not torch.cuda.is_available():
        raise VnnxError(f"device {device!r} requested, but torch sees no CUDA GPU on this machine")
    return device


def refuted_clauses(lower: np.ndarray, clauses: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[bool]:
    """Which clauses are proven impossible: some row ``a y <= b`` has
    ``lower(a y) > b + REFUTE_MARGIN``."""
    return [m > REFUTE_MARGIN for m in clause_margins(lower, clauses)]


class Verifier:
    """Verifies properties of one loaded model. Holds the bound graph, its engine and the torch
    module so that many specs on one network (a benchmark) pay for them once.

    ``relaxations``: the graph engine's operator relaxations from plugins (CAPM's MaxPool,
    :class:`vnnx.engine.GraphEngine`).
    ``device``: where the graph engine computes ('cpu' or 'cuda', float64 either way).
    ``witness_tol``: the counterexample tolerance (module docstring); 0 is the strict mode.
    ``graph``: a bound graph built by the caller, used instead of the model's own (``model`` then
    needs only ``path``, ``n_inputs`` and ``n_outputs``: :class:`vnnx.product.ProductVerifier`).
    """

    def __init__(self, model, *, milp_backend: str = "highs", seed: int = 0, witness_tol: float = WITNESS_TOL,
                 relaxations: Optional[Mapping] = None, device: str = "cpu", graph=None) -> None:
        self.model = model
        self.device = check_device(device)
        if graph is None:   # else built by the caller (vnnx.product's product network)
            from vnnx.graph import from_onnx

            graph = from_onnx(model)
        self._graph = graph
        self.relaxations = dict(relaxations or {})
        self.milp_backend = milp_backend
        self.seed = seed
        if not (witness_tol >= 0 and np.isfinite(witness_tol)):
            raise VnnxError(f"witness tolerance must be a finite number >= 0, got {witness_tol!r}")
        self.witness_tol = float(witness_tol)
        self._bounds = None
        self._bab_engine = None
        self._torch = None

    @property
    def n_inputs(self) -> int:
        return self.model.n_inputs

    @property
    def n_outputs(self) -> int:
        return self.model.n_outputs

    def graph(self):
        """The bound graph of the model (:mod:`vnnx.graph`)."""
        return self._graph

    def bound_engine(self):
        """The bound engine (IBP / CROWN / α-CROWN, :class:`vnnx.engine.GraphEngine`), built on
        first use."""
        if self._bounds is None:
            from vnnx.engine import GraphEngine

            self._bounds = GraphEngine(self.graph(), relaxations=self.relaxations, device=self.device)
        return self._bounds

    def bab_engine(self):
        """``(engine, node map)`` for the graph branch and bound: the bound engine itself, or on
        a graph with MaxPool a :class:`vnnx.engine.GraphEngine` over
        :func:`vnnx.graph.as_splittable` (whose ReLUs split the max), with the map from this
        graph's nodes to that one's (None when they are the same graph)."""
        if self._bab_engine is None:
            from vnnx.engine import GraphEngine
            from vnnx.graph import as_splittable

            split, node_map = as_splittable(self.graph())
            if node_map is not None:
                self._bab_engine = (GraphEngine(split, relaxations=self.relaxations, device=self.device), node_map)
            else:
                self._bab_engine = (self.bound_engine(), None)
        return self._bab_engine

    def can_split(self) -> bool:
        """Whether the ReLU branch and bound runs on this network (it has a splittable operator)."""
        from vnnx.graph_bab import split_nodes

        return bool(split_nodes(self.graph()))

    def prepare(self) -> None:
        """Build what every run needs now (the bound graph is built by the constructor; here the
        bound engine and the torch module), so that a network vnnx would refuse fails here with
        its :class:`VnnxError`, not in the middle of a run."""
        self.bound_engine()
        self.module()

    def witness(self, prop, x) -> Optional[Counterexample]:
        """``x`` as a confirmed :class:`Counterexample` of ``prop``, or None
        (:func:`check_counterexample` with this verifier's tolerance)."""
        return check_counterexample(self.model, prop, x, self.witness_tol)

    def first_witness(self, prop, points) -> Optional[Counterexample]:
        for x in points:
            cex = self.witness(prop, x)
            if cex is not None:
                return cex
        return None

    def module(self):
        """The network as a float32 torch module (for PGD), built on first use."""
        if self._torch is None:
            import torch

            self._torch = self.graph().to_torch(torch.float32).eval()
        return self._torch

    def verify(self, spec, method: str = "auto", timeout: Optional[float] = None,
               start: Optional[float] = None) -> VerifyResult:
        """Verify every property (input box) of ``spec``; sat if any is sat, unsat if all are.

        ``timeout`` counts from ``start`` (a ``time.monotonic()`` value, default now); the
        command line passes the start of the process, so that loading counts too."""
        if method not in METHODS:
            raise VnnxError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
        if spec.n_inputs != self.n_inputs or spec.n_outputs != self.n_outputs:
            raise VnnxError(f"{spec.path}: spec has {spec.n_inputs} inputs / {spec.n_outputs} outputs, "
                            f"network {self.model.path} has {self.n_inputs} / {self.n_outputs}")
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
        """One property through the stages of ``method`` (:func:`vnnx.stages.method_stages`)."""
        def log(stage, outcome, t0, **extra):
            stages.append({"property": p_idx, "stage": stage, "outcome": outcome,
                           "seconds": round(time.monotonic() - t0, 4), **extra})

        clauses = list(prop.clauses)
        problem = Problem(prop, method, log, clauses, list(range(len(clauses))))
        outcome = run_stages(self, problem, method_stages(method), deadline)
        return outcome.verdict, outcome.by, outcome.counterexample


def verify(model, spec, method: str = "auto", timeout: Optional[float] = None, *, milp_backend: str = "highs",
           witness_tol: float = WITNESS_TOL, relaxations: Optional[Mapping] = None) -> VerifyResult:
    """Verify a loaded model (:func:`vnnx.io.onnx.load_onnx`) against a spec
    (:func:`vnnx.io.vnnlib.read_vnnlib`). See :class:`Verifier`."""
    return Verifier(model, milp_backend=milp_backend, witness_tol=witness_tol,
                    relaxations=relaxations).verify(spec, method, timeout)
