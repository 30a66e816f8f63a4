"""Run a whole VNN-COMP benchmark (an instances.csv) and summarise it."""
from __future__ import annotations

import csv
from concurrent.futures import ProcessPoolExecutor, as_completed
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from tqdm.auto import tqdm

from vnnx.errors import VnnxError
from vnnx.util import atomic_path

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
            lines.append(f"{(Path(r['onnx']).name + ' ' + Path(r['vnnlib']).name)[:60]:60s} "
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


# One verifier per network and process, reused across that network's instances.
_VERIFIERS: dict = {}


def _run_one(onnx_path: str, vnnlib_path: str, budget: float, method: str,
             custom_ops: Optional[Mapping[str, type]], solver: str, threads: Optional[int] = None) -> dict:
    """Verify one instance within ``budget`` seconds; returns its results row."""
    from vnnx.io.onnx import load_onnx
    from vnnx.io.vnnlib import read_vnnlib
    from vnnx.verify import Verifier

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    t0 = time.monotonic()
    row = {"onnx": str(onnx_path), "vnnlib": str(vnnlib_path), "timeout": budget}
    try:
        key = (str(onnx_path), solver)
        if key not in _VERIFIERS:
            _VERIFIERS[key] = Verifier(load_onnx(onnx_path), custom_ops, milp_backend=solver)
        v = _VERIFIERS[key]
        spec = read_vnnlib(vnnlib_path, v.network.n_inputs, v.network.n_outputs)
        left = max(0.0, budget - (time.monotonic() - t0))
        result = v.verify(spec, method=method, timeout=left)
        row.update(verdict=result.verdict, decided_by=result.decided_by)
    except VnnxError as exc:
        row.update(verdict="error", decided_by=str(exc)[:200])
    row["seconds"] = round(time.monotonic() - t0, 3)
    if row["verdict"] in ("sat", "unsat") and row["seconds"] > budget:
        row["verdict"] = "timeout"  # answered, but too late to count
    return row


def run_benchmark(instances: str, out_csv: Optional[str] = None, timeout_scale: float = 1.0,
                  method: str = "auto", custom_ops: Optional[Mapping[str, type]] = None,
                  limit: Optional[int] = None, solver: str = "highs", progress: bool = True,
                  max_timeout: Optional[float] = None, jobs: int = 1) -> BenchSummary:
    """Verify every instance in ``instances`` (onnx, vnnlib, timeout rows) and write a CSV
    (onnx, vnnlib, verdict, seconds, decided_by, timeout) plus a ``.summary.json`` beside it.

    ``max_timeout`` caps each instance's (scaled) timeout. One verifier per network is kept
    across its instances (loading is counted in the first instance's time). A failing instance
    is recorded as ``error`` and the run goes on. ``jobs > 1`` verifies that many instances at
    once in worker processes, one torch thread each (rows keep the file's order).
    """
    from vnnx.io.vnnlib import read_instances_csv

    if timeout_scale <= 0:
        raise VnnxError("--timeout-scale must be positive")
    if jobs < 1:
        raise VnnxError("--jobs must be at least 1")
    rows_in = read_instances_csv(instances)
    if limit is not None:
        rows_in = rows_in[:limit]
    out = Path(out_csv) if out_csv else Path(instances).with_name(Path(instances).stem + "_results.csv")
    summary = BenchSummary(out_csv=out)
    tasks = []
    for onnx_path, vnnlib_path, timeout in rows_in:
        budget = timeout * timeout_scale
        if max_timeout is not None:
            budget = min(budget, max_timeout)
        tasks.append((str(onnx_path), str(vnnlib_path), budget, method, custom_ops, solver))
    if jobs == 1:
        for task in tqdm(tasks, desc="instances", disable=not progress):
            summary.rows.append(_run_one(*task))
    else:
        import multiprocessing

        # spawn: a forked torch/HiGHS process state is not safe to share.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(_run_one, *task, 1) for task in tasks]
            for _ in tqdm(as_completed(futures), total=len(futures), desc=f"instances ({jobs} jobs)",
                          disable=not progress):
                pass
            summary.rows.extend(f.result() for f in futures)
    fields = ["onnx", "vnnlib", "verdict", "seconds", "decided_by", "timeout"]
    with atomic_path(out) as tmp:
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=fields)
            w.writeheader()
            for r in summary.rows:
                w.writerow({k: r.get(k, "") for k in fields})
    with atomic_path(out.with_suffix(".summary.json")) as tmp:
        tmp.write_text(json.dumps({"counts": dict(summary.counts()), "score": summary.score(),
                                   "instances": len(summary.rows)}, indent=2))
    return summary
