#!/usr/bin/env python
"""Train the small Sigmoid / Tanh MNIST MLPs shipped in ``specs/mnist_demo/`` (deterministic).

Training uses MNIST test images 1000..9999 and evaluation images 0..999
(:func:`vnnx.data.mnist_split`; the official training set is not available here). Inputs are in
[0, 1], no normalisation; the ONNX input is (1, 1, 28, 28). Each model is checked against
onnxruntime before it is written (:func:`vnnx.io.onnx.export_onnx`).

Usage::

    tools/train_sigmoid.py --data ../shared/data/mnist --out specs/mnist_demo
    tools/train_sigmoid.py --only sigmoid_6x100 --epochs 5    # one model, quicker

Prints one JSON line per model (name, file, hidden sizes, activation, eval accuracy, seconds).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

#: name -> (activation, hidden widths)
MODELS = {
    "sigmoid_6x100": ("sigmoid", (100,) * 6),
    "tanh_6x100": ("tanh", (100,) * 6),
    "sigmoid_3x20": ("sigmoid", (20,) * 3),
    "tanh_3x20": ("tanh", (20,) * 3),
}


def build(activation: str, hidden) -> "object":
    """``Flatten -> (Linear -> act) x len(hidden) -> Linear(10)`` as a torch module."""
    from torch import nn

    act = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[activation]
    layers, width = [nn.Flatten()], 784
    for h in hidden:
        layers += [nn.Linear(width, h), act()]
        width = h
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "mnist"), help="MNIST folder")
    p.add_argument("--out", default=str(REPO / "specs" / "mnist_demo"), help="output folder for the ONNX files")
    p.add_argument("--only", action="append", choices=sorted(MODELS), help="train only this model (repeatable)")
    p.add_argument("--epochs", type=int, default=60, help="training epochs (default 60)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)

    from vnnx.data import mnist_split
    from vnnx.errors import VnnxError
    from vnnx.io.onnx import export_onnx
    from vnnx.training import accuracy, seed_everything, train

    try:
        train_set, evaluation = mnist_split(args.data)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for name in args.only or list(MODELS):
            activation, hidden = MODELS[name]
            t0 = time.monotonic()
            seed_everything(args.seed)
            model = build(activation, hidden)
            train(model, train_set.x, train_set.y, epochs=args.epochs, lr=1e-3, seed=args.seed, progress=False)
            acc = accuracy(model, evaluation.x, evaluation.y)
            path = out / f"mnist_{name}.onnx"
            export_onnx(model, (1, 1, 28, 28), path)
            print(json.dumps({"name": name, "file": str(path), "activation": activation, "hidden": list(hidden),
                              "eval_accuracy": round(acc, 4), "seconds": round(time.monotonic() - t0, 1)}),
                  flush=True)
    except VnnxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
