"""``vnnx train``, ``vnnx report`` and ``vnnx rs-prune``: parse, call the library, print."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from vnnx.errors import ConfigError, InputFileError


def _write_json(path: Path, doc: dict) -> None:
    from vnnx.util import write_text_atomic

    write_text_atomic(path, json.dumps(doc, indent=2, default=float) + "\n")


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from vnnx.io.onnx import network_to_onnx
    from vnnx.util import atomic_path

    from .config import load_config, overrides_from_args
    from .run import apply_passes, evaluate, load_data, train_from_config

    out = Path(args.out)
    if not out.parent.is_dir():
        raise InputFileError(f"{out}: directory {out.parent} does not exist")
    cfg = load_config(args.config, overrides_from_args(args))
    train_data, eval_data = load_data(cfg)
    model, history = train_from_config(cfg, train_data)
    network, reports = apply_passes(model, cfg, train_data)
    # Everything that can fail runs before the first file is written: no half-written outputs.
    metrics = evaluate(network, cfg, eval_data)
    network_to_onnx(network, out)          # checked against onnxruntime, written atomically
    checkpoint = out.with_suffix(".pt")
    # The checkpoint holds the trained weights before the passes; the ONNX file holds the result.
    with atomic_path(checkpoint) as tmp:
        torch.save({"config": cfg.as_dict(), "state_dict": model.state_dict(), "history": history.epochs,
                    "passes": [r.as_dict() for r in reports]}, tmp)
    doc = {"onnx": str(out), "checkpoint": str(checkpoint), "config": cfg.as_dict(),
           "history": history.epochs, "passes": [r.as_dict() for r in reports], "metrics": metrics}
    _write_json(out.with_suffix(".json"), doc)
    unstable = ", ".join(f"{m} {r['unstable_total']:.1f}" for m, r in metrics.get("reports", {}).items())
    print(f"wrote {out}, {checkpoint}, {out.with_suffix('.json')}")
    print(f"test acc {100 * metrics['test_acc']:.2f}%, PGD acc {100 * metrics['pgd_acc']:.2f}% "
          f"(eps {metrics['eval_epsilon']:g}); unstable ReLUs per image: {unstable or 'not computed'}")
    return 0


def _load_network_and_data(onnx_path: str, data_path: str, n: int | None):
    from vnnx.data import load_npz
    from vnnx.io.onnx import load_onnx, to_network

    network = to_network(load_onnx(onnx_path))
    data = load_npz(data_path)
    if n is not None:
        if n < 1:
            raise ConfigError(f"--n-samples must be >= 1, got {n}")
        data = data.subset(0, min(n, len(data)))
    return network, data


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import format_report_table, friendliness_report

    from vnnx.util import check_writable_file

    # Into the working directory by default: the ONNX file's folder may be read-only or shared.
    json_path = Path(args.json) if args.json else Path(Path(args.onnx).stem + f".report-{args.method}.json")
    check_writable_file(json_path, "report JSON")   # the default too, before the work
    network, data = _load_network_and_data(args.onnx, args.data, args.n_samples)
    report = friendliness_report(network, data.x, args.epsilon, args.method,
                                 clip=(args.clip_min, args.clip_max), lp_time_limit=args.lp_time_limit)
    report["onnx"], report["data"] = str(args.onnx), str(args.data)
    print(format_report_table(report))
    _write_json(json_path, report)
    print(f"wrote {json_path}")
    return 0


def _cmd_prune(args: argparse.Namespace) -> int:
    import numpy as np

    from vnnx.io.onnx import network_to_onnx

    from .passes import adversarial_inputs, prune_relus, prune_small_weights
    from .run import NetworkModule

    if args.weight_threshold is None and not args.relus:
        raise ConfigError("nothing to do: give --weight-threshold and/or --relus")
    network, data = _load_network_and_data(args.onnx, args.data, args.n_samples)
    reports = []
    if args.weight_threshold is not None:
        network, rep = prune_small_weights(network, args.weight_threshold)
        reports.append(rep)
    if args.relus:
        x = data.x
        if args.epsilon > 0:
            x = adversarial_inputs(NetworkModule(network), data.x, data.y, args.epsilon, steps=args.pgd_steps,
                                   seed=args.seed, clip=(args.clip_min, args.clip_max))
        network, rep = prune_relus(network, np.asarray(x).reshape(len(x), -1),
                                   active_threshold=args.active_threshold,
                                   inactive_threshold=args.inactive_threshold,
                                   input_range=(args.clip_min, args.clip_max))
        reports.append(rep)
    network_to_onnx(network, args.out)
    for rep in reports:
        print(json.dumps(rep.as_dict()))
    print(f"wrote {args.out}")
    if args.certify is not None:
        from vnnx.certify import certify_transform

        print(certify_transform(args.onnx, args.out, data.x, args.certify, what="samples of --data",
                                clip=(args.clip_min, args.clip_max), timeout=args.certify_timeout)[0])
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``train``, ``report`` and ``rs-prune`` to the ``vnnx`` command line."""
    from vnnx.certify import add_certify_flags
    from .config import add_config_flags

    p = sub.add_parser("train", help="train a network (plain, PGD, +L1, +RS loss; ReLU-stability plugin)",
                       description="Train with vnnx's training loop as a YAML config says; every config key "
                                   "is also a flag, which overrides the file. Writes MODEL.onnx, MODEL.pt "
                                   "(checkpoint) and MODEL.json (history, passes, metrics).")
    p.add_argument("--config", required=True, help="YAML config (see specs/configs/)")
    p.add_argument("--out", required=True, help="ONNX file to write")
    add_config_flags(p)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("report", help="unstable ReLUs, bound widths, MILP binaries and sparsity of a network")
    p.add_argument("--onnx", required=True, help="network (.onnx)")
    p.add_argument("--data", required=True, help=".npz with x (inputs) and y (labels)")
    p.add_argument("--epsilon", type=float, required=True, help="L-inf radius (model-input units)")
    p.add_argument("--method", choices=("ibp", "improved-ia", "crown", "alpha-crown", "lp"), default="improved-ia",
                   help="bounds: naive IA, improved IA, CROWN, alpha-CROWN, or LP-tightened (slow) "
                        "(default improved-ia)")
    p.add_argument("--n-samples", type=int, default=None, help="use the first N samples (default: all)")
    p.add_argument("--clip-min", type=float, default=0.0, help="lowest valid input value (default 0)")
    p.add_argument("--clip-max", type=float, default=1.0, help="highest valid input value (default 1)")
    p.add_argument("--lp-time-limit", type=float, default=None, help="seconds of LP tightening per sample")
    p.add_argument("--json", help="JSON output (default: MODEL.report-METHOD.json in the working directory)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("rs-prune", help="small-weight and ReLU pruning passes (ReLU-stability plugin), ONNX in, ONNX out")
    p.add_argument("--onnx", required=True, help="network (.onnx)")
    p.add_argument("--data", required=True, help=".npz training samples (x, y) for counting activations")
    p.add_argument("--out", required=True, help="ONNX file to write")
    p.add_argument("--weight-threshold", type=float, default=None, help="zero weights with |w| below this "
                                                                         "(paper: 1e-3)")
    p.add_argument("--relus", action="store_true", help="prune ReLUs by activation frequency")
    p.add_argument("--active-threshold", type=float, default=0.9, help="identity at >= this fraction (0.9)")
    p.add_argument("--inactive-threshold", type=float, default=0.1, help="zero at <= this fraction (0.1)")
    p.add_argument("--epsilon", type=float, default=0.0, help="count on PGD-perturbed samples of this radius "
                                                                "(default 0: clean samples)")
    p.add_argument("--pgd-steps", type=int, default=8, help="PGD steps for the perturbed samples (8)")
    p.add_argument("--n-samples", type=int, default=None, help="use the first N samples (default: all)")
    p.add_argument("--clip-min", type=float, default=0.0, help="lowest valid input value (default 0)")
    p.add_argument("--clip-max", type=float, default=1.0, help="highest valid input value (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the PGD starts")
    add_certify_flags(p)
    p.set_defaults(func=_cmd_prune)
