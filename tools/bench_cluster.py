#!/usr/bin/env python
"""Benchmark vnnx.executor's Dask back end against sequential runs, in one run (issue 22).

1. mnistfc 256x2: the 30 rows of ../shared/benchmarks/mnistfc/mnistfc_instances.csv whose network
   is mnist-net_256x2 (as tools/bench_vnncomp.py selects them), with their VNN-COMP timeouts:
   `vnnx bench` sequentially (in this process) and with `--local-cluster 2` (rows started longest
   first by the sequential run's seconds, `--longest-first`; each worker's zygote loads a network
   once, the tasks' `warm` step). Reports the decided
   verdicts (sat/unsat must never flip; timeout against unknown counts as equal), the wall-time
   ratio cluster / sequential (target <= 0.6), and the per-task overhead.
2. Per-task overhead: a trivial task through the local cluster (fork from the worker's zygote,
   pickling, scheduling), and what a fresh interpreter pays to import vnnx.bench (torch).
   With --one-worker also the bench on a local cluster of 1 worker (throughput with 1 and 2).
3. VNN LP on ERAN's mnist_relu_9_100 (ε = 0, per-neuron LPs, --lp-samples validation images):
   sequential against `--local-cluster 2`: the same L1 norm per layer, and the wall-time ratio.

The machine's load average is recorded before and after: on a shared machine the ratios are
upper ends. Results: OUT/results.json and a markdown table on stdout. Examples::

    .venv/bin/python tools/bench_cluster.py --out out/bench_cluster              # the full run
    .venv/bin/python tools/bench_cluster.py --limit 10 --lp-samples 50 --out out/bench_cluster_small
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DECIDED = ("sat", "unsat")


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="out/bench_cluster", help="output folder (default out/bench_cluster)")
    p.add_argument("--workers", type=int, default=2, help="workers of the local cluster (default 2)")
    p.add_argument("--limit", type=int, default=None, help="only the first N of the 30 mnistfc rows")
    p.add_argument("--timeout-scale", type=float, default=1.0, help="multiply every instance's timeout")
    p.add_argument("--one-worker", action="store_true", help="also run the bench on a 1-worker local cluster")
    p.add_argument("--lp-samples", type=int, default=200, help="VNN LP validation images (default 200)")
    p.add_argument("--skip", choices=("bench", "lp"), action="append", default=[], help="leave a part out")
    p.add_argument("--no-longest-first", action="store_true",
                   help="cluster runs start the rows in file order, not longest first by the sequential run's seconds")
    return p.parse_args(argv)


def _load() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def mnistfc_rows(limit=None) -> list[tuple[str, str, float]]:
    from vnnx.io.vnnlib import read_instances_csv

    rows = [(str(o), str(s), t) for o, s, t in read_instances_csv(SHARED / "benchmarks" / "mnistfc" /
                                                                  "mnistfc_instances.csv")
            if "256x2" in Path(o).name]
    return rows[:limit] if limit is not None else rows


def compare(a: dict, b: dict) -> dict:
    """Verdicts of two runs keyed by (onnx, vnnlib): flips (sat against unsat: a wrong answer in
    one of them), agreements (timeout and unknown are the same: undecided), and the rows decided
    in one run only (time-bound, not wrong)."""
    undecided = lambda v: "undecided" if v not in DECIDED else v  # noqa: E731
    keys = sorted(set(a) | set(b))
    flips = [k for k in keys if {a.get(k), b.get(k)} == {"sat", "unsat"}]
    same = sum(undecided(a.get(k)) == undecided(b.get(k)) for k in keys)
    one_sided = [k for k in keys if (a.get(k) in DECIDED) != (b.get(k) in DECIDED)]
    return {"rows": len(keys), "missing": [k for k in keys if k not in a or k not in b], "flips": flips,
            "equal": same, "decided_in_one_run_only": one_sided}


def _verdicts(path: Path) -> dict:
    return {(r["onnx"], r["vnnlib"]): r["verdict"] for r in csv.DictReader(open(path))}


def bench_part(args, out: Path) -> dict:
    from vnnx.bench import run_benchmark
    from vnnx.cli import relaxations_for
    from vnnx.executor import ExecutorSpec
    from vnnx.io.vnnlib import write_instances_csv

    rows = mnistfc_rows(args.limit)
    inst = out / "mnistfc_256x2.csv"
    write_instances_csv(inst, rows)
    res = {"instances": len(rows), "timeout_scale": args.timeout_scale}
    runs = [("sequential", None), (f"local-cluster {args.workers}", ExecutorSpec(local_cluster=args.workers))]
    if args.one_worker:
        runs.append(("local-cluster 1", ExecutorSpec(local_cluster=1)))
    for name, spec in runs:
        csv_path = out / f"bench_{name.replace(' ', '_')}.csv"
        load0, t0 = _load(), time.perf_counter()
        # The cluster runs start the rows longest first, by the sequential run's seconds.
        prior = None if spec is None or args.no_longest_first else res["sequential"]["csv"]
        summary = run_benchmark(str(inst), out_csv=str(csv_path), timeout_scale=args.timeout_scale,
                                relaxations=relaxations_for("capm"), executor=spec, progress=True,
                                longest_first=prior)
        wall = time.perf_counter() - t0
        res[name] = {"wall_s": round(wall, 2), "counts": dict(summary.counts()), "load_before": load0,
                     "load_after": _load(), "sum_row_seconds": round(sum(r["seconds"] for r in summary.rows), 2),
                     "csv": str(csv_path)}
        print(f"{name}: {wall:.1f} s {dict(summary.counts())} load {load0} -> {_load()}", flush=True)
    seq = _verdicts(Path(res["sequential"]["csv"]))
    for name, _ in runs[1:]:
        res[name]["ratio_to_sequential"] = round(res[name]["wall_s"] / res["sequential"]["wall_s"], 3)
        res[name]["against_sequential"] = compare(seq, _verdicts(Path(res[name]["csv"])))
    return res


def overhead_part(args) -> dict:
    """Per-task overhead of an isolated task on the local cluster (a trivial task, 20 times), and
    a fresh interpreter's import of vnnx.bench (what a task would pay without the zygote)."""
    from vnnx.bench import _typed   # a trivial function of vnnx.bench: its zygote preloads that world
    from vnnx.executor import ExecutorSpec, Task, open_executor

    res = {}
    with open_executor(ExecutorSpec(local_cluster=args.workers)) as ex:
        # The first task per worker starts its zygote (imports vnnx.bench's world): timed apart.
        warm = [Task(f"warm-{i}", _typed, ({},)) for i in range(args.workers)]
        t0 = time.perf_counter()
        list(ex.run(warm))
        res["first_task_per_worker_s"] = round(time.perf_counter() - t0, 3)
        tasks = [Task(f"noop-{i}", _typed, ({},)) for i in range(20)]
        t0 = time.perf_counter()
        outcomes = list(ex.run(tasks))
        wall = time.perf_counter() - t0
    res["noop_tasks"] = len(tasks)
    res["noop_wall_s"] = round(wall, 3)
    res["per_task_s_in_worker"] = round(sum(o.seconds for o in outcomes) / len(outcomes), 4)
    res["per_task_s_throughput"] = round(wall * args.workers / len(tasks), 4)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import vnnx.bench"], check=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
        times.append(time.perf_counter() - t0)
    res["fresh_import_vnnx_bench_s"] = round(min(times), 3)
    print(f"overhead: {res}", flush=True)
    return res


def lp_part(args) -> dict:
    import numpy as np

    from vnnx.data import fit_to_input, mnist_split
    from vnnx.io.onnx import load_onnx, to_network
    from vnnx_plugins.vnn_lp import SparsifyOptions, sparsify

    _, ev = mnist_split(SHARED / "data" / "mnist", args.lp_samples)
    x = fit_to_input(ev.x, 784).astype(np.float64)[:args.lp_samples]
    y = ev.y[:args.lp_samples]
    network = to_network(load_onnx(SHARED / "networks" / "eran-mnist" / "mnist_relu_9_100.onnx"))
    res = {"network": "mnist_relu_9_100", "epsilon": 0.0, "samples": int(len(x))}
    for name, kw in (("sequential", {}), (f"local-cluster {args.workers}", {"local_cluster": args.workers})):
        load0, t0 = _load(), time.perf_counter()
        _, report = sparsify(network, x, y, SparsifyOptions(progress=False, **kw))
        wall = time.perf_counter() - t0
        res[name] = {"wall_s": round(wall, 2), "lp_seconds": round(sum(r.lp_seconds for r in report.layers), 2),
                     "l1_after": [r.l1_after for r in report.layers],
                     "formulations": [r.formulation for r in report.layers],
                     "guarantee": bool(report.guarantee["passed"]), "load_before": load0, "load_after": _load()}
        print(f"vnn-lp {name}: {wall:.1f} s, L1 {[round(v, 4) for v in res[name]['l1_after']]}", flush=True)
    seq, par = res["sequential"], res[f"local-cluster {args.workers}"]
    res["same_l1"] = bool(np.allclose(seq["l1_after"], par["l1_after"], rtol=1e-9, atol=1e-12))
    res["max_rel_l1_diff"] = float(max(abs(a - b) / max(abs(a), 1e-12)
                                       for a, b in zip(seq["l1_after"], par["l1_after"])))
    res["ratio_to_sequential"] = round(par["wall_s"] / seq["wall_s"], 3)
    return res


def table(res: dict, workers: int) -> str:
    lines = [f"Run {res['date']} on {res['machine']}; load average {res['load_start']} at the start, "
             f"{res['load_end']} at the end.", ""]
    b = res.get("bench")
    if b:
        lines += ["| mnistfc 256x2 | instances | wall s | ratio | counts | flips | equal (timeout = unknown) | "
                  "decided in one run only |", "|---|---|---|---|---|---|---|---|"]
        for name in [k for k in b if isinstance(b[k], dict) and "wall_s" in b[k]]:
            r = b[name]
            cmp = r.get("against_sequential")
            lines.append(f"| {name} | {b['instances']} | {r['wall_s']} | {r.get('ratio_to_sequential', 1.0)} | "
                         f"{r['counts']} | {len(cmp['flips']) if cmp else '-'} | "
                         f"{cmp['equal'] if cmp else '-'} | {len(cmp['decided_in_one_run_only']) if cmp else '-'} |")
    o = res.get("overhead")
    if o:
        lines += ["", f"Per-task overhead ({workers} workers): {o['per_task_s_in_worker']} s per trivial isolated task "
                      f"inside the worker (fork from the zygote, pickles), {o['per_task_s_throughput']} s of worker "
                      f"time per task end to end; first task per worker (zygote start) {o['first_task_per_worker_s']} s; "
                      f"a fresh interpreter importing vnnx.bench: {o['fresh_import_vnnx_bench_s']} s."]
    lp = res.get("lp")
    if lp:
        seq, par = lp["sequential"], lp[f"local-cluster {workers}"]
        lines += ["", "| VNN LP mnist_relu_9_100, ε 0 | samples | wall s | LP s | L1 per layer equal | ratio |",
                  "|---|---|---|---|---|---|",
                  f"| sequential | {lp['samples']} | {seq['wall_s']} | {seq['lp_seconds']} | - | 1.0 |",
                  f"| local-cluster {workers} | {lp['samples']} | {par['wall_s']} | {par['lp_seconds']} | "
                  f"{lp['same_l1']} (max rel. diff {lp['max_rel_l1_diff']:.1e}) | {lp['ratio_to_sequential']} |"]
    return "\n".join(lines)


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)
    args = _args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = {"date": time.strftime("%Y-%m-%d %H:%M"), "load_start": _load(),
           "machine": f"{platform.node() or 'host'}: {os.cpu_count()} cores, Python {platform.python_version()}",
           "args": vars(args)}
    if "bench" not in args.skip:
        res["bench"] = bench_part(args, out)
        res["overhead"] = overhead_part(args)
    if "lp" not in args.skip:
        res["lp"] = lp_part(args)
    res["load_end"] = _load()
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    print(table(res, args.workers))
    bad = res.get("bench", {}).get(f"local-cluster {args.workers}", {}).get("against_sequential", {}).get("flips")
    return 1 if bad or (res.get("lp") and not res["lp"]["same_l1"]) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
