#!/usr/bin/env python
"""Branching rules of the activation branch and bound (issue 20), side by side in one run.

For each instance (default: the mnistfc 256x2 rows of ../shared/benchmarks whose clauses CROWN
leaves open), every clause CROWN does not refute is searched by :class:`vnnx.graph_bab.GraphBab`
once per branching rule (``--rules``, default ``babsr fsb``), each with the same time limit:
status, domains bounded, seconds, domains per second. Prints a table and the per-rule totals
(clauses closed, domains to close the clauses every rule closed, domains per second); writes
``--out`` (JSON) with every row.

    .venv/bin/python tools/bench_branching.py --limit 30 --time 30 --out out/branching.json
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "benchmarks"


def open_clauses(verifier, prop):
    """The clauses of ``prop`` that CROWN does not refute (index, (A, b))."""
    import numpy as np

    from vnnx.verify import REFUTE_MARGIN

    out = []
    engine = verifier.bound_engine()
    for i, (a, b) in enumerate(prop.clauses):
        if not len(b):
            continue
        lower = engine.compute(prop.x_lower, prop.x_upper, "crown", np.atleast_2d(a)).lower - b
        if not np.any(lower > REFUTE_MARGIN):
            out.append((i, (a, b)))
    return out


def run_rule(verifier, prop, clause, rule: str, seconds: float) -> dict:
    from vnnx.graph_bab import GraphBab
    from vnnx.stages.relu_bab import RELU_BAB_BATCH, RELU_BAB_ITERATIONS, RELU_BAB_MAX_DOMAINS
    from vnnx.verify import REFUTE_MARGIN

    a, b = clause
    bab = GraphBab(verifier.bab_engine()[0], prop.x_lower, prop.x_upper, a, b, margin=REFUTE_MARGIN,
                   batch=RELU_BAB_BATCH, iterations=RELU_BAB_ITERATIONS, max_domains=RELU_BAB_MAX_DOMAINS,
                   check=lambda x: verifier.witness(prop, x) is not None, branching=rule)
    t0 = time.monotonic()
    res = bab.run(None, t0 + seconds)
    took = time.monotonic() - t0
    return {"rule": rule, "status": res.status, "domains": res.domains, "seconds": round(took, 3),
            "domains_per_s": round(res.domains / max(took, 1e-9), 1)}


def main(argv=None) -> int:
    from vnnx.errors import VnnxError
    from vnnx.io.onnx import load_onnx
    from vnnx.io.vnnlib import read_instances_csv, read_vnnlib
    from vnnx.verify import Verifier

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--instances", default=str(SHARED / "mnistfc" / "mnistfc_instances.csv"))
    ap.add_argument("--match", default="256x2", help="only rows whose network name contains this")
    ap.add_argument("--limit", type=int, default=None, help="first N matching rows")
    ap.add_argument("--rules", nargs="+", default=["babsr", "fsb"])
    ap.add_argument("--time", type=float, default=30.0, help="seconds per clause and rule (default 30)")
    ap.add_argument("--out", default=None, help="JSON file of every row")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    try:
        rows_in = [r for r in read_instances_csv(args.instances) if args.match in Path(r[0]).name][:args.limit]
    except VnnxError as exc:
        print(f"bench_branching: error: {exc}", file=sys.stderr)
        return 2
    rows, verifiers = [], {}
    print(f"{'instance':32s} {'clause':>6s} " + " ".join(f"{r:>26s}" for r in args.rules))
    for onnx, vnnlib, _ in rows_in:
        if onnx not in verifiers:
            verifiers[onnx] = Verifier(load_onnx(onnx))
        v = verifiers[onnx]
        prop = read_vnnlib(vnnlib, v.n_inputs, v.n_outputs).properties[0]
        for i, clause in open_clauses(v, prop):
            got = [run_rule(v, prop, clause, rule, args.time) for rule in args.rules]
            for g in got:
                rows.append({"onnx": Path(onnx).name, "vnnlib": Path(vnnlib).name, "clause": i, **g})
            print(f"{Path(vnnlib).stem:32s} {i:6d} " +
                  " ".join(f"{g['status']:>8s} {g['domains']:7d} {g['seconds']:7.1f}s" for g in got), flush=True)
    summary = {}
    keys = {(r["vnnlib"], r["onnx"], r["clause"]) for r in rows}
    closed_by_all = [k for k in keys if all(any(r["rule"] == rule and (r["vnnlib"], r["onnx"], r["clause"]) == k
                                                and r["status"] == "unsat" for r in rows) for rule in args.rules)]
    for rule in args.rules:
        mine = [r for r in rows if r["rule"] == rule]
        common = [r for r in mine if (r["vnnlib"], r["onnx"], r["clause"]) in closed_by_all]
        summary[rule] = {"clauses": len(mine), "unsat": sum(r["status"] == "unsat" for r in mine),
                         "sat": sum(r["status"] == "sat" for r in mine),
                         "domains_on_commonly_closed": sum(r["domains"] for r in common),
                         "seconds_on_commonly_closed": round(sum(r["seconds"] for r in common), 2),
                         "domains_per_s": round(sum(r["domains"] for r in mine) /
                                                max(1e-9, sum(r["seconds"] for r in mine)), 1)}
        print(f"{rule}: {summary[rule]}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "machine": platform.platform(),
                                              "args": vars(args), "summary": summary, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
