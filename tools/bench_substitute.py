#!/usr/bin/env python
"""Benchmark local substitutes (issue 8) at CPU scale: the paper's Table 1, shrunk.

For each anchor (the first --count evaluation images) the d_bnd of the network f is found by
the MILP binary search; then for each kind and γ a substitute is built (Algorithm 1) and its
d_bnd found the same way. Reported per (kind, γ):

* mean relative d_bnd difference |d_sub - d_f| / d_f, over anchors where both searches completed;
* pruning time per run (Algorithm 1 after PGD);
* mean time of one MILP solve on f and on the substitute at the SAME ε values (those f's
  search visited), so that the speed-up is paired, not an artefact of different ε (a solve:
  CROWN big-M bounds on vnnx's graph engine, ``vnnx.engine.ChainBounds``, then the MILP);
* ReLUs kept, and how many anchors collapsed (con) or were incomplete.

With ``--engine verify`` every d_bnd search decides each ε with the complete ``vnnx verify``
pipeline instead of one MILP (for networks where the MILP on f does not finish, e.g. the paper's
CNNs); the MILP timings are then measured separately, on f and on each substitute, at the first
``--paired`` ε values of f's search.

``--prune-only R``: time Algorithm 1 alone, R rounds per (image, kind, γ), alternating
``fixed_lines=False`` (fold and bound every partial substitute) with ``fixed_lines=True`` (the
default since the graph engine: bound f with the replaced neurons on fixed lines, fold once) in
the same process, and check that both pick the same ReLUs. Writes {--out}/prune_timing.{json,md}.

Each anchor is a task of :mod:`vnnx.executor` (``--jobs N``, ``--scheduler``, ``--local-cluster
N``; default: one after another in this process), its rows written in the sequential order. Tasks
side by side share the machine: the MILP timings of such a run are not comparable to a
sequential one's (and a solve near ``--timeout`` may time out where it did not). ``--prune-only``
runs in this process (its point is timing both variants in one process).

Writes {--out}/{results.json,summary.md}; copy summary.md into docs/substitute.md.
Run: .venv/bin/python tools/bench_substitute.py [--onnx M] [--data D] [--count N] > log 2>&1
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import torch

import vnnx  # noqa: F401
from vnnx.data import fit_to_input, load_npz
from vnnx.engine import ChainBounds
from vnnx.executor import add_executor_flags, executor_spec
from vnnx.io.onnx import load_onnx, to_network
from vnnx_plugins.substitute.core import anchor_label, boundary_distance, find_adversarial, make_substitute, milp_at

ROOT = Path(__file__).resolve().parents[1]
CLIP = (0.0, 1.0)


def solve_times(network, x0, label, eps_values, timeout):
    bc = ChainBounds(network)
    times, statuses = [], []
    for eps in eps_values:
        res, seconds = milp_at(bc, x0, label, eps, CLIP, timeout)
        times.append(seconds)
        statuses.append(res.status)
    return times, statuses


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--onnx", default=str(ROOT / "specs/mnist_demo/mnist_2x50.onnx"))
    ap.add_argument("--data", default=str(ROOT / "specs/mnist_demo/mnist_eval400.npz"))
    ap.add_argument("--count", type=int, default=10, help="first N images (default 10)")
    ap.add_argument("--kinds", default="con,lin,act")
    ap.add_argument("--gammas", default="0.9,0.99")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per MILP solve")
    ap.add_argument("--rel-tol", type=float, default=1e-3)
    ap.add_argument("--engine", choices=("milp", "verify"), default="milp",
                    help="how the d_bnd searches decide each ε (default milp)")
    ap.add_argument("--paired", type=int, default=None,
                    help="MILP timings at the first N ε values of f's search (default: all of them)")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_substitute"), help="output folder")
    ap.add_argument("--narrow", action="store_true",
                    help="f's search keeps bisecting below a timed-out ε (a tighter bracket; still incomplete)")
    ap.add_argument("--prune-only", type=int, default=0, metavar="R",
                    help="only time Algorithm 1: R rounds, folding each round against fixed lines (see above)")
    add_executor_flags(ap)
    args = ap.parse_args(argv)
    spec = executor_spec(args)
    OUT = Path(args.out)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    network = to_network(load_onnx(args.onnx))
    data = load_npz(args.data)
    kinds = args.kinds.split(",")
    gammas = [float(g) for g in args.gammas.split(",")]
    if args.prune_only:
        prune_timing(network, data, kinds, gammas, args, OUT)
        return
    from _sweep import ordered

    rows = []
    n = min(args.count, len(data))
    settings = {k: getattr(args, k) for k in ("timeout", "rel_tol", "engine", "narrow", "paired")}
    jobs = [(args.onnx, fit_to_input(data.x[i:i + 1], network.n_inputs)[0].astype(np.float64), i, int(data.y[i]),
             kinds, gammas, settings) for i in range(n)]
    for row, lines in ordered(anchor_row, jobs, [f"bench_substitute:{i}" for i in range(n)], spec,
                              desc="bench_substitute"):
        print("\n".join(lines), flush=True)
        rows.append(row)
        (OUT / "results.json").write_text(json.dumps(rows, indent=1, default=float))
        summary = _summary(rows, kinds, gammas, args)
        (OUT / "summary.md").write_text(summary)
    summary = _summary(rows, kinds, gammas, args)
    (OUT / "summary.md").write_text(summary)
    print(summary)


def anchor_row(onnx_path: str, x0, i: int, true: int, kinds: list, gammas: list, settings: dict):
    """One anchor (an executor task): f's d_bnd search, then a substitute per kind and γ with its
    search and paired MILP timings; (its results row, its log lines)."""
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    network = to_network(load_onnx(onnx_path))
    timeout, rel_tol, engine = settings["timeout"], settings["rel_tol"], settings["engine"]
    lines = []
    label = anchor_label(network, x0)
    adv = find_adversarial(network, x0, label, CLIP)
    ref = boundary_distance(network, x0, label, CLIP, timeout=timeout, rel_tol=rel_tol, adv=adv,
                            engine=engine, narrow=settings["narrow"])
    paired = settings["paired"]
    eps_values = ref.solve_eps[:paired] if paired is not None else ref.solve_eps
    row = {"index": i, "label": label, "true": true, "f": ref.to_dict(), "subs": []}
    if engine == "milp":
        row["paired_f_seconds"] = ref.solve_seconds[:len(eps_values)]
        row["paired_f_statuses"] = ref.solve_statuses[:len(eps_values)]
    else:
        row["paired_f_seconds"], row["paired_f_statuses"] = solve_times(network, x0, label, eps_values, timeout)
    lines.append(f"[{i}] f: {ref.status} d_bnd={ref.d_bnd} d_adv={adv.d_adv} solves={ref.solves} "
                 f"search s/solve={row['f']['milp_seconds_mean']} MILP s/solve={np.mean(row['paired_f_seconds'])}")
    for kind in kinds:
        for gamma in gammas:
            sub = make_substitute(network, x0, kind, gamma, clip=CLIP, label=label, adv=adv)
            res = boundary_distance(sub.network, x0, label, CLIP, timeout=timeout, rel_tol=rel_tol, engine=engine)
            t_sub, st_sub = solve_times(sub.network, x0, label, eps_values, timeout)
            s = {**sub.summary(), "radius": res.to_dict(), "paired_sub_seconds": t_sub,
                 "paired_sub_statuses": st_sub}
            row["subs"].append(s)
            lines.append(f"    {kind} γ={gamma}: {res.status} d_bnd={res.d_bnd} kept={s['relus_kept']}/"
                         f"{s['relus_total']} prune={s['prune_seconds']:.3f}s paired mean="
                         f"{np.mean(t_sub) if t_sub else float('nan'):.4f}s")
    return row, lines


def prune_timing(network, data, kinds, gammas, args, out: Path) -> None:
    rows = []
    for i in range(min(args.count, len(data))):
        x0 = fit_to_input(data.x[i:i + 1], network.n_inputs)[0].astype(np.float64)
        label = anchor_label(network, x0)
        adv = find_adversarial(network, x0, label, CLIP)
        for kind in kinds:
            for gamma in gammas:
                t = {False: [], True: []}
                picked = {}
                for _ in range(args.prune_only):
                    for fixed in (True, False):
                        sub = make_substitute(network, x0, kind, gamma, clip=CLIP, label=label, adv=adv,
                                              fixed_lines=fixed)
                        t[fixed].append(sub.prune_seconds)
                        picked[fixed] = {k: r.removed.copy() for k, r in sub.replacements.items()}
                same = picked[True].keys() == picked[False].keys() and all(
                    np.array_equal(picked[True][k], picked[False][k]) for k in picked[True])
                row = {"index": i, "kind": kind, "gamma": gamma, "relus_kept": sub.summary()["relus_kept"],
                       "iterations": sub.iterations, "fold_s": t[False], "fixed_lines_s": t[True],
                       "same_relus": bool(same)}
                rows.append(row)
                print(f"[{i}] {kind} γ={gamma}: fold (default) {np.mean(t[False]):.3f}s, fixed lines "
                      f"{np.mean(t[True]):.3f}s, same ReLUs {same}", flush=True)
    (out / "prune_timing.json").write_text(json.dumps(rows, indent=1))
    lines = [f"network `{Path(args.onnx).name}`, first {min(args.count, len(data))} images, "
             f"{args.prune_only} alternating rounds, one thread", "",
             "| kind | γ | ReLUs kept | iterations | fold s/run (mean, min–max) | fixed lines (default) s/run | fixed lines / fold | same ReLUs |",
             "|---|---|---|---|---|---|---|---|"]
    for kind in kinds:
        for gamma in gammas:
            sel = [r for r in rows if r["kind"] == kind and r["gamma"] == gamma]
            a = np.concatenate([r["fold_s"] for r in sel])
            b = np.concatenate([r["fixed_lines_s"] for r in sel])
            lines.append(f"| {kind} | {gamma:g} | {np.mean([r['relus_kept'] for r in sel]):.0f} | "
                         f"{np.mean([r['iterations'] for r in sel]):.1f} | {a.mean():.3f} ({a.min():.3f}–{a.max():.3f}) | "
                         f"{b.mean():.3f} | {b.mean() / a.mean():.2f}× | {sum(r['same_relus'] for r in sel)}/{len(sel)} |")
    (out / "prune_timing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _summary(rows, kinds, gammas, args) -> str:
    lines = [f"network `{Path(args.onnx).name}`, first {len(rows)} images of `{Path(args.data).name}`, "
             f"timeout {args.timeout:g} s per solve, rel. tol {args.rel_tol:g}, d_bnd engine {args.engine}, "
             f"MILP timings at {'every' if args.paired is None else f'the first {args.paired}'} ε of f's search",
             "",
             "| kind | γ | both complete | collapsed | mean rel. d_bnd diff | ReLUs kept | prune s/run | "
             "prune s per sub solve | MILP s/solve f | MILP s/solve sub | speed-up |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for kind in kinds:
        for gamma in gammas:
            diffs, kept, prune, per_solve, tf, ts, coll = [], [], [], [], [], [], 0
            for r in rows:
                s = next(s for s in r["subs"] if s["kind"] == kind and s["gamma"] == gamma)
                kept.append(s["relus_kept"])
                prune.append(s["prune_seconds"])
                per_solve.append(s["prune_seconds"] / max(1, s["radius"]["solves"]))
                coll += s["radius"]["status"] == "collapsed"
                if r["f"]["status"] == "complete" and s["radius"]["status"] == "complete":
                    diffs.append(abs(s["radius"]["d_bnd"] - r["f"]["d_bnd"]) / r["f"]["d_bnd"])
                n = len(s["paired_sub_seconds"])
                tf += r.get("paired_f_seconds", r["f"]["solve_seconds"])[:n]
                ts += s["paired_sub_seconds"]
            mf, ms = (np.mean(tf) if tf else float("nan")), (np.mean(ts) if ts else float("nan"))
            lines.append(f"| {kind} | {gamma:g} | {len(diffs)}/{len(rows)} | {coll} | "
                         f"{100 * np.mean(diffs) if diffs else float('nan'):.2f}% | {np.mean(kept):.1f} | "
                         f"{np.mean(prune):.3f} | {np.mean(per_solve):.3f} | {mf:.4f} | {ms:.4f} | {mf / ms:.1f}× |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    from _sweep import cli

    raise SystemExit(cli(main, "bench_substitute"))
