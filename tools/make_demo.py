#!/usr/bin/env python
"""Build the shipped default of the README's main job (specs/mnist_demo/).

Trains a small MNIST ReLU network (784-50-50-10, the VNN paper's "2x50") with vnnx's training
loop and short PGD adversarial training, exports it to ONNX, saves the evaluation images the
main job needs (so it runs without ../shared), and generates VNN-LIB robustness specs with
`vnnx spec`. Data: ../shared/data/mnist (only the official *test* set exists there): training
uses test images 1000-9999, evaluation images 0-999 (see vnnx.data.mnist_split).

Run:  .venv/bin/python tools/make_demo.py [--mnist-dir DIR]
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
    args = ap.parse_args()

    train_set, eval_set = mnist_split(args.mnist_dir)
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
