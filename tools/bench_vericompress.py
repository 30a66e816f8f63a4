"""Benchmark of ``vnnx compress`` (VeriCompress) on MNIST: the dense CROWN-IBP 4-layer CNN, the
VeriCompress networks at budgets of 50%, 30% and 10% of its parameters, and the
prune-after-training baseline at the same budgets and the same number of epochs.

    .venv/bin/python tools/bench_vericompress.py --config specs/configs/vericompress_mnist.yaml \
        --out-dir out/bench_vericompress --jobs 1

Writes results.json and results.csv in --out-dir and prints a Markdown table (docs/vericompress.md).
Each job trains with one torch thread; --jobs runs that many runs side by side.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def _run(job: tuple[str, float, dict, str]) -> dict:
    import torch

    import vnnx  # noqa: F401  (auto_LiRPA patches)
    torch.set_num_threads(1)
    from vnnx.io.onnx import export_onnx
    from vnnx_plugins.vericompress.compact import export_compact
    from vnnx_plugins.vericompress.config import config_from_dict
    from vnnx_plugins.vericompress.run import (build_backbone, compress, load_data, model_report,
                                               prune_after_training, resolve_budget, train_dense)

    method, fraction, cfg_dict, out_dir = job
    cfg = config_from_dict(dict(cfg_dict, budget_fraction=fraction, progress=False), "bench")
    train_data, eval_data = load_data(cfg)
    start = time.monotonic()
    onnx_path = os.path.join(out_dir, f"{method}_{int(round(100 * fraction))}.onnx")
    budget = resolve_budget(cfg, build_backbone(cfg.backbone, **cfg.arch), tuple(train_data.x.shape[1:]))
    if method == "dense":
        model, _ = train_dense(cfg, train_data)
        export_onnx(model, (1,) + tuple(train_data.x.shape[1:]), onnx_path)
        budget = None
    elif method == "vericompress":
        sparsity, _ = compress(cfg, train_data)
        model = export_compact(sparsity, onnx_path)
    else:
        sparsity, _ = prune_after_training(cfg, train_data)
        model = export_compact(sparsity, onnx_path)
    seconds = time.monotonic() - start
    row = {"method": method, "fraction": fraction, "budget": budget, "train_seconds": seconds,
           "epochs": cfg.epochs}
    row.update(model_report(model, onnx_path, eval_data, cfg))
    row["widths"] = "-".join(map(str, row["widths"]))
    return row


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="specs/configs/vericompress_mnist.yaml")
    p.add_argument("--out-dir", default="out/bench_vericompress")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.3, 0.1])
    p.add_argument("--epochs", type=int, default=None, help="override T (with s, l from the config)")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-verify", type=int, default=None)
    p.add_argument("--jobs", type=int, default=1)
    args = p.parse_args(argv)

    from vnnx_plugins.vericompress.config import load_config

    cfg = load_config(args.config, {"epochs": args.epochs, "n_train": args.n_train, "n_verify": args.n_verify})
    cfg_dict = dataclasses.asdict(cfg)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [("dense", 1.0, cfg_dict, str(out_dir))]
    for f in args.fractions:
        jobs += [("vericompress", f, cfg_dict, str(out_dir)), ("prune-finetune", f, cfg_dict, str(out_dir))]
    if args.jobs > 1:
        with ProcessPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(_run, jobs))
    else:
        rows = [_run(j) for j in jobs]
    (out_dir / "results.json").write_text(json.dumps({"config": cfg_dict, "rows": rows}, indent=2) + "\n")
    with open(out_dir / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    dense = rows[0]
    print("| method | budget | params | widths | ONNX KB | CPU us/sample | speed-up | std acc | IBP ver. | CROWN ver. |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['budget'] or '-'} ({100 * r['fraction']:.0f}%) | {r['params']} | {r['widths']} | "
              f"{r['onnx_bytes'] / 1024:.1f} | {1e6 * r['cpu_seconds_per_sample']:.1f} | "
              f"{dense['cpu_seconds_per_sample'] / r['cpu_seconds_per_sample']:.2f}x | "
              f"{100 * r['standard_acc']:.1f} | {100 * r['ibp_verified_acc']:.1f} | {100 * r['crown_verified_acc']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
