#!/usr/bin/env python
"""ReLU-stability benchmark: the progression of Xiao et al. (ICLR 2019), Tables 1/7 and 4, at CPU scale.

MNIST, epsilon = 0.1. Three trainings, five models (each row adds to the one before it):

  adv           PGD adversarial training (8 steps, random start, eps ramped 0.01 -> 0.1 over the
                first half of the epochs)
  +L1           the same, with the reuse-weighted L1 penalty
  +SWP          +L1, then small-weight pruning (|w| < 1e-3)
  +RP           +SWP, then ReLU pruning (90% / 10% on PGD-perturbed training images): the control
  +RS           adversarial training with L1 and the RS loss, then both passes

Per model: test and PGD accuracy on the evaluation images, unstable ReLUs per layer (naive IA,
improved IA and LP-tightened bounds: vnnx.graph_lp, starting from the graph engine's CROWN), provable adversarial accuracy on the first --n-verify
evaluation images with vnnx.milp.verify_milp (improved-IA bounds as the big-M bounds, a PGD
attack first, --timeout seconds per image) and the mean verification time per image.

Data: with only the MNIST test set in --data-dir, training uses test images 1000-9999 and
evaluation 0-999 (vnnx.data.mnist_split). Trained models are cached in --out-dir (delete the
folder or pass --retrain to train again).

Run:  .venv/bin/python tools/bench_relu_stability.py [--quick] [--n-verify 100] [--timeout 5]
Writes OUT_DIR/results.json, OUT_DIR/results.md and one ONNX file per model.

The three trainings, then the evaluations of the five models, are tasks of :mod:`vnnx.executor`
(``--jobs N``, ``--scheduler``, ``--local-cluster N``; default: one after another in this
process); every seed comes from --seed, so the results are those of a sequential run (timings
aside). Away from in-process, a task's log lines are not shown.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup_threads() -> None:
    # The benchmark is specified on one core; honour an explicit OMP_NUM_THREADS.
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_configs(args) -> dict[str, dict]:
    """The three training runs, as `vnnx train` config dicts."""
    base = dict(seed=args.seed, data_dir=args.data_dir, n_train=args.n_train, n_eval=args.n_eval, n_report=0,
                architecture=args.architecture, arch=json.loads(args.arch), epochs=args.epochs,
                batch_size=64, lr=1e-3, adversarial=True, epsilon=args.epsilon, pgd_steps=8,
                ramp_start=0.01, ramp_fraction=0.5, progress=sys.stderr.isatty(),
                relu_prune_samples=args.relu_prune_samples, eval_pgd_steps=args.eval_pgd_steps)
    return {
        "adv": dict(base),
        "adv_l1": dict(base, l1_weight=args.l1_weight),
        "adv_l1_rs": dict(base, l1_weight=args.l1_weight, rs_weight=args.rs_weight, rs_bounds=args.rs_bounds,
                          rs_layer_weights=args.rs_layer_weights, prune_weights=True, prune_relus=True),
    }


def trained_model(name: str, cfg, train_data, out_dir: Path, retrain: bool):
    """Train (or load the cached) model of config ``cfg``; returns (model, history, seconds)."""
    import torch

    from vnnx.architectures import build
    from vnnx_plugins.relu_stability.run import train_from_config

    # The RS weight is part of the file name so that runs with other weights keep theirs.
    stem = name if cfg.rs_weight <= 0 else f"{name}_{cfg.rs_weight:g}"
    if cfg.rs_layer_weights:
        stem += "_lw" + "-".join(f"{w:g}" for w in cfg.rs_layer_weights)
    path = out_dir / f"{stem}.pt"
    if path.is_file() and not retrain:
        ckpt = torch.load(path, weights_only=False)
        if ckpt.get("config") == cfg.as_dict():
            model = build(cfg.architecture, **cfg.arch)
            model.load_state_dict(ckpt["state_dict"])
            model.eval()
            _log(f"{name}: loaded {path} (trained in {ckpt['seconds']:.0f} s)")
            return model, ckpt["history"], ckpt["seconds"]
    _log(f"{name}: training ({cfg.epochs} epochs, {len(train_data)} images)")
    start = time.monotonic()
    model, history = train_from_config(cfg, train_data)
    seconds = time.monotonic() - start
    torch.save({"config": cfg.as_dict(), "state_dict": model.state_dict(), "history": history.epochs,
                "seconds": seconds}, path)
    _log(f"{name}: trained in {seconds:.0f} s, last epoch {history.epochs[-1]}")
    return model, history.epochs, seconds


def model_progression(args, out_dir: Path, spec=None):
    """The five networks of the progression, in order, with their training facts."""
    from vnnx_plugins.relu_stability.chain import sequential_to_network
    from vnnx_plugins.relu_stability.config import config_from_dict
    from vnnx_plugins.relu_stability.passes import prune_small_weights
    from vnnx_plugins.relu_stability.run import apply_passes, load_data

    cfgs = {k: config_from_dict(v, f"benchmark config {k}") for k, v in train_configs(args).items()}
    train_data, eval_data = load_data(cfgs["adv"])
    shape = tuple(train_data.x.shape[1:])
    from _sweep import ordered

    jobs = [(k, c, train_data, out_dir, args.retrain) for k, c in cfgs.items()]
    trained = dict(zip(cfgs, ordered(trained_model, jobs, [f"bench_relu_stability:train:{k}" for k in cfgs], spec,
                                     desc="bench_relu_stability trainings")))
    train_seconds = sum(t[2] for t in trained.values())
    nets: dict[str, dict] = {}
    nets["adv"] = {"network": sequential_to_network(trained["adv"][0], shape), "passes": []}
    l1_net = sequential_to_network(trained["adv_l1"][0], shape)
    nets["+L1"] = {"network": l1_net, "passes": []}
    swp, swp_rep = prune_small_weights(l1_net, args.weight_threshold)
    nets["+SWP"] = {"network": swp, "passes": [swp_rep.as_dict()]}
    # ReLU pruning counts activations on PGD-perturbed training images (apply_passes does the
    # same for a config with prune_relus); run it on the +L1 model so the control is exactly
    # "+L1, small weights pruned, ReLUs pruned".
    # The ReLU-pruning thresholds only steer the passes (the cached trainings stay valid), and
    # the control and +RS get the same ones.
    thresholds = {"relu_active_threshold": args.relu_active_threshold,
                  "relu_inactive_threshold": args.relu_inactive_threshold}
    control_cfg = config_from_dict({"prune_weights": True, "prune_relus": True, **thresholds}, "control",
                                   cfgs["adv_l1"])
    control, control_reps = apply_passes(trained["adv_l1"][0], control_cfg, train_data)
    nets["+RP (control)"] = {"network": control, "passes": [r.as_dict() for r in control_reps]}
    rs_cfg = config_from_dict(thresholds, "+RS passes", cfgs["adv_l1_rs"])
    rs, rs_reps = apply_passes(trained["adv_l1_rs"][0], rs_cfg, train_data)
    nets["+RS"] = {"network": rs, "passes": [r.as_dict() for r in rs_reps]}
    train_facts = {k: {"seconds": t[2], "epochs": t[1]} for k, t in trained.items()}
    return nets, eval_data, cfgs, train_facts, train_seconds


def verify_images(network, eval_data, args) -> dict:
    """Provable adversarial accuracy with the core MILP on the first ``n_verify`` images."""
    import numpy as np
    import torch

    from vnnx.attack import pgd_linf
    from vnnx.io.vnnlib import robustness_property
    from vnnx.milp import verify_milp
    from vnnx_plugins.relu_stability.report import _layer_bounds_ia
    from vnnx_plugins.relu_stability.run import NetworkModule

    module = NetworkModule(network).eval()
    gen = torch.Generator().manual_seed(args.seed + 5)
    rows = []
    n = min(args.n_verify, len(eval_data))
    for i in range(n):
        x, label = eval_data.x[i], int(eval_data.y[i])
        start = time.perf_counter()
        prop = robustness_property(x, args.epsilon, label, network.n_outputs, clip=(0.0, 1.0))
        status, n_bin, how = None, 0, ""
        if int(network.forward(x.reshape(1, -1).astype(np.float64))[0].argmax()) != label:
            status, how = "sat", "misclassified"
        else:
            xt = torch.as_tensor(x[None], dtype=torch.float32)
            x_adv = pgd_linf(module, xt, torch.tensor([label]), args.epsilon, steps=args.eval_pgd_steps,
                             generator=gen).numpy().reshape(1, -1).astype(np.float64)
            x_adv = np.clip(x_adv, prop.x_lower, prop.x_upper)
            if int(network.forward(x_adv)[0].argmax()) != label:
                status, how = "sat", "pgd"
        if status is None:
            bounds = _layer_bounds_ia(network, prop.x_lower[None], prop.x_upper[None], "improved-ia", 1)[0]
            if args.milp_bounds == "crown":
                bounds = _with_crown(network, prop, bounds)
            remaining = max(0.1, args.timeout - (time.perf_counter() - start))
            res = verify_milp(network, prop, layer_bounds=bounds, time_limit=remaining, tighten=args.milp_tighten)
            status, n_bin, how = res.status, res.n_binaries, "milp"
        rows.append({"image": i, "status": status, "how": how, "binaries": n_bin,
                     "seconds": time.perf_counter() - start})
    seconds = np.array([r["seconds"] for r in rows])
    milp = [r for r in rows if r["how"] == "milp"]
    return {
        "n": n,
        "provable_acc": sum(r["status"] == "unsat" for r in rows) / max(n, 1),
        "pgd_or_misclassified": sum(r["how"] in ("pgd", "misclassified") for r in rows),
        "milp_calls": len(milp), "milp_sat": sum(r["status"] == "sat" for r in milp),
        "timeouts": sum(r["status"] in ("timeout", "unknown") for r in rows),
        "mean_seconds": float(seconds.mean()) if n else 0.0,
        "median_seconds": float(np.median(seconds)) if n else 0.0,
        "mean_milp_seconds": float(np.mean([r["seconds"] for r in milp])) if milp else 0.0,
        "mean_binaries": float(np.mean([r["binaries"] for r in milp])) if milp else 0.0,
        "rows": rows,
    }


def _with_crown(network, prop, ia_bounds: list) -> list:
    """Improved-IA layer bounds intersected with the graph engine's CROWN pre-activation bounds
    (:class:`vnnx.engine.ChainBounds`; both sound, as the verify pipeline intersects them)."""
    import numpy as np

    from vnnx.engine import ChainBounds

    crown = ChainBounds(network).compute(prop.x_lower, prop.x_upper, "crown").pre_activation
    merged = list(ia_bounds)
    for k, (lo, hi) in crown.items():
        lo2, hi2 = np.maximum(merged[k][0], lo), np.minimum(merged[k][1], hi)
        # Both are sound; where round-off makes them cross, keep the span between the two ends.
        merged[k] = (np.minimum(lo2, hi2), np.maximum(lo2, hi2))
    return merged


def evaluate_network(name: str, entry: dict, eval_data, cfg, args, out_dir: Path) -> dict:
    from vnnx.io.onnx import network_to_onnx
    from vnnx_plugins.relu_stability.report import friendliness_report
    from vnnx_plugins.relu_stability.run import evaluate

    network = entry["network"]
    slug = name.split(" ")[0].replace("+", "plus_")
    network_to_onnx(network, out_dir / f"{slug}{args.tag}.onnx")
    start = time.monotonic()
    metrics = evaluate(network, cfg, eval_data)            # n_report = 0: accuracies only
    x_v, x_lp = eval_data.x[:args.n_verify], eval_data.x[:args.n_lp]
    reports = {
        "improved-ia": friendliness_report(network, x_v, args.epsilon, "improved-ia"),
        "ibp": friendliness_report(network, x_v, args.epsilon, "ibp"),
        "ibp@lp": friendliness_report(network, x_lp, args.epsilon, "ibp"),
        "improved-ia@lp": friendliness_report(network, x_lp, args.epsilon, "improved-ia"),
        "lp": friendliness_report(network, x_lp, args.epsilon, "lp", lp_time_limit=args.lp_time_limit),
    }
    _log(f"{name}: acc {metrics['test_acc']:.3f}, PGD {metrics['pgd_acc']:.3f}, unstable improved-IA "
         f"{reports['improved-ia']['unstable_total']:.1f}, LP {reports['lp']['unstable_total']:.1f}; verifying")
    verification = verify_images(network, eval_data, args)
    _log(f"{name}: provable {verification['provable_acc']:.3f}, mean {verification['mean_seconds']:.2f} s/image, "
         f"{verification['timeouts']} timeouts ({time.monotonic() - start:.0f} s)")
    for r in reports.values():
        r.pop("weights", None)
    return {"name": name, "passes": entry["passes"], "test_acc": metrics["test_acc"], "pgd_acc": metrics["pgd_acc"],
            "n_eval": metrics["n_eval"], "reports": reports, "verification": verification,
            "n_relus": sum(r["n_neurons"] for r in reports["ibp"]["relu_layers"]),
            "weight_sparsity": reports["ibp"]["weight_sparsity"]}


def _layers(report: dict) -> str:
    return " / ".join(f"{r['unstable']:.1f}" for r in report["relu_layers"])


def markdown(results: list[dict], meta: dict) -> str:
    a = meta["args"]
    lines = [
        f"Measured {meta['date']} on {meta['machine']}; this run took {meta['total_seconds'] / 60:.1f} min, "
        f"training the models it uses {meta['train_seconds'] / 60:.1f} min (also counted when loaded from the cache).",
        f"Architecture `{a['architecture']}` {a['arch']}, {a['n_train']} training images, {a['epochs']} epochs, "
        f"eps {a['epsilon']}, L1 {a['l1_weight']}, RS {a['rs_weight']} ({a['rs_bounds']} IA); accuracies on "
        f"{results[0]['n_eval']} evaluation images (PGD: {a['eval_pgd_steps']} steps); MILP on the first "
        f"{a['n_verify']} with a {a['timeout']} s timeout per image (big-M bounds: {a.get('milp_bounds', 'improved-ia')}); LP counts on the first {a['n_lp']} "
        f"({a['lp_time_limit']} s LP budget per image).",
        "",
        "| model | test acc | PGD acc | provable acc | mean s/image | median s/image | mean s/MILP image | timeouts "
        "| unstable ReLUs per layer (improved IA) | total (improved IA) | total (LP) | weight sparsity |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        v = r["verification"]
        lines.append(f"| {r['name']} | {100 * r['test_acc']:.1f}% | {100 * r['pgd_acc']:.1f}% | "
                     f"{100 * v['provable_acc']:.0f}% | {v['mean_seconds']:.2f} | {v.get('median_seconds', float('nan')):.2f} | "
                     f"{v['mean_milp_seconds']:.2f} "
                     f"({v['milp_calls']}) | {v['timeouts']}/{v['n']} | "
                     f"{_layers(r['reports']['improved-ia'])} | {r['reports']['improved-ia']['unstable_total']:.1f} | "
                     f"{r['reports']['lp']['unstable_total']:.1f} | {100 * r['weight_sparsity']:.1f}% |")
    lines += ["", f"Unstable ReLUs by bound method (Table 4), mean over the first {a['n_lp']} images:", "",
              "| model | ReLUs | naive IA | improved IA | LP-tightened | LP ran out of time |", "|---|---|---|---|---|---|"]
    for r in results:
        rep = r["reports"]
        lines.append(f"| {r['name']} | {r['n_relus']} | {rep['ibp@lp']['unstable_total']:.1f} | "
                     f"{rep['improved-ia@lp']['unstable_total']:.1f} | {rep['lp']['unstable_total']:.1f} | "
                     f"{rep['lp'].get('lp_timeouts', 0)}/{rep['lp']['n_samples']} |")
    lines += ["", "Per layer (naive / improved / LP):", ""]
    for r in results:
        rep = r["reports"]
        lines.append(f"- {r['name']}: {_layers(rep['ibp@lp'])} | {_layers(rep['improved-ia@lp'])} | "
                     f"{_layers(rep['lp'])}")
    by = {r["name"]: r for r in results}
    if "+RS" in by and "+RP (control)" in by:
        rs, ctl = by["+RS"], by["+RP (control)"]

        def ratio(a_: float, b_: float) -> float:
            return a_ / b_ if b_ > 0 else float("inf")
        t = [
            ("unstable ReLUs, control / +RS (improved IA)",
             ratio(ctl["reports"]["improved-ia"]["unstable_total"], rs["reports"]["improved-ia"]["unstable_total"]),
             ">= 3x"),
            ("unstable ReLUs, control / +RS (LP)",
             ratio(ctl["reports"]["lp"]["unstable_total"], rs["reports"]["lp"]["unstable_total"]), ">= 3x"),
            ("mean verification time, control / +RS",
             ratio(ctl["verification"]["mean_seconds"], rs["verification"]["mean_seconds"]), ">= 4x"),
        ]
        lines += ["", "Targets (+RS against the control):", ""]
        for label, value, target in t:
            lines.append(f"- {label}: {value:.1f}x (target {target}: {'met' if value >= float(target[3:-1]) else 'not met'})")
        drop = 100 * (ctl["test_acc"] - rs["test_acc"])
        lines.append(f"- test accuracy drop: {drop:.1f} points (target <= 1: {'met' if drop <= 1 else 'not met'})")
        gain = 100 * (rs["verification"]["provable_acc"] - ctl["verification"]["provable_acc"])
        lines.append(f"- provable accuracy: {100 * rs['verification']['provable_acc']:.0f}% vs "
                     f"{100 * ctl['verification']['provable_acc']:.0f}% (target higher: {'met' if gain > 0 else 'not met'})")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-dir", default=str(ROOT / "out" / "bench_relu_stability"), help="models and results")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"), help="MNIST idx files")
    ap.add_argument("--architecture", default="mnist-cnn", help="a vnnx.architectures name (default mnist-cnn)")
    ap.add_argument("--arch", default='{"filters": [8, 16], "hidden": 64}',
                    help="architecture keyword arguments as JSON (default: the paper's CNN at half width)")
    ap.add_argument("--n-train", type=int, default=9000, help="training images (default 9000: test images 1000-9999)")
    ap.add_argument("--n-eval", type=int, default=1000, help="evaluation images for the accuracies (default 1000)")
    ap.add_argument("--epochs", type=int, default=8, help="epochs per training run (default 8)")
    ap.add_argument("--epsilon", type=float, default=0.1, help="L-inf radius (default 0.1)")
    ap.add_argument("--l1-weight", type=float, default=2e-5, help="L1 weight (paper: 2e-5)")
    ap.add_argument("--rs-weight", type=float, default=1e-3, help="RS-loss weight (default 1e-3)")
    ap.add_argument("--rs-bounds", default="naive", choices=("naive", "improved", "crown-ibp"))
    ap.add_argument("--rs-layer-weights", type=float, nargs="+", default=None,
                    help="per-ReLU-layer multipliers of the RS loss (default: all 1)")
    ap.add_argument("--weight-threshold", type=float, default=1e-3, help="small-weight pruning threshold")
    ap.add_argument("--relu-prune-samples", type=int, default=2000, help="training images for ReLU pruning counts")
    ap.add_argument("--relu-active-threshold", type=float, default=0.9,
                    help="ReLU pruning: active on at least this fraction of the samples -> identity (default 0.9)")
    ap.add_argument("--relu-inactive-threshold", type=float, default=0.1,
                    help="ReLU pruning: active on at most this fraction -> zero (default 0.1)")
    ap.add_argument("--eval-pgd-steps", type=int, default=20, help="PGD steps of the evaluation attacks")
    ap.add_argument("--n-verify", type=int, default=100, help="images verified with the MILP (default 100)")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds per image for PGD + MILP (default 5)")
    ap.add_argument("--milp-bounds", default="improved-ia", choices=("improved-ia", "crown"),
                    help="big-M bounds of the MILP: improved IA (default), or improved IA intersected with "
                         "the graph engine's CROWN (vnnx.engine.ChainBounds)")
    ap.add_argument("--milp-tighten", action="store_true",
                    help="LP-tighten the unstable neurons' bounds before the MILP, inside each image's "
                         "time budget (verify_milp(tighten=True))")
    ap.add_argument("--n-lp", type=int, default=20, help="images for the LP-tightened counts (default 20)")
    ap.add_argument("--lp-time-limit", type=float, default=10.0, help="LP tightening seconds per image (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--retrain", action="store_true", help="ignore cached models")
    ap.add_argument("--only", nargs="+", help="evaluate only these models (names as in the table, e.g. +RS)")
    ap.add_argument("--tag", default="", help="suffix of the results files (results{TAG}.json/.md)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1000 images, 1 epoch, 5 images verified")
    from vnnx.executor import add_executor_flags, executor_spec

    add_executor_flags(ap)
    args = ap.parse_args(argv)
    from vnnx.errors import VnnxError

    try:
        spec = executor_spec(args)
    except VnnxError as exc:
        print(f"bench_relu_stability: error: {exc}", file=sys.stderr)
        return 2
    if args.quick:
        args.n_train, args.epochs, args.n_verify, args.n_lp, args.n_eval = 1000, 1, 5, 2, 200
        args.timeout, args.lp_time_limit = 2.0, 2.0
        args.out_dir = args.out_dir + "_quick"
    _setup_threads()
    import vnnx  # noqa: F401
    from _sweep import ordered

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        nets, eval_data, cfgs, train_facts, train_seconds = model_progression(args, out_dir, spec)
        unknown = sorted(set(args.only or ()) - set(nets))
        if unknown:
            print(f"bench_relu_stability: error: --only: unknown model(s) {unknown}; choose from {list(nets)}",
                  file=sys.stderr)
            return 2
        names = [name for name in nets if not args.only or name in args.only]
        results = list(ordered(evaluate_network, [(name, nets[name], eval_data, cfgs["adv"], args, out_dir)
                                                  for name in names],
                               [f"bench_relu_stability:evaluate:{name}" for name in names], spec,
                               desc="bench_relu_stability evaluations"))
    except VnnxError as exc:
        print(f"bench_relu_stability: error: {exc}", file=sys.stderr)
        return 1
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.node()}: {os.cpu_count()} cores, "
            f"torch threads {os.environ.get('OMP_NUM_THREADS', '1')}", "args": vars(args),
            "train_seconds": train_seconds, "total_seconds": time.monotonic() - start, "training": train_facts}
    (out_dir / f"results{args.tag}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1,
                                                                default=float))
    text = markdown(results, meta)
    (out_dir / f"results{args.tag}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
