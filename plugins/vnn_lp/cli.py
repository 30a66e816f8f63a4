"""``vnnx sparsify`` and ``vnnx prune-magnitude``: parse, call the library, print."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from vnnx.errors import ConfigError

from .options import EPSILON_MODES, FORMULATIONS, SOLVERS, SparsifyOptions


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _clip(text: str) -> Optional[tuple[float, float]]:
    if text.lower() == "none":
        return None
    vals = _floats(text)
    if len(vals) != 2 or vals[0] > vals[1]:
        raise argparse.ArgumentTypeError(f"expected LO,HI or 'none', got {text!r}")
    return vals[0], vals[1]


def _layers(text: str):
    if text == "all":
        return "all"
    try:
        k = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'all' or a positive integer, got {text!r}") from None
    if k < 1:
        raise argparse.ArgumentTypeError(f"expected 'all' or a positive integer, got {text!r}")
    return k


def _add_data_flags(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--data", required=required, help="validation set, .npz with x (N, ...) in model-input space and y (N,)")
    p.add_argument("--val-count", type=int, default=None,
                   help="use the first N samples of --data for validation and the rest as the test set "
                        "(default: all of --data validates)")
    p.add_argument("--test", default=None, help="test set .npz for accuracy and verified robustness")


def _add_eval_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deltas", type=_floats, default=[],
                   help="L∞ radii for verified robustness on the test set, e.g. 0.01,0.02,0.03,0.05 (default: none)")
    p.add_argument("--verify", default="crown",
                   help="verification methods, comma-separated: crown, alpha-crown, milp (default: crown)")
    p.add_argument("--milp-timeout", type=float, default=10.0, help="MILP seconds per sample and radius (default 10)")
    p.add_argument("--clip", type=_clip, default=(0.0, 1.0), help="input range of the robustness boxes, LO,HI or none (default 0,1)")
    p.add_argument("--test-count", type=int, default=None, help="use only the first N test samples")
    p.add_argument("--plot", default=None, help="PNG of verified robustness against δ (the paper's Figure 1)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``sparsify`` and ``prune-magnitude`` to the ``vnnx`` command line."""
    from vnnx.certify import add_certify_flags

    d = SparsifyOptions()
    p = subparsers.add_parser(
        "sparsify", help="VNN LP sparsification with guarantees on a validation set (ONNX in, ONNX out)",
        description="Re-solve each layer's weights with an LP (minimum L1 norm) so that every validation "
                    "sample keeps its ReLU pattern in every layer, its argmax and its margin; the result is "
                    "checked in onnxruntime before it is written.")
    p.add_argument("--onnx", required=True, help="input network (.onnx or .onnx.gz)")
    p.add_argument("--out", required=True, help="sparsified network (.onnx), written only after the guarantee check passes")
    _add_data_flags(p, required=True)
    p.add_argument("--epsilon", type=float, default=d.epsilon,
                   help="ε-neighbourhood of each layer's outputs (default 0: kept exactly, per-neuron LPs)")
    p.add_argument("--epsilon-mode", choices=EPSILON_MODES, default=d.epsilon_mode,
                   help="relative: |z̃-z| <= ε|z| (paper); absolute: |z̃-z| <= ε (default relative)")
    p.add_argument("--margin", type=float, default=d.margin, help="logit margin M kept on validation samples (default 0)")
    p.add_argument("--layers", type=_layers, default="all", help="'all' or k: sparsify the first k affine layers (default all)")
    p.add_argument("--solver", choices=SOLVERS, default=d.solver, help="LP back end (default highs)")
    p.add_argument("--time-limit", type=float, default=None, help="seconds per LP; a layer that runs out keeps its weights")
    p.add_argument("--slack", type=float, default=d.slack, help=f"LP distance kept from 0 on strict sides (default {d.slack:g})")
    p.add_argument("--formulation", choices=FORMULATIONS, default=d.formulation,
                   help="auto: per-neuron LPs when possible (default); coupled: one LP per layer; paper: the paper's LP")
    p.add_argument("--workers", type=int, default=d.workers, help="processes for per-neuron LPs (default 1)")
    from vnnx.executor import add_executor_flags

    add_executor_flags(p, jobs=False)   # or a Dask cluster for them
    p.add_argument("--no-onnx-check", action="store_true",
                   help="check in float64/float32 numpy only, not in onnxruntime (not recommended)")
    p.add_argument("--mbp", action="store_true",
                   help="also evaluate magnitude pruning to the same per-layer non-zero counts")
    p.add_argument("--report", default=None, help="JSON report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_eval_flags(p)
    add_certify_flags(p)
    p.set_defaults(func=cmd_sparsify)

    q = subparsers.add_parser("prune-magnitude", help="magnitude-based pruning baseline (no guarantee)",
                              description="Zero each affine layer's smallest-magnitude weights.")
    q.add_argument("--onnx", required=True, help="input network")
    q.add_argument("--out", required=True, help="pruned network (.onnx)")
    q.add_argument("--rate", type=float, required=True, help="fraction of each layer's weights set to zero, in [0, 1]")
    q.add_argument("--layers", type=_layers, default="all", help="'all' or k: prune the first k affine layers")
    q.add_argument("--data", default=None, help="optional .npz (x, y) for test accuracy and robustness")
    q.add_argument("--report", default=None, help="JSON report")
    _add_eval_flags(q)
    q.set_defaults(func=cmd_prune_magnitude, val_count=0, test=None, quiet=True)


def _load_network(path: str):
    from vnnx.io.onnx import load_onnx, to_network

    model = load_onnx(path)
    return model, to_network(model)


def _split(args, network):
    """Validation and test arrays from --data / --val-count / --test / --test-count."""
    from vnnx.data import load_npz

    from .patterns import check_inputs

    xv = yv = xt = yt = None
    if args.data:
        data = load_npz(args.data)
        n_val = len(data) if args.val_count is None else int(args.val_count)
        if not 0 <= n_val <= len(data):
            raise ConfigError(f"--val-count {n_val} is outside 0..{len(data)} ({args.data})")
        xv, yv = data.x[:n_val], data.y[:n_val]
        if n_val < len(data):
            xt, yt = data.x[n_val:], data.y[n_val:]
    if args.test:
        t = load_npz(args.test)
        xt, yt = t.x, t.y
    if xt is not None:
        if args.test_count is not None:
            xt, yt = xt[:args.test_count], yt[:args.test_count]
        xt, yt = check_inputs(network, xt, yt)
    return xv, yv, xt, yt


def _methods(text: str) -> list[str]:
    from .evaluate import METHODS

    methods = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError(f"--verify: {', '.join(bad) or text!r} not among {', '.join(METHODS)}")
    return methods


def _relaxations():
    try:
        from vnnx.cli import relaxations_for

        return relaxations_for("capm")
    except Exception:  # a missing plugin only costs MaxPool bound quality
        return None


def _evaluate(args, networks: dict, xt, yt, progress: bool) -> dict:
    from .evaluate import evaluate, plot_robustness

    if xt is None:
        if args.deltas:
            raise ConfigError("--deltas needs a test set: --test, or --val-count smaller than --data")
        return {}
    ev = evaluate(networks, xt, yt, args.deltas, _methods(args.verify), args.milp_timeout, args.clip,
                  _relaxations(), progress)
    if args.plot and args.deltas:
        plot_robustness(ev["robustness"], args.plot, title=Path(args.onnx).name)
    return ev


def cmd_sparsify(args: argparse.Namespace) -> int:
    from .prune import prune_magnitude
    from .sparsify import sparsify

    _, network = _load_network(args.onnx)
    xv, yv, xt, yt = _split(args, network)
    if xv is None or len(xv) == 0:
        raise ConfigError("sparsify needs at least one validation sample (--data, --val-count)")
    opts = SparsifyOptions(epsilon=args.epsilon, epsilon_mode=args.epsilon_mode, margin=args.margin,
                           layers=args.layers, solver=args.solver, time_limit=args.time_limit, slack=args.slack,
                           formulation=args.formulation, workers=args.workers,
                           scheduler=args.scheduler, local_cluster=args.local_cluster,
                           check_onnx=not args.no_onnx_check, progress=not args.quiet)
    sparse, report = sparsify(network, xv, yv, opts, out=args.out)
    networks = {"original": network, "vnn": sparse}
    if args.mbp:
        networks["mbp"] = prune_magnitude(network, keep={r.index: r.nnz_after for r in report.layers})
    report.evaluation = _evaluate(args, networks, xt, yt, not args.quiet)
    print(report.table())
    print(f"wrote {args.out}")
    if args.certify is not None:
        from vnnx.certify import certify_transform

        text, report.evaluation["certify"] = certify_transform(args.onnx, args.out, xv, args.certify, clip=args.clip,
                                                               timeout=args.certify_timeout, progress=not args.quiet)
        print(text)
    if args.report:
        report.to_json(args.report)
        print(f"wrote {args.report}")
    if args.plot and report.evaluation.get("robustness"):
        print(f"wrote {args.plot}")
    return 0


def cmd_prune_magnitude(args: argparse.Namespace) -> int:
    from vnnx.io.onnx import network_to_onnx
    from vnnx.util import write_text_atomic

    from .patterns import split_segments
    from .prune import prune_magnitude
    from .report import nonzeros

    _, network = _load_network(args.onnx)
    pruned = prune_magnitude(network, rate=args.rate, layers=args.layers)
    network_to_onnx(pruned, args.out)
    _, segments = split_segments(network)
    rows = [{"index": s.affine, "nnz_before": nonzeros(network.layers[s.affine]),
             "nnz_after": nonzeros(pruned.layers[s.affine])} for s in segments]
    for r in rows:
        print(f"layer {r['index']:>3}: {r['nnz_before']:>8} -> {r['nnz_after']:>8} non-zeros")
    result = {"rate": args.rate, "layers": rows}
    if args.data:
        args.test, args.val_count = None, 0
        _, _, xt, yt = _split(args, network)
        result["evaluation"] = _evaluate(args, {"original": network, "mbp": pruned}, xt, yt, False)
        from .report import robustness_table

        ev = result["evaluation"]
        print("test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in ev.get("accuracy", {}).items()))
        if ev.get("robustness"):
            print(robustness_table(ev["robustness"]))
    print(f"wrote {args.out}")
    if args.report:
        from .report import _plain

        write_text_atomic(args.report, json.dumps(_plain(result), indent=2) + "\n")
    return 0


#: The main job's VNN section: δ grid and test images (quick: fewer), validation images.
DEMO_DELTAS = (0.01, 0.02, 0.03, 0.05)
DEMO_QUICK_DELTAS = (0.02, 0.03)
DEMO_TEST, DEMO_QUICK_TEST, DEMO_VALIDATION = 200, 50, 200


def demo(demo_dir, out_dir, quick: bool = False) -> Optional[dict]:
    """The main job's VNN section, in the paper's setting: the shipped *normally trained* 3x50
    MLP sparsified at ε = 0 on 200 validation images (test images 1000-1199, not trained on),
    against the original and magnitude pruning at the same per-layer sparsity; verified
    robustness with CROWN on evaluation images 0-199 (0-49 with ``quick``) over a δ grid, the
    guarantee check, non-zeros and accuracy. The trade-off with 1000 validation images is read
    from ``vnn_tradeoff.json`` (measured by tools/make_demo.py). Returns the section's summary
    (promise, measured, met, numbers) for the demo's table, or None when the files are missing."""
    from vnnx.data import load_npz
    from vnnx.io.onnx import load_onnx, to_network

    from .evaluate import evaluate, plot_robustness
    from .prune import prune_magnitude
    from .sparsify import sparsify

    demo_dir, out = Path(demo_dir), Path(out_dir) / "vnn_lp"
    model_path, val_path = demo_dir / "mnist_3x50_plain.onnx", demo_dir / "mnist_val1000.npz"
    test_path = demo_dir / "mnist_eval400.npz"
    if not all(p.is_file() for p in (model_path, val_path, test_path)):
        print(f"vnn-lp demo: {model_path}, {val_path} or {test_path} missing (tools/make_demo.py --parts plain); "
              "skipped", file=sys.stderr)
        return None
    out.mkdir(parents=True, exist_ok=True)
    network = to_network(load_onnx(model_path))
    val, test = load_npz(val_path), load_npz(test_path)
    n_test = DEMO_QUICK_TEST if quick else DEMO_TEST
    deltas = DEMO_QUICK_DELTAS if quick else DEMO_DELTAS
    xv, yv = val.x[:DEMO_VALIDATION].reshape(DEMO_VALIDATION, -1), val.y[:DEMO_VALIDATION]
    xt, yt = test.x[:n_test].reshape(n_test, -1), test.y[:n_test]
    sparse, report = sparsify(network, xv, yv, SparsifyOptions(progress=False), out=out / "mnist_3x50_vnn.onnx")
    mbp = prune_magnitude(network, keep={r.index: r.nnz_after for r in report.layers})
    ev = evaluate({"original": network, "vnn": sparse, "mbp": mbp}, xt, yt, deltas, ("crown",), progress=True)
    report.evaluation = ev
    print(report.table())
    report.to_json(out / "report.json")
    plot_robustness(ev["robustness"], out / "robustness.png",
                    title=f"normally trained 3x50, CROWN, {n_test} test images")
    verified = {k: {d: float(v["crown"][d]["verified"]) for d in deltas} for k, v in ev["robustness"].items()}
    top = max(deltas)
    met = (bool(report.guarantee.get("passed"))
           and all(verified["vnn"][d] >= verified["original"][d] for d in deltas if d > 0.01)
           and verified["vnn"][top] > verified["original"][top] and verified["vnn"][top] > verified["mbp"][top])
    tradeoff = None
    if (demo_dir / "vnn_tradeoff.json").is_file():
        tradeoff = json.loads((demo_dir / "vnn_tradeoff.json").read_text())
        print("trade-off measured by tools/make_demo.py (not re-run here), CROWN on evaluation images 0-199:")
        for n_val, row in tradeoff["rows"].items():
            v = row["verified_crown"]
            print(f"  validation {n_val:>4}: accuracy {100 * row['accuracy']['original']:.1f} -> "
                  f"{100 * row['accuracy']['vnn']:.1f} %, non-zeros {row['nonzeros']['original']} -> "
                  f"{row['nonzeros']['vnn']}, verified at δ 0.03: original {100 * v['original']['0.03']:.1f} %, "
                  f"VNN {100 * v['vnn']['0.03']:.1f} %, MBP {100 * v['mbp']['0.03']:.1f} %  "
                  f"({row['sparsify_seconds']:.0f} s)")
    print(f"wrote {out}/(mnist_3x50_vnn.onnx, report.json, robustness.png)")
    d_show = 0.03 if 0.03 in deltas else top
    pct = lambda k, d: f"{100 * verified[k][d]:.0f} %"  # noqa: E731
    measured = (f"verified at δ {d_show:g}: original {pct('original', d_show)}, VNN {pct('vnn', d_show)}, "
                f"MBP {pct('mbp', d_show)}; non-zeros {report.nnz_before} -> {report.nnz_after}; accuracy "
                f"{100 * ev['accuracy']['original']:.1f} -> {100 * ev['accuracy']['vnn']:.1f} %; guarantee "
                f"{'passed' if report.guarantee.get('passed') else 'FAILED'}")
    return {"section": "VNN LP", "promise": "sparsified at ε = 0, every validation prediction kept, and more test "
                                              "samples verified than the original and than magnitude pruning",
            "measured": measured, "met": met,
            "numbers": {"deltas": list(deltas), "n_test": n_test, "n_validation": DEMO_VALIDATION,
                        "verified_crown": {k: {str(d): x for d, x in v.items()} for k, v in verified.items()},
                        "accuracy": ev["accuracy"], "nonzeros": {"original": report.nnz_before, "vnn": report.nnz_after},
                        "guarantee": bool(report.guarantee.get("passed")), "tradeoff": tradeoff,
                        "files": [str(out / n) for n in ("mnist_3x50_vnn.onnx", "report.json", "robustness.png")]}}
