#!/usr/bin/env python
"""Benchmark `vnnx verify` on the VNN-COMP 2021 benchmarks in ../shared and record the results.

Suites (each a subset of an instances.csv, with the instances' own VNN-COMP timeouts):
  mnistfc-256x2   all 30 instances of mnist-net_256x2
  acasxu-1_1      properties 1-4 on ACASXU_run2a_1_1 (the issue's target), plus 5-10 with --all
  verivital       all 20 Convnet_maxpool instances
Writes out/bench/<suite>.csv (per instance) and appends a dated table to docs/benchmarks.md.

Run:  .venv/bin/python tools/bench_vnncomp.py [--suites mnistfc-256x2 acasxu-1_1 verivital]
      [--timeout-scale 1.0] [--limit N] [--no-docs]
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import tempfile
from pathlib import Path

import vnnx  # noqa: F401
from vnnx.bench import run_benchmark
from vnnx.cli import relaxations_for
from vnnx.io.vnnlib import read_instances_csv, write_instances_csv

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks"

SUITES = {
    "mnistfc-256x2": ("mnistfc/mnistfc_instances.csv", lambda onnx, spec: "256x2" in onnx.name),
    "acasxu-1_1": ("acasxu/acasxu_instances.csv",
                   lambda onnx, spec: "_1_1_batch" in onnx.name and spec.name in
                   {"prop_1.vnnlib", "prop_2.vnnlib", "prop_3.vnnlib", "prop_4.vnnlib"}),
    "acasxu-1_1-all": ("acasxu/acasxu_instances.csv", lambda onnx, spec: "_1_1_batch" in onnx.name),
    "verivital": ("verivital/verivital_instances.csv", lambda onnx, spec: True),
    "test": ("test/test_instances.csv", lambda onnx, spec: True),
    # VNN-COMP 2022: two sat instances vnnx once answered 'unsat' (issue 16).
    "collins-sample": ("collins_rul_cnn_sample/instances.csv", lambda onnx, spec: True),
}


def verdict_flips(rows: list[dict], old_csv: Path) -> list[str]:
    """Instances whose verdict went from sat to unsat or back against an earlier results CSV
    (the same suite run by another version): each is a wrong verdict of one of the two."""
    import csv

    if not old_csv.is_file():
        return [f"no earlier results at {old_csv}"]
    old = {(Path(r["onnx"]).name, Path(r["vnnlib"]).name): r["verdict"] for r in csv.DictReader(open(old_csv))}
    flips = []
    for r in rows:
        before = old.get((Path(r["onnx"]).name, Path(r["vnnlib"]).name))
        if {before, r["verdict"]} == {"sat", "unsat"}:
            flips.append(f"{Path(r['onnx']).name} {Path(r['vnnlib']).name}: {before} -> {r['verdict']}")
    return flips


def machine() -> str:
    return f"{platform.node() or 'host'}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, " \
           f"Python {platform.python_version()}"


def crosscheck_unsat(rows: list[dict]) -> int:
    """Attack every 'unsat' instance with a heavier PGD than the verifier's own (another seed,
    200 restarts x 100 steps). Returns how many it refutes with an onnxruntime-checked point:
    each would be a wrong verdict (a sound verifier must give 0)."""
    from vnnx.attack import pgd_spec
    from vnnx.io.onnx import load_onnx, to_network
    from vnnx.io.vnnlib import read_vnnlib
    from vnnx.verify import check_counterexample

    wrong, models = 0, {}
    for r in rows:
        if r["verdict"] != "unsat":
            continue
        if r["onnx"] not in models:
            model = load_onnx(r["onnx"])
            models[r["onnx"]] = (model, to_network(model).to_torch())
        model, module = models[r["onnx"]]
        spec = read_vnnlib(r["vnnlib"], model.n_inputs, model.n_outputs)
        for prop in spec.properties:
            res = pgd_spec(module, prop.x_lower, prop.x_upper, prop.clauses, restarts=200, steps=100, seed=12345)
            if res.x is not None and res.margin <= 0 and check_counterexample(model, prop, res.x) is not None:
                wrong += 1
                print(f"WRONG VERDICT: {r['onnx']} {r['vnnlib']} is unsat but PGD found a checked counterexample")
                break
    return wrong


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", nargs="+", default=["mnistfc-256x2", "acasxu-1_1", "verivital"],
                    choices=sorted(SUITES))
    ap.add_argument("--timeout-scale", type=float, default=1.0)
    ap.add_argument("--limit", type=int, default=None, help="first N instances of each suite")
    ap.add_argument("--maxpool", default="capm", choices=("capm", "lirpa"))
    ap.add_argument("--jobs", type=int, default=1, help="instances at once (worker processes, 1 thread each)")
    ap.add_argument("--shared", default=str(SHARED), help="the VNN-COMP 2021 benchmarks folder")
    ap.add_argument("--out-dir", default=str(ROOT / "out" / "bench"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "benchmarks.md"), help="the results page to append to")
    ap.add_argument("--no-crosscheck", dest="crosscheck", action="store_false",
                    help="skip attacking every 'unsat' with a heavier PGD (another seed, 200 restarts)")
    ap.add_argument("--no-docs", action="store_true", help="do not append to docs/benchmarks.md")
    ap.add_argument("--compare-dir", default=None,
                    help="a results folder of an earlier run (another version): print every instance whose "
                         "verdict changed between sat and unsat; exit 1 if any did")
    from vnnx.executor import add_executor_flags, executor_spec

    add_executor_flags(ap, jobs=False)   # --scheduler / --local-cluster: the instances on a Dask cluster
    args = ap.parse_args(argv)
    spec = executor_spec(args)
    where = (f" --scheduler {args.scheduler}" if args.scheduler else "") + \
        (f" --local-cluster {args.local_cluster}" if args.local_cluster else "")
    from vnnx.cli import _set_threads

    _set_threads()  # one torch thread unless VNNX_THREADS says otherwise, as the CLI does

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    all_flips = []
    for suite in args.suites:
        csv_rel, keep = SUITES[suite]
        rows = [(str(o), str(s), t) for o, s, t in read_instances_csv(Path(args.shared) / csv_rel) if keep(o, s)]
        with tempfile.TemporaryDirectory() as tmp:
            sub = Path(tmp) / f"{suite}.csv"
            write_instances_csv(sub, rows)
            summary = run_benchmark(str(sub), out_csv=str(out_dir / f"{suite}.csv"), timeout_scale=args.timeout_scale,
                                    relaxations=relaxations_for(args.maxpool), limit=args.limit,
                                    executor=spec, progress=spec.kind == "in-process")
        print(f"\n== {suite}\n{summary.table()}")
        contradicted = crosscheck_unsat(summary.rows) if args.crosscheck else None
        if args.compare_dir:
            flips = verdict_flips(summary.rows, Path(args.compare_dir) / f"{suite}.csv")
            print(f"sat/unsat flips against {args.compare_dir}: {len(flips)}" + "".join(f"\n  {f}" for f in flips))
            all_flips += flips
        c = summary.counts()
        solved = [r["seconds"] for r in summary.rows if r["verdict"] in ("sat", "unsat")]
        within = sum(1 for r in summary.rows if r["verdict"] in ("sat", "unsat") and r["seconds"] <= r["timeout"])
        lines.append(f"| {suite} | {len(summary.rows)} | {c['sat']} | {c['unsat']} | {c['unknown']} | {c['timeout']} | "
                     f"{c['error']} | {within} | {sum(solved) / max(len(solved), 1):.2f} | {max(solved, default=0):.1f} | "
                     f"{'not run' if contradicted is None else contradicted} |")
    if not args.no_docs:
        doc = Path(args.docs)
        head = "" if doc.exists() else "# Benchmark results\n\nMeasured by `tools/bench_vnncomp.py`; newest last.\n"
        with open(doc, "a") as fh:
            fh.write(head + f"\n## {dt.date.today().isoformat()} — {machine()}\n\n"
                     f"`tools/bench_vnncomp.py --suites {' '.join(args.suites)} --timeout-scale {args.timeout_scale}"
                     f"{'' if args.limit is None else f' --limit {args.limit}'} --jobs {args.jobs}{where}` (maxpool: {args.maxpool}; with --jobs N, N instances run at once, one thread each)\n\n"
                     "| suite | instances | sat | unsat | unknown | timeout | error | answered in time | "
                     "mean s (solved) | max s (solved) | unsat contradicted by a 200-restart PGD |\n"
                     "|---|---|---|---|---|---|---|---|---|---|---|\n"
                     + "\n".join(lines) + "\n")
        print(f"\nappended to {doc}")
    if all_flips:
        raise SystemExit(1)


if __name__ == "__main__":
    from _sweep import cli

    raise SystemExit(cli(main, "bench_vnncomp"))
