#!/usr/bin/env python
"""Benchmark of the VNN LP pass (issue 4) on ERAN's MNIST MLPs, with the paper's protocol.

Protocol (Baninajjar et al., ICML 2024, §5): the first 400 MNIST test images, 200 for
validation (the LP's samples) and the next 200 for test. For each network and ε:

* sparsify with this plugin (``formulation='auto'``: per-neuron LPs at ε = 0);
* sparsify with the paper's single coupled LP per layer (``formulation='paper'``), the same
  solver in the same run, as the timing baseline (``--paper-time-limit`` caps each LP; a capped
  layer keeps its weights and its time is reported as a lower bound);
* check the guarantee (the plugin does it in onnxruntime; this script re-checks the direct
  pattern comparison on all 200 validation samples);
* verified robustness of the original, the VNN network and MBP pruned to the same per-layer
  non-zero counts, at each δ, with CROWN (the paper used DeepPoly; both back-substitute linear
  bounds), and accuracy on the 200 test images.

Results go to ``--out`` (JSON, one record per network and ε, plus a markdown table). Example::

    .venv/bin/python tools/bench_vnn_lp.py --nets mnist_relu_3_50 --eps 0,0.1 --out out/bench_vnn_lp

Each (network, ε) is a task of :mod:`vnnx.executor` (``--jobs N``, ``--scheduler``,
``--local-cluster N``; default: one after another in this process); the records are written in
the sequential order. With ``--jobs N`` give ``--workers 1`` (each task would start its own LP pool).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def _args(argv=None) -> argparse.Namespace:
    from vnnx.executor import add_executor_flags

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nets", default="mnist_relu_3_50,mnist_relu_3_100,mnist_relu_6_100,mnist_relu_9_100",
                   help="ERAN network names in ../shared/networks/eran-mnist (comma-separated)")
    p.add_argument("--eps", default="0,0.1", help="ε values (relative mode, as the paper), comma-separated")
    p.add_argument("--deltas", default="0.01,0.02,0.03,0.05", help="L∞ radii for verified robustness")
    p.add_argument("--n-val", type=int, default=200, help="validation images (the first ones)")
    p.add_argument("--n-test", type=int, default=200, help="test images (the next ones)")
    p.add_argument("--workers", type=int, default=2, help="processes for the per-neuron LPs")
    p.add_argument("--paper", choices=("all", "eps0", "none"), default="eps0",
                   help="run the paper's coupled-LP baseline for every ε, only ε = 0, or never")
    p.add_argument("--paper-time-limit", type=float, default=300.0, help="seconds per baseline LP")
    p.add_argument("--time-limit", type=float, default=600.0, help="seconds per LP of the plugin")
    p.add_argument("--out", default="out/bench_vnn_lp", help="output folder")
    p.add_argument("--clip", default="0,1",
                   help="input domain LO,HI that every δ-box is clipped to, or 'none' (default 0,1)")
    p.add_argument("--reevaluate", action="store_true",
                   help="no sparsification: re-evaluate the networks of --out's results.json (the "
                        "written VNN ONNX, MBP rebuilt from the recorded non-zero counts) under --clip, "
                        "stored as evaluation_clip-<LO,HI|none>, with the verified-robustness gain ratios")
    add_executor_flags(p)
    return p.parse_args(argv)


def _clip(text: str):
    if text.strip().lower() == "none":
        return None
    lo, hi = (float(v) for v in text.split(","))
    return (lo, hi)


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def main(argv=None) -> int:
    import torch

    torch.set_num_threads(1)
    from vnnx.data import fit_to_input, mnist_split
    from vnnx.executor import executor_spec
    from _sweep import ordered

    args = _args(argv)
    spec = executor_spec(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _, ev = mnist_split(SHARED / "data" / "mnist", args.n_val + args.n_test)
    x = fit_to_input(ev.x, 784).astype(np.float64)
    xv, yv = x[:args.n_val], ev.y[:args.n_val]
    xt, yt = x[args.n_val:], ev.y[args.n_val:]
    deltas = _floats(args.deltas)
    clip = _clip(args.clip)
    records = []
    results_path = out / "results.json"
    if results_path.is_file():
        records = json.loads(results_path.read_text())
    if args.reevaluate:
        return reevaluate(records, out, xt, yt, deltas, clip, args.clip, results_path)
    work = [(name, eps) for name in [n.strip() for n in args.nets.split(",") if n.strip()] for eps in _floats(args.eps)]
    settings = {k: getattr(args, k) for k in ("workers", "time_limit", "paper", "paper_time_limit")}
    jobs = [(name, str(SHARED / "networks" / "eran-mnist" / f"{name}.onnx"), eps, xv, yv, xt, yt, deltas, clip,
             settings, str(out.resolve())) for name, eps in work]
    for (name, eps), rec in zip(work, ordered(net_eps_record, jobs, [f"bench_vnn_lp:{n}:{e:g}" for n, e in work],
                                              spec, desc="bench_vnn_lp")):
        rec["date"] = time.strftime("%Y-%m-%d")
        print(f"{name} eps={eps:g}: vnn {rec['vnn_seconds']:.1f}s nnz {rec['nnz_before']} -> "
              f"{rec['nnz_after']} guarantee {rec['guarantee_passed']} {rec['report']['guarantee']['all_samples']}",
              flush=True)
        if "paper_seconds" in rec:
            print(f"  paper LP baseline: {rec['paper_seconds']:.1f}s (LP {rec['paper_lp_seconds']:.1f}s) "
                  f"status {rec['paper_status']}", flush=True)
        rob = rec["evaluation"]["robustness"]
        print("  crown verified %: " + "; ".join(
            f"{k} " + " ".join(f"{100 * rob[k]['crown'][d]['verified']:.1f}" for d in deltas) for k in rob),
            flush=True)
        records = [r for r in records if (r["network"], r["epsilon"]) != (name, eps)] + [rec]
        _write(results_path, records)
    (out / "table.md").write_text(table(records, deltas))
    print(table(records, deltas))
    return 0


def net_eps_record(name: str, onnx_path: str, eps: float, xv, yv, xt, yt, deltas: list, clip, settings: dict,
                   out: str) -> dict:
    """One (network, ε) of the benchmark (an executor task): sparsify (writing ``out``/NAME_epsE.onnx),
    the paper's baseline where ``settings['paper']`` asks for it, MBP, and the CROWN evaluation;
    its results record."""
    import torch

    from vnnx.io.onnx import load_onnx, to_network
    from vnnx_plugins.vnn_lp import SparsifyOptions, prune_magnitude, sparsify
    from vnnx_plugins.vnn_lp.evaluate import evaluate

    torch.set_num_threads(1)
    network = to_network(load_onnx(onnx_path))
    rec = {"network": name, "epsilon": eps, "n_val": len(xv), "n_test": len(xt),
           "date": time.strftime("%Y-%m-%d"), "workers": settings["workers"]}
    opts = SparsifyOptions(epsilon=eps, workers=settings["workers"], time_limit=settings["time_limit"], progress=False)
    t0 = time.perf_counter()
    sparse, report = sparsify(network, xv, yv, opts, out=Path(out) / f"{name}_eps{eps:g}.onnx")
    rec["vnn_seconds"] = time.perf_counter() - t0
    rec["report"] = report.as_dict()
    rec["guarantee_passed"] = bool(report.guarantee["passed"])
    rec["nnz_before"], rec["nnz_after"] = report.nnz_before, report.nnz_after
    if settings["paper"] == "all" or (settings["paper"] == "eps0" and eps == 0):
        popts = SparsifyOptions(epsilon=eps, formulation="paper", time_limit=settings["paper_time_limit"],
                                progress=False)
        t0 = time.perf_counter()
        _, prep = sparsify(network, xv, yv, popts)
        rec["paper_seconds"] = time.perf_counter() - t0
        rec["paper_lp_seconds"] = sum(r.lp_seconds for r in prep.layers)
        rec["paper_status"] = [r.status for r in prep.layers]
        rec["paper_capped"] = any("time_limit" in r.message for r in prep.layers)
        rec["paper_l1_after"] = [r.l1_after for r in prep.layers]
        rec["vnn_l1_after"] = [r.l1_after for r in report.layers]
    mbp = prune_magnitude(network, keep={r.index: r.nnz_after for r in report.layers})
    t0 = time.perf_counter()
    rec["evaluation"] = evaluate({"original": network, "vnn": sparse, "mbp": mbp}, xt, yt, deltas,
                                 ("crown",), clip=clip)
    rec["eval_seconds"] = time.perf_counter() - t0
    return rec


def reevaluate(records: list, out: Path, xt, yt, deltas, clip, clip_text: str, results_path: Path) -> int:
    from vnnx.io.onnx import load_onnx, to_network
    from vnnx_plugins.vnn_lp import prune_magnitude
    from vnnx_plugins.vnn_lp.evaluate import evaluate

    key = "evaluation_clip-" + clip_text.strip().lower()
    lines = [f"CROWN verified robustness (%) on {len(xt)} test images, δ-boxes clipped to {clip_text}; "
             "gain = VNN / original", "",
             "| network | ε | " + " | ".join(f"δ={d:g}: orig / VNN / MBP (gain)" for d in deltas) + " |",
             "|---|---|" + "---|" * len(deltas)]
    for rec in records:
        name, eps = rec["network"], rec["epsilon"]
        vnn_path = out / f"{name}_eps{eps:g}.onnx"
        if not vnn_path.is_file():
            print(f"{name} eps={eps:g}: {vnn_path} is missing, skipped", flush=True)
            continue
        network = to_network(load_onnx(SHARED / "networks" / "eran-mnist" / f"{name}.onnx"))
        sparse = to_network(load_onnx(vnn_path))
        mbp = prune_magnitude(network, keep={r["index"]: r["nnz_after"] for r in rec["report"]["layers"]})
        rec[key] = evaluate({"original": network, "vnn": sparse, "mbp": mbp}, xt, yt, deltas, ("crown",), clip=clip)
        rob = rec[key]["robustness"]
        cells = []
        for d in deltas:
            o, v, m = (100 * rob[k]["crown"][d]["verified"] for k in ("original", "vnn", "mbp"))
            gain = f"×{v / o:.2f}" if o > 0 else "–"
            cells.append(f"{o:.1f} / {v:.1f} / {m:.1f} ({gain})")
        lines.append(f"| {name} | {eps:g} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
        _write(results_path, records)
    text = "\n".join(lines) + "\n"
    (out / f"table_{key}.md").write_text(text)
    print(text)
    return 0


def _write(path: Path, records: list) -> None:
    from vnnx_plugins.vnn_lp.report import _plain

    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(_plain(records), indent=1) + "\n")
    os.replace(tmp, path)


def table(records: list, deltas: list[float]) -> str:
    """Markdown: the paper's Table 1 (verified % and mean CROWN seconds, original vs VNN, and
    MBP at the same sparsity) and the timing against the paper's LP."""
    head = "| network | ε | nnz orig → VNN | acc orig / VNN / MBP | " + " | ".join(
        f"δ={d:g}: orig / VNN / MBP (%)" for d in deltas) + " | CROWN s/img orig / VNN | guarantee |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in records:
        ev = r["evaluation"]
        rob = ev["robustness"]

        def v(k, d):
            by = rob[k]["crown"]
            e = by.get(d, by.get(str(d)))
            return e

        acc = ev["accuracy"]
        cells = []
        for d in deltas:
            cells.append(" / ".join(f"{100 * v(k, d)['verified']:.1f}" for k in ("original", "vnn", "mbp")))
        secs = [np.mean([v(k, d)["seconds"] for d in deltas]) for k in ("original", "vnn")]
        g = r["report"]["guarantee"]
        lines.append(f"| {r['network']} | {r['epsilon']:g} | {r['nnz_before']} → {r['nnz_after']} | "
                     f"{acc['original']:.3f} / {acc['vnn']:.3f} / {acc['mbp']:.3f} | " + " | ".join(cells) +
                     f" | {secs[0]:.4f} / {secs[1]:.4f} | {'passed' if g['passed'] else 'FAILED'} "
                     f"({g['all_samples'].get('kept_ok', '?')}/{g['all_samples'].get('given', '?')}) |")
    lines.append("")
    lines.append("| network | ε | VNN (this plugin) s | paper's coupled LP s | speed-up | same L1 |")
    lines.append("|---|---|---|---|---|---|")
    for r in records:
        if "paper_seconds" not in r:
            continue
        same = np.allclose(r["paper_l1_after"], r["vnn_l1_after"], rtol=1e-4, atol=1e-6)
        capped = " (capped: ≥)" if r.get("paper_capped") else ""
        lines.append(f"| {r['network']} | {r['epsilon']:g} | {r['vnn_seconds']:.1f} | {r['paper_seconds']:.1f}{capped} | "
                     f"{r['paper_seconds'] / r['vnn_seconds']:.1f}× | {'yes' if same else 'no'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    from _sweep import cli

    sys.exit(cli(main, "bench_vnn_lp"))
