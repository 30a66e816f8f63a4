"""Benchmark of ``vnnx compress`` (VeriCompress) on MNIST: the dense CROWN-IBP 4-layer CNN, the
VeriCompress networks at budgets of 50%, 30% and 10% of its parameters, and the
prune-after-training baseline at the same budgets and the same number of epochs.

    .venv/bin/python tools/bench_vericompress.py --config specs/configs/vericompress_mnist.yaml \
        --out-dir out/bench_vericompress --jobs 1

Writes results.json and results.csv in --out-dir and prints a Markdown table (docs/vericompress.md).
Each job trains with one torch thread; every run is a task of :mod:`vnnx.executor`: --jobs runs
that many side by side in local processes, ``--scheduler``/``--local-cluster N`` on a Dask
cluster (default: one after another in this process). A run's seeds come from its config.

``--seeds 0 1 2`` repeats every run per seed and adds a table of means; ``--methods`` picks the
runs (dense, vericompress, prune-finetune); ``--set KEY=VALUE`` overrides a config key (YAML
value), e.g. ``--set explore_every=4`` for an ablation. Each run writes
``runs/<method>_<pct>_s<seed>.json`` in --out-dir as it finishes, and a run whose file exists is
not repeated, so an interrupted benchmark resumes where it stopped.

``--retime`` trains nothing: it re-measures the CPU times of the ONNX files of an earlier run in
--out-dir, all models round-robin in one process (one onnxruntime thread), so that load on a
shared machine hits every model alike, and rewrites results.json/csv and the table.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import time
from pathlib import Path


def _run_file(method: str, fraction: float, seed: int, out_dir: Path) -> Path:
    return out_dir / "runs" / f"{method}_{int(round(100 * fraction))}_s{seed}.json"


def _run(job: tuple[str, float, dict, str]) -> dict:
    method, fraction, cfg_dict, out_dir = job
    done = _run_file(method, fraction, cfg_dict["seed"], Path(out_dir))
    if done.is_file():
        return json.loads(done.read_text())
    row = _train_and_report(job)
    done.parent.mkdir(parents=True, exist_ok=True)
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=2, default=float) + "\n")
    os.replace(tmp, done)
    return row


def _train_and_report(job: tuple[str, float, dict, str]) -> dict:
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
    onnx_path = str(_onnx_path({"method": method, "fraction": fraction, "seed": cfg.seed}, Path(out_dir)))
    budget = resolve_budget(cfg, build_backbone(cfg.backbone, **cfg.arch), tuple(train_data.x.shape[1:]))
    if method == "dense":
        model, _ = train_dense(cfg, train_data)
        export_onnx(model, (1,) + tuple(train_data.x.shape[1:]), onnx_path)
        budget = None
    elif method == "vericompress":
        sparsity, history = compress(cfg, train_data)
        model = export_compact(sparsity, onnx_path)
        log = getattr(sparsity, "log", None)
    else:
        sparsity, _ = prune_after_training(cfg, train_data)
        model = export_compact(sparsity, onnx_path)
    seconds = time.monotonic() - start
    row = {"method": method, "fraction": fraction, "seed": cfg.seed, "budget": budget, "train_seconds": seconds,
           "epochs": cfg.epochs}
    row.update(model_report(model, onnx_path, eval_data, cfg))
    row["widths"] = "-".join(map(str, row["widths"]))
    if method == "vericompress" and log is not None:
        row["deactivations"] = log          # non-zero parameters before each, units that entered per layer
    return row


def _onnx_path(row: dict, out_dir: Path) -> Path:
    seed = f"_s{row['seed']}" if "seed" in row else ""
    return out_dir / f"{row['method']}_{int(round(100 * row['fraction']))}{seed}.onnx"


def _retime(rows: list[dict], out_dir: Path) -> None:
    from vnnx_plugins.vericompress.run import THROUGHPUT_BATCH, time_models

    paths = [str(_onnx_path(r, out_dir)) for r in rows]
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise SystemExit(f"--retime: {missing[0]} is missing (run the benchmark first)")
    import onnx

    dims = onnx.load(paths[0]).graph.input[0].type.tensor_type.shape.dim
    shape = tuple(int(d.dim_value) for d in dims[1:])
    latency = time_models(paths, shape, runs=300, batch=1, rounds=5)
    batched = time_models(paths, shape, runs=8 * THROUGHPUT_BATCH, batch=THROUGHPUT_BATCH, rounds=5)
    for r, a, b in zip(rows, latency, batched):
        r.update(cpu_seconds_per_sample=a, cpu_seconds_per_sample_batched=b, throughput_batch=THROUGHPUT_BATCH)


def _means(rows: list[dict]) -> None:
    """Markdown table of the mean over seeds per (method, fraction)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["fraction"]), []).append(r)
    print("\n| method | budget | seeds | widths | std acc | IBP ver. | CROWN ver. | train minutes |")
    print("|---|---|---|---|---|---|---|---|")
    for (method, fraction), rs in groups.items():
        def mean(key):
            return 100 * sum(r[key] for r in rs) / len(rs)
        print(f"| {method} | {100 * fraction:.0f}% | {' '.join(str(r.get('seed', '-')) for r in rs)} | "
              f"{rs[0]['widths']} | {mean('standard_acc'):.1f} | {mean('ibp_verified_acc'):.1f} | "
              f"{mean('crown_verified_acc'):.1f} | {sum(r['train_seconds'] for r in rs) / 60 / len(rs):.1f} |")


def _write(cfg_dict: dict, rows: list[dict], out_dir: Path) -> None:
    (out_dir / "results.json").write_text(json.dumps({"config": cfg_dict, "rows": rows}, indent=2, default=float)
                                          + "\n")
    fields = [k for k in dict.fromkeys(k for r in rows for k in r) if k != "deactivations"]
    with open(out_dir / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    dense = next((r for r in rows if r["method"] == "dense"), rows[0])
    batch = dense.get("throughput_batch", 256)
    print(f"| method | budget | seed | params | widths | ONNX KB | CPU us/sample (1 per call) | speed-up | "
          f"CPU us/sample (batches of {batch}) | speed-up | std acc | IBP ver. | CROWN ver. |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        b = r.get("cpu_seconds_per_sample_batched")
        bcol = (f"{1e6 * b:.2f} | {dense['cpu_seconds_per_sample_batched'] / b:.2f}x" if b else "- | -")
        print(f"| {r['method']} | {r['budget'] or '-'} ({100 * r['fraction']:.0f}%) | {r.get('seed', '-')} | {r['params']} | {r['widths']} | "
              f"{r['onnx_bytes'] / 1024:.1f} | {1e6 * r['cpu_seconds_per_sample']:.1f} | "
              f"{dense['cpu_seconds_per_sample'] / r['cpu_seconds_per_sample']:.2f}x | {bcol} | "
              f"{100 * r['standard_acc']:.1f} | {100 * r['ibp_verified_acc']:.1f} | {100 * r['crown_verified_acc']:.1f} |")
    _means(rows)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="specs/configs/vericompress_mnist.yaml")
    p.add_argument("--out-dir", default="out/bench_vericompress")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.3, 0.1])
    p.add_argument("--epochs", type=int, default=None, help="override T (with s, l from the config)")
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-verify", type=int, default=None)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds (default: the config's)")
    p.add_argument("--methods", nargs="+", default=["dense", "vericompress", "prune-finetune"],
                   choices=["dense", "vericompress", "prune-finetune"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (the value is read as YAML), e.g. explore_every=4")
    p.add_argument("--retime", action="store_true", help="only re-measure the CPU times of an earlier run")
    from vnnx.executor import add_executor_flags, executor_spec

    add_executor_flags(p, jobs=False)
    args = p.parse_args(argv)
    spec = executor_spec(args)
    out_dir = Path(args.out_dir)
    if args.retime:
        data = json.loads((out_dir / "results.json").read_text())
        _retime(data["rows"], out_dir)
        _write(data["config"], data["rows"], out_dir)
        return 0

    import yaml

    from vnnx_plugins.vericompress.config import config_from_dict, load_config

    cfg = load_config(args.config, {"epochs": args.epochs, "n_train": args.n_train, "n_verify": args.n_verify})
    settings = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item}: expected KEY=VALUE")
        settings[key] = yaml.safe_load(value)      # null is a value here (e.g. kappa_end=null)
    if settings:
        cfg = config_from_dict(settings, "--set", cfg)
    cfg_dict = dataclasses.asdict(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for seed in args.seeds if args.seeds is not None else [cfg.seed]:
        seeded = dict(cfg_dict, seed=seed)
        if "dense" in args.methods:
            jobs.append(("dense", 1.0, seeded, str(out_dir)))
        for f in args.fractions:
            jobs += [(m, f, seeded, str(out_dir)) for m in ("vericompress", "prune-finetune") if m in args.methods]
    from _sweep import ordered

    keys = [f"bench_vericompress:{m}_{int(round(100 * f))}_s{c['seed']}" for m, f, c, _ in jobs]
    rows = list(ordered(_run, [(j,) for j in jobs], keys, spec, desc="bench_vericompress"))
    _write(cfg_dict, rows, out_dir)
    return 0


if __name__ == "__main__":
    from _sweep import cli

    sys.exit(cli(main, "bench_vericompress"))
