"""``vnnx compress --config CFG.yaml --budget K --epsilon E --out SMALL.onnx``: parse, call the
library, print."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vnnx.errors import InputFileError


def _cmd_compress(args: argparse.Namespace) -> int:
    from vnnx.util import write_text_atomic

    from .compact import export_compact
    from .config import load_config
    from .run import backbone_report, build_backbone, compress, load_data, model_report

    out = Path(args.out)
    if not out.parent.is_dir():
        raise InputFileError(f"{out}: directory {out.parent} does not exist")
    overrides = {"budget": args.budget, "epsilon": args.epsilon, "epochs": args.epochs, "n_train": args.n_train,
                 "n_verify": args.n_verify}
    cfg = load_config(args.config, overrides)
    if args.no_progress:
        cfg.progress = False
    train_data, eval_data = load_data(cfg)
    sparsity, history = compress(cfg, train_data)
    small = export_compact(sparsity, out)   # compared with the masked network in onnxruntime, atomic
    report = {"onnx": str(out), "budget": sparsity.budget, "active_params": sparsity.active_parameters(),
              "unit_counts": sparsity.counts, "config": cfg.as_dict(), "history": history.epochs,
              "compact": model_report(small, str(out), eval_data, cfg),
              "backbone": backbone_report(cfg, build_backbone(cfg.backbone, **cfg.arch), eval_data)}
    c, b = report["compact"], report["backbone"]
    report["speedup"] = b["cpu_seconds_per_sample"] / c["cpu_seconds_per_sample"]
    report["speedup_batched"] = b["cpu_seconds_per_sample_batched"] / c["cpu_seconds_per_sample_batched"]
    json_path = out.with_suffix(".json")
    write_text_atomic(json_path, json.dumps(report, indent=2, default=float) + "\n")
    print(f"wrote {out} and {json_path}")
    batch = c["throughput_batch"]
    print(f"{'':10s}{'params':>10s}{'ONNX bytes':>12s}{'CPU us/sample':>15s}{f'at batch {batch}':>15s}")
    for name, r in (("backbone", b), ("compact", c)):
        print(f"{name:10s}{r['params']:>10d}{r['onnx_bytes']:>12d}{1e6 * r['cpu_seconds_per_sample']:>15.1f}"
              f"{1e6 * r['cpu_seconds_per_sample_batched']:>15.2f}")
    print(f"budget {sparsity.budget}, compact params {c['params']} (widths {c['widths']}), "
          f"speed-up {report['speedup']:.2f}x (one sample per call), {report['speedup_batched']:.2f}x "
          f"(batches of {batch})")
    print(f"standard acc {100 * c['standard_acc']:.2f}%; verified acc at eps {cfg.epsilon:g} on {c['n_verify']} "
          f"images: IBP {100 * c['ibp_verified_acc']:.2f}%, CROWN {100 * c['crown_verified_acc']:.2f}%")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``compress`` to the ``vnnx`` command line."""
    p = sub.add_parser("compress", help="train a verified-robust compressed network within a parameter budget "
                                        "(VeriCompress plugin)",
                       description="VeriCompress: CROWN-IBP training of a random K-parameter sub-network with "
                                   "periodic L2 deactivation of nodes/filters, then compaction to a dense "
                                   "network of <= K parameters. Writes SMALL.onnx and SMALL.json (report).")
    p.add_argument("--config", required=True, help="YAML config (see specs/configs/vericompress_mnist.yaml)")
    p.add_argument("--budget", type=int, default=None, help="parameter budget K (overrides the config)")
    p.add_argument("--epsilon", type=float, default=None, help="eps_max, L-inf radius (overrides the config)")
    p.add_argument("--out", required=True, help="ONNX file of the compact network")
    p.add_argument("--epochs", type=int, default=None, help="T, training epochs (overrides the config)")
    p.add_argument("--n-train", type=int, default=None, help="use the first N training images (overrides)")
    p.add_argument("--n-verify", type=int, default=None, help="verify the first N evaluation images (overrides)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_compress)
