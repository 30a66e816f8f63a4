"""Certify that a transformed network G agrees with its original F on L∞ balls (``vnnx certify``).

For each sample ``x0`` the ball is ``B = {x : |x - x0|_inf <= epsilon}`` clipped to the input
range ``[lo, hi]`` (``[0, 1]`` by default). Two agreement properties:

* **Output tolerance** ``d``: ``|G(x) - F(x)|_inf <= d`` for every ``x`` in ``B``. This is a
  two-network VNN-LIB 2.0 query (the networks share their input, ``X_f[i] == X_g[i]``) whose
  violation is the disjunction over output ``i`` and sign of ``Y_g[i] - Y_f[i] > d`` /
  ``Y_f[i] - Y_g[i] > d``; ``unsat`` proves the tolerance on the whole ball.
* **Same argmax.** ``argmax G(x) == argmax F(x)`` for every ``x`` in ``B`` is relational, and what
  is proven is a *sufficient* condition: with ``c = argmax F(x0)`` at the centre, BOTH F and G
  keep class ``c`` on the whole ball (every other logit strictly below logit ``c``); then their
  argmaxes agree everywhere on ``B``. The query's violation is the disjunction over ``j != c`` of
  ``Y_f[j] >= Y_f[c]`` and ``Y_g[j] >= Y_g[c]``. The condition is not necessary: a ball on which
  F itself changes class (and G with it) stays ``unknown`` even for ``G = F``.

Each query is written as VNN-LIB 2.0 text, read back with vnnx's own 2.0 reader
(:func:`vnnx.io.vnnlib2.parse_query`) and decided through the product network
(:mod:`vnnx.product`); the text of every certified sample can be saved so that any 2.0 verifier
can re-check it. A sample is

* ``certified``: the query is ``unsat`` (a sound bound or an optimal MILP, see
  :mod:`vnnx.verify`);
* ``refuted``: only with a witness ``x'`` in ``B`` (float32) at which onnxruntime, running both
  ORIGINAL ONNX files, shows the disagreement: strictly different argmaxes (``F(x')[a] >
  F(x')[b]`` and ``G(x')[b] > G(x')[a]``, so no tie-breaking rule is involved), or an output
  difference above ``d``;
* ``unknown`` otherwise (time out, or a ``sat`` of the sufficient condition that is no
  disagreement, e.g. both networks leave class ``c`` together).
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from vnnx.errors import ConfigError, InputFileError, ShapeMismatchError, VnnxError

__all__ = ["SampleResult", "CertifyReport", "ball", "same_argmax_query", "output_tolerance_query",
           "load_data", "certify_sample", "certify", "certify_transform", "add_certify_flags",
           "GUARANTEE"]

#: Seconds of the per-sample time a not-certified sample spends searching for a disagreement.
DISAGREEMENT_SEARCH_FRACTION = 0.2
#: At most this many PGD rounds (8 restarts of 60 steps each, new seeds) in that time.
DISAGREEMENT_SEARCH_ROUNDS = 4

#: What a certified same-argmax ball means, said once for the table, the JSON and the plugins.
GUARANTEE = ("certified = proven for every input in the L-inf ball (clipped to the input range): "
             "both networks keep the class the original gives the ball's centre, so their argmaxes "
             "agree on the whole ball (a sufficient condition); refuted = an input of the ball where "
             "onnxruntime shows different argmaxes; unknown = neither")


@dataclass
class SampleResult:
    """One sample's outcome. ``witness`` (refuted only): the float32 input ``x`` (flat), both
    networks' onnxruntime outputs, their argmaxes and the largest output difference."""

    index: int
    status: str                    # certified | refuted | unknown
    seconds: float
    centre_class: int              # argmax F(x0) (onnxruntime)
    label: Optional[int] = None
    verdict: str = ""              # the query's verdict: unsat | sat | unknown | timeout
    decided_by: str = ""
    witness: Optional[dict] = None
    query: Optional[str] = None    # where the certified query was written

    def row(self) -> str:
        label = "-" if self.label is None else str(self.label)
        return (f"{self.index:>6} {label:>5} {self.centre_class:>5} {self.status:>9} "
                f"{self.seconds:>8.2f} {self.verdict:>8} {self.decided_by}")


@dataclass
class CertifyReport:
    original: str
    transformed: str
    epsilon: float
    mode: str                      # same-argmax | output-tolerance
    tolerance: Optional[float]
    clip: Optional[tuple[float, float]]
    timeout: Optional[float]
    samples: list[SampleResult] = field(default_factory=list)
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        out = {"certified": 0, "refuted": 0, "unknown": 0}
        for s in self.samples:
            out[s.status] += 1
        return out

    def summary(self) -> str:
        c = self.counts()
        return f"certified {c['certified']} refuted {c['refuted']} unknown {c['unknown']}"

    def table(self) -> str:
        head = f"{'sample':>6} {'label':>5} {'class':>5} {'status':>9} {'seconds':>8} {'verdict':>8} decided_by"
        return "\n".join([head] + [s.row() for s in self.samples])

    def as_dict(self) -> dict:
        meaning = (GUARANTEE if self.mode == "same-argmax" else
                   f"certified = proven |G(x) - F(x)|_inf <= {self.tolerance:g} for every input of the ball; "
                   "refuted = an input of the ball where onnxruntime shows a larger difference; unknown = neither")
        return {"original": self.original, "transformed": self.transformed, "epsilon": self.epsilon,
                "mode": self.mode, "output_tolerance": self.tolerance,
                "clip": None if self.clip is None else list(self.clip), "timeout": self.timeout,
                "counts": self.counts(), "seconds": round(self.seconds, 3), "meaning": meaning,
                "samples": [asdict(s) for s in self.samples]}


# ------------------------------------------------------------------------------ the queries
def ball(x0: np.ndarray, epsilon: float, clip: Optional[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """``(lower, upper)`` (float64, flat) of the L∞ ball of radius ``epsilon`` around ``x0``,
    clipped to ``clip`` (``None``: not clipped)."""
    x0 = np.asarray(x0, dtype=np.float64).reshape(-1)
    lo, hi = x0 - epsilon, x0 + epsilon
    if clip is not None:
        lo, hi = np.maximum(lo, clip[0]), np.minimum(hi, clip[1])
    if np.any(lo > hi):
        i = int(np.flatnonzero(lo > hi)[0])
        raise ConfigError(f"input {i} = {x0[i]:g} is farther than epsilon {epsilon:g} outside the "
                          f"input range {clip}; check --clip")
    return lo, hi


def _header(comment: str, n_in: int, n_out: int, lo: np.ndarray, hi: np.ndarray) -> list[str]:
    from vnnx.io.vnnlib import _fmt

    lines = [f"; {' '.join(comment.split())}", "", "(vnnlib-version <2.0>)", "",
             "(declare-network f",
             f"    (declare-input X_f real [{n_in}])",
             f"    (declare-output Y_f real [{n_out}]))",
             "(declare-network g",
             f"    (declare-input X_g real [{n_in}])",
             f"    (declare-output Y_g real [{n_out}]))", "",
             "; The ball (on f's input) and the shared input:"]
    lines += [f"(assert (and (>= X_f[{i}] {_fmt(lo[i])}) (<= X_f[{i}] {_fmt(hi[i])})))" for i in range(n_in)]
    lines += [f"(assert (== X_f[{i}] X_g[{i}]))" for i in range(n_in)]
    return lines


def same_argmax_query(lo: np.ndarray, hi: np.ndarray, centre_class: int, n_outputs: int,
                      comment: str = "vnnx certify, same argmax") -> str:
    """VNN-LIB 2.0 text whose ``unsat`` proves that f and g both keep ``centre_class`` on the box
    ``[lo, hi]`` (module docstring): the violation is some ``Y[j] >= Y[c]``, ``j != c``."""
    c = int(centre_class)
    lines = _header(comment, len(lo), n_outputs, lo, hi)
    lines += ["", f"; Violation: f or g does not keep class {c}:", "(assert (or"]
    lines += [f"    (>= Y_{net}[{j}] Y_{net}[{c}])" for net in ("f", "g") for j in range(n_outputs) if j != c]
    lines += ["))"]
    return "\n".join(lines) + "\n"


def output_tolerance_query(lo: np.ndarray, hi: np.ndarray, tolerance: float, n_outputs: int,
                           comment: str = "vnnx certify, output tolerance") -> str:
    """VNN-LIB 2.0 text whose ``unsat`` proves ``|Y_g[i] - Y_f[i]| <= tolerance`` for every
    output ``i`` on the box ``[lo, hi]``."""
    from vnnx.io.vnnlib import _fmt

    d = _fmt(tolerance)
    lines = _header(comment, len(lo), n_outputs, lo, hi)
    lines += ["", f"; Violation: some output differs by more than {d}:", "(assert (or"]
    for i in range(n_outputs):
        lines += [f"    (> (- Y_g[{i}] Y_f[{i}]) {d})", f"    (> (- Y_f[{i}] Y_g[{i}]) {d})"]
    lines += ["))"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ witnesses
def _check_witness(models, x, lo, hi, mode: str, tolerance: Optional[float]) -> Optional[dict]:
    """The witness record when onnxruntime, on both original files, shows a disagreement at
    ``x`` (moved into the ball as float32), else None."""
    from vnnx.io.onnx import run_onnxruntime
    from vnnx.verify import float32_in_box

    x32 = float32_in_box(x, lo, hi)
    yf = np.asarray(run_onnxruntime(models["f"], x32[None, :])[0], dtype=np.float64).reshape(-1)
    yg = np.asarray(run_onnxruntime(models["g"], x32[None, :])[0], dtype=np.float64).reshape(-1)
    a, b = int(np.argmax(yf)), int(np.argmax(yg))
    diff = float(np.max(np.abs(yg - yf)))
    if mode == "same-argmax":
        found = a != b and yf[a] > yf[b] and yg[b] > yg[a]
    else:
        found = diff > tolerance
    if not found:
        return None
    outside = float(max(np.max(lo - x32, initial=0.0), np.max(x32 - hi, initial=0.0)))
    return {"x": x32.tolist(), "f_output": yf.tolist(), "g_output": yg.tolist(), "argmax_f": a,
            "argmax_g": b, "max_abs_difference": diff, "distance_outside_ball": outside}


def _disagreement_clauses(n_out: int, n_cols: int, c: int, mode: str, tolerance: Optional[float]):
    """Clauses ``A y <= b`` over the product's outputs ``[Y_f, Y_g, z]`` aimed at a disagreement:
    same argmax: F keeps ``c`` and G picks ``j`` (or the other way round); tolerance: one
    output differs by more than ``d``."""
    clauses = []
    if mode == "same-argmax":
        for keep, move in ((0, n_out), (n_out, 0)):
            for j in range(n_out):
                if j == c:
                    continue
                rows = []
                for k in range(n_out):
                    if k != c:   # the keeping network: y[k] - y[c] <= 0
                        r = np.zeros(n_cols); r[keep + k] = 1.0; r[keep + c] = -1.0; rows.append(r)
                    if k != j:   # the other network picks j: y[k] - y[j] <= 0
                        r = np.zeros(n_cols); r[move + k] = 1.0; r[move + j] = -1.0; rows.append(r)
                clauses.append((np.array(rows), np.zeros(len(rows))))
    else:
        for i in range(n_out):
            for sign in (1.0, -1.0):
                r = np.zeros((1, n_cols)); r[0, i] = sign; r[0, n_out + i] = -sign
                clauses.append((r, np.array([-tolerance])))
    return clauses


def _search_disagreement(product, models, lo, hi, c, mode, tolerance, seconds: float, seed: int):
    """PGD on the product graph towards a disagreement; a found point only counts once
    :func:`_check_witness` confirms it."""
    from vnnx.attack import pgd_spec

    prop = product.spec.properties[0]
    n_out = len(product.output_columns) // 2
    clauses = _disagreement_clauses(n_out, product.spec.n_outputs, c, mode, tolerance)
    module = product.graph.to_torch()
    end = time.monotonic() + seconds
    for round_ in range(DISAGREEMENT_SEARCH_ROUNDS):
        left = end - time.monotonic()
        if left <= 0:
            break
        res = pgd_spec(module, prop.x_lower, prop.x_upper, clauses, restarts=8, steps=60,
                       seed=seed + round_, time_limit=left)
        if res.x is not None:
            witness = _check_witness(models, product.inputs_of(res.x)[:len(lo)], lo, hi, mode, tolerance)
            if witness is not None:
                return witness
    return None


# ------------------------------------------------------------------------------ one sample
def certify_sample(models: dict, x0: np.ndarray, epsilon: float, *, index: int = 0,
                   label: Optional[int] = None, tolerance: Optional[float] = None,
                   clip: Optional[tuple[float, float]] = (0.0, 1.0), timeout: Optional[float] = None,
                   method: str = "auto", seed: int = 0, comment: str = "") -> tuple[SampleResult, str]:
    """Certify one ball: ``models = {"f": original, "g": transformed}`` (loaded models,
    :func:`vnnx.io.onnx.load_onnx`), ``x0`` the centre (flat, model-input space). Same argmax when
    ``tolerance`` is None, else the output tolerance. Returns the result and the query's 2.0 text.
    """
    from vnnx.io.onnx import run_onnxruntime
    from vnnx.io.vnnlib2 import parse_query
    from vnnx.product import ProductVerifier, build_product

    start = time.monotonic()
    mode = "same-argmax" if tolerance is None else "output-tolerance"
    lo, hi = ball(x0, epsilon, clip)
    n_out = models["f"].n_outputs
    centre = np.asarray(x0, dtype=np.float32).reshape(1, -1)
    c = int(np.argmax(run_onnxruntime(models["f"], centre)[0]))
    result = SampleResult(index, "unknown", 0.0, c, label)
    note = f"{comment} sample {index}, L-inf radius {epsilon:g}".strip()
    if mode == "same-argmax":
        text = same_argmax_query(lo, hi, c, n_out, comment=f"vnnx certify, same argmax: {note}")
    else:
        text = output_tolerance_query(lo, hi, tolerance, n_out,
                                      comment=f"vnnx certify, output tolerance {tolerance:g}: {note}")
    # The centre is a point of the ball: a disagreement there needs no search.
    witness = _check_witness(models, centre, lo, hi, mode, tolerance)
    if witness is not None:
        result.status, result.verdict, result.decided_by, result.witness = "refuted", "sat", "centre", witness
        result.seconds = time.monotonic() - start
        return result, text
    query = parse_query(text, f"<certify sample {index}>")
    product = build_product(query, models)
    budget = None if timeout is None else timeout * (1.0 - DISAGREEMENT_SEARCH_FRACTION)
    verified = ProductVerifier(product, seed=seed).verify(product.spec, method=method, timeout=budget, start=start)
    result.verdict, result.decided_by = verified.verdict, verified.decided_by
    if verified.verdict == "unsat":
        result.status = "certified"
    else:
        cex = verified.counterexample
        if cex is not None:
            witness = _check_witness(models, product.inputs_of(cex.x)[:len(lo)], lo, hi, mode, tolerance)
        if witness is None:
            left = None if timeout is None else timeout - (time.monotonic() - start)
            seconds = 2.0 if left is None else max(0.2, left)
            witness = _search_disagreement(product, models, lo, hi, c, mode, tolerance, seconds, seed)
            if witness is not None:
                result.decided_by = "disagreement-pgd"
        if witness is not None:
            result.status, result.witness = "refuted", witness
    result.seconds = time.monotonic() - start
    return result, text


# ------------------------------------------------------------------------------ data and runs
def load_data(path: str | os.PathLike) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """``(x, labels or None)`` from a ``.npz`` (``x``, optional ``y``) or an ERAN ``.csv``, as
    ``vnnx spec`` reads them."""
    from vnnx.specgen import load_samples

    p = Path(path)
    if p.suffix == ".npz" and p.is_file():
        try:
            with np.load(p, allow_pickle=False) as data:
                keys = set(data.files)
        except (OSError, ValueError, EOFError) as exc:
            raise InputFileError(f"{p}: cannot read npz: {exc}") from exc
        if "x" in keys and "y" not in keys:
            with np.load(p, allow_pickle=False) as data:
                x = np.asarray(data["x"])
            if not np.issubdtype(x.dtype, np.number) or x.ndim < 1:
                raise InputFileError(f"{p}: inputs 'x' are not an (N, ...) array of numbers")
            return x.astype(np.float32), None
    x, y = load_samples(p)
    return np.asarray(x, dtype=np.float32), np.asarray(y)


def _load_pair(original, transformed) -> dict:
    from vnnx.io.onnx import load_onnx

    for what, path in (("--original", original), ("--transformed", transformed)):
        if not Path(path).is_file():
            raise InputFileError(f"{path}: {what} network not found")
    f, g = load_onnx(original), load_onnx(transformed)
    if f.n_inputs != g.n_inputs or f.n_outputs != g.n_outputs:
        raise ShapeMismatchError(f"{transformed} has {g.n_inputs} inputs / {g.n_outputs} outputs, "
                                 f"{original} has {f.n_inputs} / {f.n_outputs}: they cannot be compared")
    return {"f": f, "g": g}


def check_epsilon(epsilon: float, tolerance: Optional[float] = None) -> None:
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon >= 0):
        raise ConfigError(f"--epsilon must be a finite number >= 0, got {epsilon!r}")
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance >= 0):
        raise ConfigError(f"--output-tolerance must be a finite number >= 0, got {tolerance!r}")


def certify(original: str, transformed: str, x: np.ndarray, epsilon: float, *,
            labels: Optional[np.ndarray] = None, indices: Optional[Sequence[int]] = None,
            tolerance: Optional[float] = None, clip: Optional[tuple[float, float]] = (0.0, 1.0),
            timeout: Optional[float] = None, out_dir: Optional[str] = None, method: str = "auto",
            progress: bool = True, executor=None) -> CertifyReport:
    """Certify G (``transformed``) against F (``original``), two ONNX paths, on the ball of every
    sample of ``x`` ((N, ...), model-input space; ``indices`` names them, default 0..N-1).
    ``timeout``: seconds per sample. With ``out_dir``, every certified query is written to
    ``out_dir/queries/`` and listed in ``out_dir/instances.csv`` (VNN-COMP 2026 form).
    ``executor``: a :class:`vnnx.executor.ExecutorSpec`; away from in-process each sample runs
    as an isolated task (local processes or a Dask cluster, docs/cluster.md) under a hard limit
    of twice ``timeout`` plus 30 s; a task that dies or hits it leaves its sample 'unknown'."""
    from tqdm.auto import tqdm

    from vnnx.data import fit_to_input

    check_epsilon(epsilon, tolerance)
    models = _load_pair(original, transformed)
    flat = fit_to_input(np.asarray(x, dtype=np.float32), models["f"].n_inputs)
    indices = list(range(len(flat))) if indices is None else [int(i) for i in indices]
    report = CertifyReport(str(original), str(transformed), float(epsilon),
                           "same-argmax" if tolerance is None else "output-tolerance", tolerance,
                           None if clip is None else (float(clip[0]), float(clip[1])), timeout)
    t0 = time.monotonic()
    rows = []
    out = None if out_dir is None else Path(out_dir)
    comment = f"{Path(transformed).name} vs {Path(original).name}"
    args = [(str(original), str(transformed), flat[k], float(epsilon), indices[k],
             None if labels is None else int(labels[k]), tolerance, clip, timeout, method, comment)
            for k in range(len(flat))]
    if executor is None or executor.kind == "in-process":
        done = (_certify_task(*a, models=models)
                for a in tqdm(args, desc="certify", disable=not progress, leave=False))
    else:
        from vnnx.executor import map_tasks

        limit = None if timeout is None else 2 * float(timeout) + 30.0
        outcomes = map_tasks(_certify_task, args, keys=[f"sample {a[4]}" for a in args], spec=executor,
                             timeout=limit, progress=progress, desc="certify")
        done = (o.value if o.status == "ok" else (_failed(a, o), "") for a, o in zip(args, outcomes))
    for res, text in done:
        if res.status == "certified" and out is not None:
            rows.append(_write_query(out, res, text, timeout))
        report.samples.append(res)
    report.seconds = time.monotonic() - t0
    if out is not None:
        _write_instances(out, original, transformed, rows)
    return report


_MODELS: dict = {}   # a worker process's loaded pairs, by (original, transformed)


def _certify_task(original: str, transformed: str, x0, epsilon, index, label, tolerance, clip, timeout,
                  method, comment, models: Optional[dict] = None):
    """One sample, as a picklable task: :func:`certify_sample` on the pair (loaded once per
    process)."""
    if models is None:
        key = (original, transformed)
        if key not in _MODELS:
            _MODELS[key] = _load_pair(original, transformed)
        models = _MODELS[key]
    return certify_sample(models, x0, epsilon, index=index, label=label, tolerance=tolerance, clip=clip,
                          timeout=timeout, method=method, comment=comment)


def _failed(args: tuple, outcome) -> SampleResult:
    """The 'unknown' result of a sample whose task did not finish (its reason in decided_by)."""
    return SampleResult(index=args[4], status="unknown", seconds=float(outcome.seconds), centre_class=-1,
                        label=args[5], verdict=outcome.status, decided_by=outcome.reason.splitlines()[0][:80]
                        if outcome.reason else outcome.status)


def _write_query(out: Path, res: SampleResult, text: str, timeout: Optional[float]) -> tuple[str, float]:
    from vnnx.util import write_text_atomic

    (out / "queries").mkdir(parents=True, exist_ok=True)
    name = f"queries/sample_{res.index}.vnnlib"
    write_text_atomic(out / name, text)
    res.query = str(out / name)
    return name, float(timeout) if timeout else 60.0


def _write_instances(out: Path, original: str, transformed: str, rows: list[tuple[str, float]]) -> None:
    """``instances.csv`` in the VNN-COMP 2026 form: a quoted list of (name, path) pairs, paths
    relative to ``out``."""
    from vnnx.util import write_text_atomic

    out.mkdir(parents=True, exist_ok=True)
    pair = []
    for name, path in (("f", original), ("g", transformed)):
        rel = os.path.relpath(Path(path).resolve(), out.resolve())
        if any(ch in rel for ch in "'\"\n\r\\"):
            raise ConfigError(f"{path}: a path with quotes or backslashes cannot go into instances.csv")
        pair.append(f"('{name}', '{rel}')")
    networks = "[" + ", ".join(pair) + "]"
    lines = [f"\"{networks}\",{name},{t:g}\n" for name, t in rows]
    write_text_atomic(out / "instances.csv", "".join(lines))


# ------------------------------------------------------------------------------ for the transforms
def _radius(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite radius >= 0, got {text!r}")
    return value


def add_certify_flags(parser) -> None:
    """``--certify EPS`` and ``--certify-timeout S`` for a transform command (checked when the
    command line is parsed, before the transform runs)."""
    parser.add_argument("--certify", type=_radius, default=None, metavar="EPS",
                        help="after writing the network, prove on the command's own samples that it keeps the "
                             "input network's argmax on every L-inf ball of radius EPS (vnnx certify "
                             "--same-argmax); prints the counts and what they guarantee")
    parser.add_argument("--certify-timeout", type=_radius, default=10.0, metavar="S",
                        help="seconds per sample for --certify (default 10)")


def certify_transform(original: str, transformed: str, x: np.ndarray, epsilon: float, *,
                      what: str = "validation points", timeout: Optional[float] = 10.0,
                      clip: Optional[tuple[float, float]] = (0.0, 1.0),
                      progress: bool = True) -> tuple[str, dict]:
    """Same-argmax certification of a transform's output against its input network on the
    samples ``x`` ((N, ...), model-input space). Returns the two lines a transform command
    prints (the counts, then the guarantee beyond the samples in one sentence) and a summary
    dict for a JSON report."""
    report = certify(original, transformed, x, epsilon, timeout=timeout or None, clip=clip,
                     progress=progress)
    c = report.counts()
    lo, hi = ("-inf", "inf") if clip is None else (f"{clip[0]:g}", f"{clip[1]:g}")
    text = (f"certify (radius {epsilon:g}, {len(report.samples)} {what}, {report.seconds:.1f} s): "
            f"{report.summary()}\n"
            f"guarantee: on each of the {c['certified']} certified balls (every input within {epsilon:g} "
            f"in L-inf of one of the {what}, inside [{lo}, {hi}]) {Path(transformed).name} provably "
            f"gives the same class as {Path(original).name}; beyond those balls nothing is proven, and "
            f"{c['refuted']} of the balls contain an input where onnxruntime shows that they disagree.")
    summary = {"epsilon": epsilon, "samples": len(report.samples), "counts": c,
               "seconds": round(report.seconds, 3), "meaning": GUARANTEE,
               "refuted": [s.index for s in report.samples if s.status == "refuted"]}
    return text, summary


def write_json(path: str, report: CertifyReport) -> None:
    from vnnx.util import write_text_atomic

    write_text_atomic(path, json.dumps(report.as_dict(), indent=1) + "\n")
