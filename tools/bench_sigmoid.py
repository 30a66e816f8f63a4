#!/usr/bin/env python
"""Complete verification of Sigmoid / Tanh MLPs: CROWN, α-CROWN and ``vnnx verify`` (auto: with
the activation branch and bound of :mod:`vnnx.graph_bab`, which splits S-shaped activations) on
L-inf robustness properties of MNIST evaluation images.

The networks are the ones ``tools/train_sigmoid.py`` ships in ``specs/mnist_demo/``; images are
the first ``--images`` correctly classified of MNIST test images 0..999. Every (model, image, ε,
method) row is appended to ``--out`` (CSV) as soon as it is measured; a rerun skips rows already
there (resumable). One core: run it as ``OMP_NUM_THREADS=1 taskset -c 1 nice tools/bench_sigmoid.py``.

Usage::

    tools/bench_sigmoid.py --out out/bench_sigmoid.csv                  # defaults below
    tools/bench_sigmoid.py --models sigmoid_6x100 --images 5 --eps 0.015 --timeout 10
    tools/bench_sigmoid.py --summary out/bench_sigmoid.csv              # the Markdown table

Prints one JSON line per row, then the summary table (verified counts per model, ε and method;
the branch and bound's domains per second).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

METHODS = ("crown", "alpha-crown", "auto")
FIELDS = ("model", "image", "label", "eps", "method", "verdict", "seconds", "domains", "bab_seconds")


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _bab_work(stages: list) -> tuple[int, float]:
    """Domains bounded and seconds spent by the activation branch and bound, from the stage log."""
    dom = sum(int(s.get("domains", 0)) for s in stages if s.get("stage") == "relu-bab")
    sec = sum(float(s.get("seconds", 0.0)) for s in stages if s.get("stage") == "relu-bab")
    return dom, sec


def summary(rows: list[dict]) -> str:
    """Markdown: per model and ε, the number verified (unsat) / falsified (sat) per method, and
    the branch and bound's domains per second under auto."""
    keys = sorted({(r["model"], float(r["eps"])) for r in rows})
    out = ["| model | ε | images | " + " | ".join(f"{m} unsat/sat" for m in METHODS) + " | BaB domains/s |",
           "|---|---|---|" + "---|" * len(METHODS) + "---|"]
    for model, eps in keys:
        sel = [r for r in rows if r["model"] == model and float(r["eps"]) == eps]
        images = len({r["image"] for r in sel})
        cells = []
        for m in METHODS:
            rs = [r for r in sel if r["method"] == m]
            cells.append(f"{sum(r['verdict'] == 'unsat' for r in rs)}/{sum(r['verdict'] == 'sat' for r in rs)}")
        auto = [r for r in sel if r["method"] == "auto"]
        dom = sum(int(r["domains"]) for r in auto)
        sec = sum(float(r["bab_seconds"]) for r in auto)
        rate = f"{dom / sec:.0f}" if sec > 0 else "-"
        out.append(f"| {model} | {eps:g} | {images} | " + " | ".join(cells) + f" | {rate} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="sigmoid_6x100,tanh_6x100",
                   help="comma-separated names of specs/mnist_demo/mnist_NAME.onnx (default sigmoid_6x100,tanh_6x100)")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"), help="MNIST folder")
    p.add_argument("--images", type=int, default=20, help="correctly classified images per model (default 20)")
    p.add_argument("--eps", default="0.01,0.015,0.02", help="comma-separated L-inf radii (default 0.01,0.015,0.02)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per instance and method (default 30)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    p.add_argument("--out", default=str(REPO / "out" / "bench_sigmoid.csv"), help="result CSV (appended, resumable)")
    p.add_argument("--summary", metavar="CSV", help="only print the summary table of this CSV")
    args = p.parse_args(argv)

    from vnnx.errors import VnnxError

    try:
        if args.summary:
            rows = _rows(Path(args.summary))
            if not rows:
                raise VnnxError(f"{args.summary}: no rows")
            print(summary(rows))
            return 0
        return _run(args)
    except VnnxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(args) -> int:
    import numpy as np
    from tqdm import tqdm

    from vnnx.data import mnist_split
    from vnnx.errors import VnnxError
    from vnnx.io.onnx import load_onnx, run_onnxruntime
    from vnnx.io.vnnlib import Spec, robustness_property
    from vnnx.verify import Verifier

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise VnnxError(f"unknown method(s) {', '.join(bad)}; choose from {', '.join(METHODS)}")
    try:
        epsilons = [float(e) for e in args.eps.split(",") if e.strip()]
    except ValueError as exc:
        raise VnnxError(f"--eps: {exc}") from exc
    if args.images < 1 or args.timeout <= 0 or not epsilons:
        raise VnnxError("--images and --timeout must be positive and --eps non-empty")
    _, evaluation = mnist_split(args.data)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["model"], r["image"], float(r["eps"]), r["method"]) for r in _rows(out)}
    new_file = not out.exists() or out.stat().st_size == 0
    with out.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new_file:
            writer.writeheader()
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            path = REPO / "specs" / "mnist_demo" / f"mnist_{name}.onnx"
            if not path.exists():
                raise VnnxError(f"{path}: no such model (tools/train_sigmoid.py writes it)")
            model = load_onnx(path)
            x = evaluation.x.reshape(len(evaluation), -1).astype(np.float32)
            pred = run_onnxruntime(model, x).argmax(1)
            images = [int(i) for i in np.flatnonzero(pred == evaluation.y)[:args.images]]
            jobs = [(i, e, m) for i in images for e in epsilons for m in methods
                    if (name, str(i), e, m) not in done]
            for i, eps, method in tqdm(jobs, desc=name, leave=False):
                label = int(evaluation.y[i])
                prop = robustness_property(x[i], eps, label, 10)
                spec = Spec(f"{name}/img{i}/eps{eps:g}", prop.x_lower.size, 10, [prop])
                res = Verifier(model).verify(spec, method, args.timeout)
                dom, bab_sec = _bab_work(res.stages)
                row = {"model": name, "image": i, "label": label, "eps": eps, "method": method,
                       "verdict": res.verdict, "seconds": round(res.seconds, 3), "domains": dom,
                       "bab_seconds": round(bab_sec, 3)}
                writer.writerow(row)
                fh.flush()
                os.fsync(fh.fileno())
                print(json.dumps(row), flush=True)
    print(summary(_rows(out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
