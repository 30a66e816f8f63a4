"""Run a whole VNN-COMP benchmark (an instances.csv) and summarise it."""
from __future__ import annotations

import contextlib
import csv
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional


from vnnx.errors import VnnxError
from vnnx.executor import ExecutorSpec, Outcome, Task, open_executor, task_seed
from vnnx.util import atomic_path, check_writable_file
from vnnx.verify import WITNESS_TOL

# VNN-COMP (2022 on) scoring: 10 points per correct sat or unsat, a penalty of 150 per wrong
# answer. vnnx cannot know ground truth; its sat answers carry checked counterexamples, and the
# score below assumes the unsat answers are right (which soundness is for).
POINTS_SOLVED = 10


@dataclass
class BenchSummary:
    rows: list[dict] = field(default_factory=list)
    out_csv: Optional[Path] = None

    def counts(self) -> Counter:
        return Counter(r["verdict"] for r in self.rows)

    def score(self) -> int:
        c = self.counts()
        return POINTS_SOLVED * (c["sat"] + c["unsat"])

    def table(self) -> str:
        c = self.counts()
        solved = [r["seconds"] for r in self.rows if r["verdict"] in ("sat", "unsat")]
        lines = [f"{'instance':60s} {'verdict':8s} {'seconds':>8s}"]
        for r in self.rows:
            lines.append(f"{(_network_label(r['onnx']) + ' ' + Path(r['vnnlib']).name)[:60]:60s} "
                         f"{r['verdict']:8s} {r['seconds']:8.2f}")
        lines.append("")
        lines.append(f"instances {len(self.rows)}: sat {c['sat']}, unsat {c['unsat']}, unknown {c['unknown']}, "
                     f"timeout {c['timeout']}, error {c['error']}")
        if solved:
            lines.append(f"solved {len(solved)} in {sum(solved):.1f} s (mean {sum(solved) / len(solved):.2f} s); "
                         f"score {self.score()} (10 per solved instance)")
        if self.out_csv:
            lines.append(f"results: {self.out_csv}")
        return "\n".join(lines)


def _network_label(onnx: str) -> str:
    """The file name of a row's network; for the 2026 form ``f=a.onnx,g=a.onnx``."""
    if str(onnx).lstrip().startswith("["):
        from vnnx.io.vnnlib2 import parse_network_list
        from vnnx.errors import InputFileError

        try:
            return ",".join(f"{n}={Path(p).name}" for n, p in parse_network_list(str(onnx), "instances"))
        except InputFileError:
            pass
    return Path(onnx).name


# One verifier per network and process, reused across that network's instances.
_VERIFIERS: dict = {}


def _verifier(onnx_path: str, solver: str, witness_tol: float, relaxations: Optional[Mapping] = None,
              device: str = "cpu"):
    """This process's verifier of one network (loaded once, reused across its instances; an
    isolated run loads it in the worker's zygote, as the tasks' ``warm`` step)."""
    from vnnx.io.onnx import load_onnx
    from vnnx.verify import Verifier

    key = (onnx_path, solver, witness_tol, device)
    if key not in _VERIFIERS:
        _VERIFIERS[key] = Verifier(load_onnx(onnx_path), milp_backend=solver, witness_tol=witness_tol,
                                   relaxations=relaxations, device=device)
    return _VERIFIERS[key]


def _run_one(onnx_path: str, vnnlib_path: str, budget: float, method: str, solver: str,
             witness_tol: float = WITNESS_TOL, threads: Optional[int] = None,
             relaxations: Optional[Mapping] = None, seed: int = 0, device: str = "cpu") -> dict:
    """Verify one instance within ``budget`` seconds; returns its results row. Any exception
    (a bad file, or a bug) becomes the row's verdict ``error`` with its message: one row never
    takes the whole run down. ``seed``: the attack's (a run derives it from the row's key)."""
    from vnnx.io.vnnlib import read_vnnlib

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    t0 = time.monotonic()
    row = {"onnx": str(onnx_path), "vnnlib": str(vnnlib_path), "timeout": budget}
    try:
        if str(onnx_path).lstrip().startswith("["):
            return _run_query(row, str(onnx_path), str(vnnlib_path), budget, method, solver, witness_tol, t0)
        v = _verifier(str(onnx_path), solver, witness_tol, relaxations, device)
        v.seed = seed
        spec = read_vnnlib(vnnlib_path, v.n_inputs, v.n_outputs)
        left = max(0.0, budget - (time.monotonic() - t0))
        result = v.verify(spec, method=method, timeout=left)
        row.update(verdict=result.verdict, decided_by=result.decided_by)
    except VnnxError as exc:
        row.update(verdict="error", decided_by=str(exc)[:200])
    except Exception as exc:  # noqa: BLE001 - a bug in one row is that row's error, not the run's
        row.update(verdict="error", decided_by=f"internal error: {type(exc).__name__}: {exc}"[:200])
    row["seconds"] = round(time.monotonic() - t0, 3)
    if row["verdict"] in ("sat", "unsat") and row["seconds"] > budget:
        row["verdict"] = "timeout"  # answered, but too late to count
    return row


def _run_query(row: dict, networks: str, vnnlib_path: str, budget: float, method: str, solver: str,
               witness_tol: float, t0: float) -> dict:
    """:func:`_run_one` for a 2026 row: a multi-network VNN-LIB 2.0 query over a list of
    (name, path) pairs, verified through the product network (:mod:`vnnx.product`)."""
    from vnnx.io.vnnlib2 import read_query
    from vnnx.product import assign_networks, load_networks, parse_onnx_args, verify_query

    try:
        query = read_query(vnnlib_path)
        models = load_networks(assign_networks(query, parse_onnx_args([networks], vnnlib_path)))
        left = max(0.0, budget - (time.monotonic() - t0))
        result = verify_query(query, models, method=method, timeout=left, milp_backend=solver,
                              witness_tol=witness_tol)
        row.update(verdict=result.verdict, decided_by=result.decided_by)
    except VnnxError as exc:
        row.update(verdict="error", decided_by=str(exc)[:200])
    except Exception as exc:  # noqa: BLE001 - as in _run_one
        row.update(verdict="error", decided_by=f"internal error: {type(exc).__name__}: {exc}"[:200])
    row["seconds"] = round(time.monotonic() - t0, 3)
    if row["verdict"] in ("sat", "unsat") and row["seconds"] > budget:
        row["verdict"] = "timeout"
    return row


FIELDS = ["onnx", "vnnlib", "verdict", "seconds", "decided_by", "timeout"]
# Verdicts a resumed run keeps; the others (error, timeout, unknown) are run again.
DECIDED = ("sat", "unsat")


def _read_results(path: Path, flag: str) -> list[dict]:
    """The rows of an earlier results CSV (for ``flag``: --resume, --longest-first)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if rows and set(FIELDS) - set(rows[0]):
        raise VnnxError(f"{path}: not a vnnx bench results CSV (columns {', '.join(rows[0])}); cannot {flag}")
    return rows


def _read_done(out: Path) -> dict[tuple[str, str], dict]:
    """Rows of an earlier results CSV with a decided verdict, by (onnx, vnnlib)."""
    if not out.is_file():
        return {}
    return {(r["onnx"], r["vnnlib"]): r for r in _read_results(out, "--resume") if r.get("verdict") in DECIDED}


def run_benchmark(instances: str, out_csv: Optional[str] = None, timeout_scale: float = 1.0,
                  method: str = "auto", limit: Optional[int] = None, solver: str = "highs", progress: bool = True,
                  max_timeout: Optional[float] = None, jobs: int = 1,
                  witness_tol: float = WITNESS_TOL, resume: bool = False,
                  relaxations: Optional[Mapping] = None, executor: Optional[ExecutorSpec] = None,
                  longest_first: Optional[str] = None, device: str = "cpu") -> BenchSummary:
    """Verify every instance in ``instances`` (onnx, vnnlib, timeout rows) and write a CSV
    (onnx, vnnlib, verdict, seconds, decided_by, timeout) plus a ``.summary.json`` beside it.

    Each row is appended to the CSV and flushed as soon as it is finished (in finishing order),
    so an interrupted run keeps every finished row and never a half-written one; the summary
    JSON is written atomically at the end. ``resume``: keep the rows of an earlier CSV whose
    verdict is decided (sat/unsat) and run only the other instances (error, timeout and unknown
    rows are run again).

    ``max_timeout`` caps each instance's (scaled) timeout. One verifier per network is kept
    across its instances (loading is counted in the first instance's time). A failing instance
    is recorded as ``error`` and the run goes on. ``jobs > 1`` (or ``executor``, a Dask back end:
    :mod:`vnnx.executor`) verifies that many instances at once, each in its own subprocess with
    one torch thread and a hard timeout of :func:`hard_limit` seconds (a row killed there is
    ``timeout``, a crashed one ``error``, with the reason in ``decided_by``); every row's attack
    seed derives from its (onnx, vnnlib) key, so the verdicts do not depend on the back end.
    ``relaxations``: a bound plugin's operator relaxations for the graph engine
    (:class:`vnnx.verify.Verifier`). ``longest_first``: an earlier results CSV; the instances
    start in decreasing order of their seconds there (rows it lacks first, then by timeout), so
    that with several workers the longest rows do not start last. The verdicts do not depend on
    the order (seeds are per row). ``device``: the graph engine's ('auto': cuda when torch sees a
    GPU, else cpu); a GPU is used in this process only (with several worker processes 'auto'
    means cpu, and 'cuda' is refused).
    """
    from vnnx.io.vnnlib import read_instances_csv

    if timeout_scale <= 0:
        raise VnnxError("--timeout-scale must be positive")
    spec = (executor or ExecutorSpec(jobs=jobs)).validate()
    if spec.kind != "in-process":
        if device.startswith("cuda"):
            raise VnnxError("--device cuda runs the instances in this process (one GPU): drop --jobs, "
                            "--scheduler and --local-cluster")
        device = "cpu" if device == "auto" else device
    else:
        from vnnx.verify import check_device

        device = check_device(device)
    rows_in = read_instances_csv(instances)
    if limit is not None:
        rows_in = rows_in[:limit]
    out = Path(out_csv) if out_csv else Path(instances).with_name(Path(instances).stem + "_results.csv")
    check_writable_file(out, "results CSV")
    check_writable_file(out.with_suffix(".summary.json"), "summary JSON")
    done = _read_done(out) if resume else {}
    summary = BenchSummary(out_csv=out)
    tasks, order = [], []
    for onnx_path, vnnlib_path, timeout in rows_in:
        budget = timeout * timeout_scale
        if max_timeout is not None:
            budget = min(budget, max_timeout)
        key = (str(onnx_path), str(vnnlib_path))
        order.append(key)
        if key not in done:
            threads = None if spec.kind == "in-process" else 1
            args = (str(onnx_path), str(vnnlib_path), budget, method, solver, witness_tol, threads, relaxations,
                    task_seed(row_key(*key)), device)
            warm = None if str(onnx_path).lstrip().startswith("[") else \
                (_verifier, (str(onnx_path), solver, witness_tol, relaxations, device))
            tasks.append(Task(row_key(*key), _run_one, args, timeout=hard_limit(budget), warm=warm))
    if longest_first is not None:
        prior = _prior_seconds(Path(longest_first))
        # Stable: rows missing from the prior run first, then by its seconds, then by budget.
        tasks.sort(key=lambda t: (t.key in prior, -prior.get(t.key, 0.0), -t.args[2]))
    kept = [done[k] for k in order if k in done]
    finished: dict[tuple[str, str], dict] = {}
    # Opened first: an unreachable scheduler fails before the results CSV is touched.
    with open_executor(spec) as ex:
        # The kept rows first (rewritten atomically), then each new row appended as it finishes.
        with atomic_path(out) as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=FIELDS)
                w.writeheader()
                for r in kept:
                    w.writerow({k: r.get(k, "") for k in FIELDS})
        with open(out, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=FIELDS)
            for outcome in ex.run(tasks, isolate=spec.kind != "in-process", progress=progress, desc="instances"):
                row = _outcome_row(outcome)
                writer.writerow({k: row.get(k, "") for k in FIELDS})
                fh.flush()
                finished[(row["onnx"], row["vnnlib"])] = row
    for key in order:
        row = finished.get(key) or done.get(key)
        if row is not None:
            summary.rows.append(_typed(row))
    with atomic_path(out.with_suffix(".summary.json")) as tmp:
        tmp.write_text(json.dumps({"counts": dict(summary.counts()), "score": summary.score(),
                                   "instances": len(summary.rows)}, indent=2))
    return summary


def _prior_seconds(path: Path) -> dict[str, float]:
    """Each row's seconds in an earlier results CSV, by :func:`row_key`."""
    if not path.is_file():
        raise VnnxError(f"{path}: no such results CSV (--longest-first)")
    out = {}
    for r in _read_results(path, "--longest-first"):
        with contextlib.suppress(TypeError, ValueError):
            out[row_key(r["onnx"], r["vnnlib"])] = float(r["seconds"])
    return out


def row_key(onnx: str, vnnlib: str) -> str:
    """A results row's key as one string (a task's key, which fixes its seed)."""
    return f"{onnx}\t{vnnlib}"


def hard_limit(budget: float) -> float:
    """Seconds an isolated row may run before its process group is killed: the budget, plus
    the task process's start (torch's import) and the overrun of a stage that stops late."""
    return budget * 1.25 + 30.0


def _outcome_row(outcome: Outcome) -> dict:
    """The results row of a finished task; a task killed or crashed is its ``timeout`` or
    ``error`` row, with the reason in ``decided_by``."""
    if outcome.status == "ok":
        return outcome.value
    onnx, vnnlib, budget = outcome.task.args[:3]
    return {"onnx": onnx, "vnnlib": vnnlib, "timeout": budget, "verdict": outcome.status,
            "decided_by": outcome.reason[:200], "seconds": round(outcome.seconds, 3)}


def _typed(row: dict) -> dict:
    """A row read back from the CSV has strings; seconds and timeout are numbers again."""
    out = dict(row)
    for k in ("seconds", "timeout"):
        with contextlib.suppress(TypeError, ValueError):
            out[k] = float(out[k])
    return out
