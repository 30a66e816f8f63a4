#!/usr/bin/env python
"""Build the shipped default of the README's main job (specs/mnist_demo/).

Part ``robust``: trains a small MNIST ReLU network (784-50-50-10, the VNN paper's "2x50") with
vnnx's training loop and short PGD adversarial training, exports it to ONNX, saves the evaluation
images the main job needs (so it runs without ../shared), and generates VNN-LIB robustness specs
with `vnnx spec`.

Part ``capm``: a small MNIST CNN with overlapping 3x3/2 MaxPool windows, normally trained
(``mnist_maxpool_overlap.onnx``).

Part ``relu``: the ReLU-stability control and +RS CNNs (``relu_control.onnx.gz``, ``relu_rs.onnx.gz``),
trained by ``vnnx train`` on ``specs/configs/relu_stability_small_{control,rs}.yaml``.

Part ``vericompress``: the dense CROWN-IBP backbone and its VeriCompress compact network at 10 %
of its parameters (``vc_backbone.onnx``, ``vc_compact.onnx``; about 2.5 minutes each).

Part ``plain``: the VNN paper's setting, a *normally* trained 784-50-50-50-10 MLP (trained on test
images 2000-9999), the 1000 validation images 1000-1999 it was not trained on, and the VNN trade-off
between validation sizes (200 and 1000 images: accuracy, non-zeros, verified robustness with CROWN
on evaluation images 0-199), measured here once and shipped as ``vnn_tradeoff.json`` because the
1000-image sparsification takes about 1.5 minutes.

Data: ../shared/data/mnist (only the official *test* set exists there): training uses test images
1000-9999, evaluation images 0-999 (see vnnx.data.mnist_split). Everything is seeded.

Run:  .venv/bin/python tools/make_demo.py [--mnist-dir DIR] [--parts robust plain]
(measured 2026-12-01 on the 2-core container, one core: robust about 1 minute, plain 2.5, capm 0.5,
relu 7.5 (two 32-epoch PGD trainings), vericompress 5)
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

import vnnx  # noqa: F401
from vnnx.architectures import mlp
from vnnx.attack import pgd_linf
from vnnx.data import mnist_split, save_npz
from vnnx.io.onnx import export_onnx
from vnnx.specgen import generate_robustness_specs
from vnnx.training import accuracy, linear_ramp, train

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "specs" / "mnist_demo"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mnist-dir", default=str(ROOT.parent / "shared" / "data" / "mnist"))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--epsilon", type=float, default=0.03, help="PGD training radius")
    ap.add_argument("--parts", nargs="+", choices=("robust", "plain", "capm", "relu", "vericompress"),
                    default=["robust", "plain", "capm", "relu", "vericompress"])
    args = ap.parse_args()

    train_set, eval_set = mnist_split(args.mnist_dir)
    if "plain" in args.parts:
        build_plain(train_set, eval_set)
    if "robust" in args.parts:
        build_robust(args, train_set, eval_set)
    if "capm" in args.parts:
        build_capm(train_set, eval_set)
    if "relu" in args.parts:
        build_relu()
    if "vericompress" in args.parts:
        build_vericompress()


def build_vericompress() -> None:
    """The VeriCompress section's pair: the dense CROWN-IBP backbone (cnn4, 89,606 parameters)
    and its VeriCompress compact network at 10 % of the parameters, both trained on
    specs/configs/vericompress_mnist.yaml's schedule (ε 0.1, 10 epochs, 9000 images)."""
    from vericompress_demo import build  # noqa: F401 - kept beside this script

    build(ROOT / "specs" / "configs" / "vericompress_mnist.yaml", OUT)


def build_relu() -> None:
    """The ReLU-stability section's two CNNs, with `vnnx train` on the shipped configs (the +RS
    model of docs/relu_stability.md's 32-epoch protocol and its control without the RS loss)."""
    import subprocess
    import sys

    # gzipped: ReLU pruning folds the convolutions into dense matrices (2.7 MB as plain ONNX, 90 KB gzipped)
    for config, name in (("relu_stability_small_rs.yaml", "relu_rs"),
                         ("relu_stability_small_control.yaml", "relu_control")):
        subprocess.run([sys.executable, "-m", "vnnx.cli", "train", "--config", str(ROOT / "specs" / "configs" / config),
                        "--out", str(OUT / f"{name}.onnx.gz")], check=True)
        for extra in OUT.glob(f"{name}*.pt"):     # the torch checkpoint is not shipped
            extra.unlink()


def build_capm(train_set, eval_set) -> None:
    """The CAPM section's network: Conv(4) -> ReLU -> MaxPool 3x3/2 -> Conv(8) -> ReLU -> MaxPool
    3x3/2 -> FC 50 -> FC 10 (overlapping windows), normally trained for 3 epochs on 6000 images."""
    from vnnx.architectures import conv_maxpool_overlap

    model = conv_maxpool_overlap(channels=(4, 8), hidden=50)
    train(model, train_set.x[:6000], train_set.y[:6000], epochs=3, batch_size=64, lr=2e-3, seed=0, progress=False)
    print(f"maxpool CNN: evaluation accuracy (images 0-999) {accuracy(model, eval_set.x, eval_set.y):.3f}")
    export_onnx(model, (1, 1, 28, 28), OUT / "mnist_maxpool_overlap.onnx")


#: The plain model's δ grid and validation sizes of the VNN trade-off.
TRADEOFF_DELTAS = (0.01, 0.02, 0.03, 0.05)
TRADEOFF_VALIDATION = (200, 1000)


def build_plain(train_set, eval_set) -> None:
    import time

    from vnnx.io.onnx import load_onnx, to_network
    from vnnx_plugins.vnn_lp.evaluate import evaluate
    from vnnx_plugins.vnn_lp.options import SparsifyOptions
    from vnnx_plugins.vnn_lp.prune import prune_magnitude
    from vnnx_plugins.vnn_lp.sparsify import sparsify

    x_val, y_val = train_set.x[:1000], train_set.y[:1000]            # test images 1000-1999
    model = mlp((50, 50, 50))
    history = train(model, train_set.x[1000:], train_set.y[1000:], epochs=10, batch_size=64, lr=1e-3, seed=0,
                    progress=False)
    OUT.mkdir(parents=True, exist_ok=True)
    export_onnx(model, (1, 1, 28, 28), OUT / "mnist_3x50_plain.onnx")
    save_npz(OUT / "mnist_val1000.npz", x_val, y_val)
    network = to_network(load_onnx(OUT / "mnist_3x50_plain.onnx"))
    xt, yt = eval_set.x[:200].reshape(200, -1), eval_set.y[:200]
    rows = {}
    for n_val in TRADEOFF_VALIDATION:
        t0 = time.monotonic()
        sparse, report = sparsify(network, x_val[:n_val].reshape(n_val, -1), y_val[:n_val], SparsifyOptions(progress=False))
        seconds = time.monotonic() - t0
        mbp = prune_magnitude(network, keep={r.index: r.nnz_after for r in report.layers})
        ev = evaluate({"original": network, "vnn": sparse, "mbp": mbp}, xt, yt, TRADEOFF_DELTAS, ("crown",))
        rows[str(n_val)] = {
            "sparsify_seconds": round(seconds, 1), "guarantee": bool(report.guarantee.get("passed")),
            "nonzeros": {"original": report.nnz_before, "vnn": report.nnz_after},
            "accuracy": ev["accuracy"],
            "verified_crown": {k: {str(d): v["crown"][d]["verified"] for d in TRADEOFF_DELTAS}
                               for k, v in ev["robustness"].items()}}
        print(f"validation {n_val}: {rows[str(n_val)]}")
    (OUT / "vnn_tradeoff.json").write_text(json.dumps({
        "model": "mnist_3x50_plain.onnx (784-50-50-50-10, normal training, 10 epochs, test images 2000-9999)",
        "validation": "test images 1000-1999 (the first N)", "test": "evaluation images 0-199", "epsilon": 0.0,
        "train_history": history.epochs, "rows": rows}, indent=2))


def build_robust(args, train_set, eval_set) -> None:
    model = mlp((50, 50))
    attack = lambda m, x, y, eps: pgd_linf(m, x, y, eps, steps=8)  # noqa: E731
    history = train(model, train_set.x, train_set.y, epochs=args.epochs, batch_size=64, lr=1e-3, seed=0,
                    attack=attack, epsilon=linear_ramp(0.005, args.epsilon, args.epochs / 2))
    acc = accuracy(model, eval_set.x, eval_set.y)
    print(f"evaluation accuracy (images 0-999): {acc:.3f}")

    OUT.mkdir(parents=True, exist_ok=True)
    export_onnx(model, (1, 1, 28, 28), OUT / "mnist_2x50.onnx")
    # First 400 evaluation images, as in the VNN paper's protocol (200 validation, 200 test).
    save_npz(OUT / "mnist_eval400.npz", eval_set.x[:400], eval_set.y[:400])
    rows = generate_robustness_specs(OUT / "mnist_eval400.npz", OUT / "specs", epsilons=[0.02, 0.05, 0.1], count=8,
                                     start=200, onnx=str(OUT / "mnist_2x50.onnx"), timeout=30.0)
    (OUT / "training.json").write_text(json.dumps({
        "architecture": "mlp 784-50-50-10", "epochs": args.epochs, "pgd_epsilon": args.epsilon,
        "train_images": "MNIST test 1000-9999", "eval_accuracy_0_999": acc,
        "history": history.epochs}, indent=2))
    print(f"wrote {OUT} ({len(rows)} instances)")


if __name__ == "__main__":
    main()
