#!/usr/bin/env python
"""Benchmark of ``vnnx certify`` (issue 21): does a transformed network keep its original's
argmax on L∞ balls around the samples it was built from?

Cases (``--cases``, comma-separated):

* ``vnn``: ERAN's ``mnist_relu_3_50`` sparsified by VNN LP at ε = 0 on the first 200 MNIST test
  images (the protocol of ``tools/bench_vnn_lp.py``), certified against the original on those
  200 validation images;
* ``mbp``: magnitude pruning of the same network to VNN LP's per-layer non-zero counts, on the
  same images;
* ``vericompress``: the shipped compact network ``specs/mnist_demo/vc_compact.onnx`` against its
  backbone ``vc_backbone.onnx`` on the first ``--n`` evaluation images;
* ``rs-prune``: ``vnnx rs-prune --weight-threshold 1e-3 --relus`` of the shipped
  ``specs/mnist_demo/relu_rs.onnx.gz`` (counted on 1000 training images) against its input, on
  the first ``--n`` evaluation images.

Each case runs at every radius of ``--radii`` with ``--timeout`` seconds per sample (same argmax,
inputs clipped to [0, 1]). Results: ``--out``/results.json (one record per case and radius, every
sample's status, time and deciding stage) and table.md. Example::

    OMP_NUM_THREADS=1 nice python tools/bench_certify.py --cases vnn,mbp --radii 0.005,0.01 --timeout 5
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ERAN = SHARED / "networks" / "eran-mnist"
DEMO = ROOT / "specs" / "mnist_demo"


def _args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="vnn,mbp", help="vnn, mbp, vericompress, rs-prune (comma-separated)")
    p.add_argument("--radii", default="0.005,0.01", help="L-inf radii, comma-separated")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per sample")
    p.add_argument("--n", type=int, default=200, help="samples per case (the validation images for vnn/mbp)")
    p.add_argument("--out", default="out/bench_certify", help="output folder")
    return p.parse_args(argv)


def _vnn_and_mbp(out: Path, xv, yv) -> dict:
    """Writes (once) the VNN LP output at ε = 0 and MBP at its non-zero counts."""
    from vnnx.io.onnx import load_onnx, network_to_onnx, to_network
    from vnnx_plugins.vnn_lp import SparsifyOptions, prune_magnitude, sparsify

    vnn, mbp = out / "mnist_relu_3_50_vnn_eps0.onnx", out / "mnist_relu_3_50_mbp.onnx"
    info_path = out / "networks.json"
    if not (vnn.is_file() and mbp.is_file() and info_path.is_file()):
        network = to_network(load_onnx(ERAN / "mnist_relu_3_50.onnx"))
        t0 = time.perf_counter()
        _, report = sparsify(network, xv, yv, SparsifyOptions(epsilon=0.0, workers=1, progress=False), out=vnn)
        keep = {r.index: r.nnz_after for r in report.layers}
        network_to_onnx(prune_magnitude(network, keep=keep), mbp)
        info = {"vnn_seconds": time.perf_counter() - t0, "nnz_before": report.nnz_before,
                "nnz_after": report.nnz_after, "guarantee_passed": bool(report.guarantee["passed"])}
        info_path.write_text(json.dumps(info, indent=1) + "\n")
    return json.loads(info_path.read_text())


def _rs_pruned(out: Path) -> tuple[Path, Path]:
    """``vnnx rs-prune`` of the shipped +RS network, through the command line."""
    import gzip
    import subprocess

    original = out / "relu_rs.onnx"
    pruned = out / "relu_rs_pruned.onnx"
    if not original.is_file():
        original.write_bytes(gzip.decompress((DEMO / "relu_rs.onnx.gz").read_bytes()))
    if not pruned.is_file():
        from vnnx.data import mnist_split, save_npz

        train, _ = mnist_split(SHARED / "data" / "mnist")
        save_npz(out / "train1000.npz", train.x[:1000], train.y[:1000])
        subprocess.run([sys.executable, "-m", "vnnx.cli", "rs-prune", "--onnx", str(original), "--data",
                        str(out / "train1000.npz"), "--out", str(pruned), "--weight-threshold", "1e-3", "--relus"],
                       check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return original, pruned


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)
    from vnnx.certify import certify
    from vnnx.data import mnist_split

    args = _args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, ev = mnist_split(SHARED / "data" / "mnist")
    radii = [float(r) for r in args.radii.split(",") if r.strip()]
    results_path = out / "results.json"
    records = json.loads(results_path.read_text()) if results_path.is_file() else []
    machine = f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, Python {platform.python_version()}"
    for case in [c.strip() for c in args.cases.split(",") if c.strip()]:
        extra = {}
        if case in ("vnn", "mbp"):
            extra = _vnn_and_mbp(out, ev.x[:200].reshape(200, -1).astype(np.float64), ev.y[:200])
            original = ERAN / "mnist_relu_3_50.onnx"
            transformed = out / ("mnist_relu_3_50_vnn_eps0.onnx" if case == "vnn" else "mnist_relu_3_50_mbp.onnx")
        elif case == "vericompress":
            original, transformed = DEMO / "vc_backbone.onnx", DEMO / "vc_compact.onnx"
        elif case == "rs-prune":
            original, transformed = _rs_pruned(out)
        else:
            raise SystemExit(f"unknown case {case!r}")
        x, y = ev.x[:args.n], ev.y[:args.n]
        for radius in radii:
            rep = certify(str(original), str(transformed), x, radius, labels=y, timeout=args.timeout)
            rec = {"case": case, "radius": radius, "timeout": args.timeout, "n": len(x),
                   "date": time.strftime("%Y-%m-%d"), "machine": machine, **extra,
                   "counts": rep.counts(), "seconds": rep.seconds,
                   "decided_by": dict(collections.Counter(s.decided_by or s.verdict for s in rep.samples)),
                   "max_sample_seconds": max(s.seconds for s in rep.samples),
                   "report": rep.as_dict()}
            c = rec["counts"]
            print(f"{case} r={radius:g}: certified {c['certified']} refuted {c['refuted']} unknown "
                  f"{c['unknown']} in {rep.seconds:.1f} s ({rec['decided_by']})", flush=True)
            records = [r for r in records if (r["case"], r["radius"]) != (case, radius)] + [rec]
            tmp = results_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(records, indent=1) + "\n")
            os.replace(tmp, results_path)
    lines = ["| case | radius | n | certified | refuted | unknown | seconds (total) | max s/sample | decided by |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in records:
        c = r["counts"]
        by = ", ".join(f"{k} {v}" for k, v in sorted(r["decided_by"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['case']} | {r['radius']:g} | {r['n']} | {c['certified']} | {c['refuted']} | "
                     f"{c['unknown']} | {r['seconds']:.1f} | {r['max_sample_seconds']:.1f} | {by} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
