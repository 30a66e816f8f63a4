#!/usr/bin/env python
"""Seeded differential soundness harness for vnnx (DESIGN.md, "Soundness rules").

It generates small random networks (its own numpy representation, written to ONNX by itself) and
random VNN-LIB properties of every shape VNN-COMP uses, computes the TRUE answer of each case
independently of vnnx's bound code, runs vnnx's verification stages one at a time, and flags wrong
verdicts.

* Networks: MLP, CNN, MaxPool, BatchNorm, Sigmoid, Tanh and residual families (skip connections,
  verified through vnnx's bound graph), each at a weight scale drawn from {0.3, 1, 3}.
* Truth: for piecewise-linear networks an exact MILP built here (scipy.optimize.milp / HiGHS, big-M
  from this file's own interval arithmetic, MaxPool encoded exactly, BatchNorm folded here) computes
  ``m* = min over (box, clause) of min_{x in box} max_rows (a.y(x) - b)``. For Sigmoid/Tanh networks
  only an onnxruntime-confirmed witness (dense sampling + gradient search) proves sat and only this
  file's interval arithmetic (with input bisection) proves unsat; anything else is "uncertain".
  None of vnnx.milp / bounds / bab / engine / graph / network is imported by truth code.
* Verdict rules: ``sat`` is WRONG when its witness fails this harness's own check (inputs within 1e-4
  of some disjunct's box, onnxruntime output satisfying every row of a clause of that same disjunct
  within 1e-4); ``unsat`` is WRONG when the truth is certain sat. A confirmed ``sat`` on a certain-unsat
  truth is reported separately, as a harness inconsistency.

Usage::

    tools/soundness.py --short                          # >= 200 cases, about a minute
    tools/soundness.py --long --out out/soundness_long.jsonl --cases 20000   # resumable
    tools/soundness.py --summary out/soundness_long.jsonl
    tools/soundness.py --case 0:17 --stage bab -v      # reproduce one case

The module is importable (``run(mode=...) -> summary dict``); tests/test_soundness.py loads it with
importlib.
"""
from __future__ import annotations

import os

# One thread for every numeric library: the harness is meant to share a small machine with other
# work (the long mode runs in the background on a 2-core container). Must precede numpy/torch.
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Callable, Optional, Sequence  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: `vnnx` must import
    sys.path.insert(0, str(REPO))

# ---------------------------------------------------------------------------------- constants
#: The stages, as vnnx.verify.METHODS spells them (checked against it at run time).
STAGES = ("auto", "pgd", "ibp", "crown", "alpha-crown", "input-split", "bab", "milp")
#: VNN-COMP's counterexample tolerance, on inputs (distance to the box) and output rows.
WITNESS_TOL = 1e-4
#: A harness witness proves "certain sat" only with onnxruntime margin below -WITNESS_TOL AND the
#: float64 margin (this file's forward, at the point clipped into the box) below this: then the
#: point is a counterexample both for VNN-COMP's float32 checker and for the real-valued network
#: every `unsat` claim is about.
F64_SAT_MARGIN = -5e-5
#: "Certain unsat" needs the proven lower bound on m* above WITNESS_TOL plus a float32 slack
#: proportional to the size of the constrained outputs (onnxruntime runs float32: a point whose
#: float64 margin is just above 1e-4 can read <= 1e-4 there, which VNN-COMP would accept as sat).
F32_REL_SLACK = 2e-6
#: Per-stage vnnx timeout (seconds) and the truth MILP's time limit.
STAGE_TIMEOUT = 5.0
MILP_TIME_LIMIT = 60.0
#: Short mode size, and the number of stages each case runs (rotating over STAGES).
SHORT_CASES = 216
STAGES_PER_CASE = 3
#: Network families and their weights in the draw ("residual": skip connections, which vnnx
#: verifies through its bound graph since 2026-12-01).
FAMILY_WEIGHTS = {"mlp": 0.24, "cnn": 0.15, "maxpool": 0.21, "batchnorm": 0.16, "sigmoid": 0.12,
                  "tanh": 0.12, "residual": 0.10}
DEFAULT_FAMILIES = ("mlp", "cnn", "maxpool", "batchnorm", "sigmoid", "tanh", "residual")
WEIGHT_SCALES = (0.3, 1.0, 3.0)
MAX_RELUS = 12
#: Property shapes and their weights (see make_property).
SHAPE_WEIGHTS = {"robust": 0.15, "halfspace": 0.09, "interval": 0.10, "acas": 0.10, "or-and": 0.10,
                 "multibox": 0.12, "pointbox": 0.11, "tiny": 0.08, "huge": 0.08, "noout": 0.04,
                 "multibox-noout": 0.03}
VERDICT_KEYS = ("sat", "unsat", "unknown", "timeout", "error", "crash")


class HarnessError(RuntimeError):
    """The harness itself failed (its ONNX disagrees with its numpy forward, a MILP failed)."""


# ================================================================ 1. the harness's own networks
# Layers act on one sample; shapes are per-sample (no batch dim): (n,) or (C, H, W).

@dataclass
class Dense:
    """y = W x + b on a flat vector; written as Gemm(transB=1) or MatMul + Add."""
    W: np.ndarray  # (out, in) float32
    b: np.ndarray  # (out,) float32
    style: str = "gemm"


@dataclass
class Conv:
    """2-D convolution, square kernel, symmetric zero padding."""
    W: np.ndarray  # (Co, Ci, k, k) float32
    b: np.ndarray  # (Co,) float32
    stride: int = 1
    pad: int = 0


@dataclass
class BatchNorm:
    """Inference-mode BatchNormalization over dim 0 of the per-sample shape (channels/features)."""
    scale: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float = 1e-5


@dataclass
class Act:
    kind: str  # 'relu' | 'sigmoid' | 'tanh'


@dataclass
class MaxPool:
    """ONNX MaxPool, square kernel, symmetric padding (padded cells never win), floor mode."""
    kernel: int = 2
    stride: int = 2
    pad: int = 0


@dataclass
class Flatten:
    pass


@dataclass
class Residual:
    """out = body(h) + h (a DAG: vnnx refuses it today)."""
    body: list


@dataclass
class Net:
    """A generated network: its layers, ONNX input shape (batch dim 1 included) and family."""
    family: str
    scale: float
    input_shape: tuple
    layers: list
    n_outputs: int
    ops: list = field(default_factory=list)  # flat ops (lower()), filled by finish_net

    @property
    def n_inputs(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def piecewise_linear(self) -> bool:
        return not _has_act(self.ops, ("sigmoid", "tanh"))

    @property
    def has_maxpool(self) -> bool:
        return _has_op(self.ops, "maxpool")

    def describe(self) -> str:
        parts = []
        for layer in self.layers:
            parts.append(_layer_name(layer))
        return f"{self.family} (scale {self.scale:g}, input {list(self.input_shape)}): " + " -> ".join(parts)


def _layer_name(layer) -> str:
    if isinstance(layer, Dense):
        return f"Dense{layer.W.shape[1]}x{layer.W.shape[0]}({layer.style})"
    if isinstance(layer, Conv):
        return f"Conv{layer.W.shape[1]}->{layer.W.shape[0]}k{layer.W.shape[2]}s{layer.stride}p{layer.pad}"
    if isinstance(layer, BatchNorm):
        return f"BN{layer.scale.size}"
    if isinstance(layer, Act):
        return layer.kind.capitalize()
    if isinstance(layer, MaxPool):
        return f"MaxPool k{layer.kernel}s{layer.stride}p{layer.pad}"
    if isinstance(layer, Flatten):
        return "Flatten"
    if isinstance(layer, Residual):
        return "Residual[" + " -> ".join(_layer_name(x) for x in layer.body) + "]"
    return type(layer).__name__


def _has_op(ops, kind) -> bool:
    return any(op[0] == kind or (op[0] == "residual" and _has_op(op[1], kind)) for op in ops)


def _has_act(ops, kinds) -> bool:
    return any(_has_op(ops, k) for k in kinds)


# ------------------------------------------------------------------ lowering to flat operations
# Flat ops work on (N, n) float64 samples and are what the truth, the interval arithmetic and the
# forward all use: ("affine", A, c), ("relu",), ("sigmoid",), ("tanh",), ("maxpool", windows),
# ("residual", ops). Consecutive affine layers (Conv, BatchNorm, Flatten, Dense) fold into one
# matrix here, in float64 from the float32 weights the ONNX file holds.

def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def conv_matrix(layer: Conv, shape: tuple) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The convolution as an explicit (Co*Ho*Wo, Ci*H*W) matrix and bias, C-order flattening."""
    ci, h, w = shape
    co, ci2, k, _ = layer.W.shape
    assert ci2 == ci, (ci2, ci)
    ho, wo = _conv_out(h, k, layer.stride, layer.pad), _conv_out(w, k, layer.stride, layer.pad)
    A = np.zeros((co * ho * wo, ci * h * w))
    c = np.zeros(co * ho * wo)
    W = layer.W.astype(np.float64)
    for o in range(co):
        for i in range(ho):
            for j in range(wo):
                row = o * ho * wo + i * wo + j
                c[row] = float(layer.b[o])
                for q in range(ci):
                    for di in range(k):
                        r = i * layer.stride - layer.pad + di
                        if not 0 <= r < h:
                            continue
                        for dj in range(k):
                            col = j * layer.stride - layer.pad + dj
                            if 0 <= col < w:
                                A[row, q * h * w + r * w + col] += W[o, q, di, dj]
    return A, c, (co, ho, wo)


def pool_windows(layer: MaxPool, shape: tuple) -> tuple[list[np.ndarray], tuple]:
    """For each pooled output (C order), the flat input indices of its window's in-range cells."""
    ch, h, w = shape
    k, s, p = layer.kernel, layer.stride, layer.pad
    ho, wo = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
    windows = []
    for c in range(ch):
        for i in range(ho):
            for j in range(wo):
                cells = [c * h * w + r * w + q
                         for r in range(i * s - p, i * s - p + k) if 0 <= r < h
                         for q in range(j * s - p, j * s - p + k) if 0 <= q < w]
                if not cells:
                    raise HarnessError("MaxPool window made of padding only")
                windows.append(np.array(cells, dtype=np.int64))
    return windows, (ch, ho, wo)


def lower(layers: list, shape: tuple) -> tuple[list, tuple]:
    """Flat ops of ``layers`` on per-sample ``shape``, and the output shape."""
    ops: list = []
    pending: Optional[tuple[np.ndarray, np.ndarray]] = None  # the affine run being folded

    def push_affine(A, c):
        nonlocal pending
        pending = (A, c) if pending is None else (A @ pending[0], A @ pending[1] + c)

    def flush():
        nonlocal pending
        if pending is not None:
            ops.append(("affine", pending[0], pending[1]))
            pending = None

    for layer in layers:
        n = int(np.prod(shape))
        if isinstance(layer, Dense):
            assert len(shape) == 1 and layer.W.shape[1] == n, (shape, layer.W.shape)
            push_affine(layer.W.astype(np.float64), layer.b.astype(np.float64))
            shape = (layer.W.shape[0],)
        elif isinstance(layer, Conv):
            A, c, shape = conv_matrix(layer, shape)
            push_affine(A, c)
        elif isinstance(layer, BatchNorm):
            # Folded here, in float64: factor = scale / sqrt(var + eps) per channel.
            factor = layer.scale.astype(np.float64) / np.sqrt(layer.var.astype(np.float64) + layer.eps)
            shift = layer.bias.astype(np.float64) - layer.mean.astype(np.float64) * factor
            per = n // shape[0]
            push_affine(np.diag(np.repeat(factor, per)), np.repeat(shift, per))
        elif isinstance(layer, Flatten):
            shape = (n,)  # C-order flattening: the identity on flat samples
        elif isinstance(layer, Act):
            flush()
            ops.append((layer.kind,))
        elif isinstance(layer, MaxPool):
            flush()
            windows, shape = pool_windows(layer, shape)
            ops.append(("maxpool", windows))
        elif isinstance(layer, Residual):
            flush()
            body, out_shape = lower(layer.body, shape)
            assert int(np.prod(out_shape)) == n
            ops.append(("residual", body))
        else:
            raise HarnessError(f"unknown layer {layer!r}")
    flush()
    return ops, shape


def forward(ops: list, x: np.ndarray) -> np.ndarray:
    """This harness's float64 forward: ``x`` (N, n_inputs) -> (N, n_outputs)."""
    h = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    for op in ops:
        kind = op[0]
        if kind == "affine":
            h = h @ op[1].T + op[2]
        elif kind == "relu":
            h = np.maximum(h, 0.0)
        elif kind == "sigmoid":
            h = 0.5 * (1.0 + np.tanh(0.5 * h))  # = 1 / (1 + exp(-h)), without overflow
        elif kind == "tanh":
            h = np.tanh(h)
        elif kind == "maxpool":
            h = np.stack([h[:, w].max(axis=1) for w in op[1]], axis=1)
        elif kind == "residual":
            h = forward(op[1], h) + h
        else:
            raise HarnessError(f"unknown op {kind}")
    return h


def forward_torch(ops: list, x):
    """:func:`forward` in torch float64 (for the gradient search only)."""
    import torch

    h = x
    for op in ops:
        kind = op[0]
        if kind == "affine":
            h = h @ torch.as_tensor(op[1]).T + torch.as_tensor(op[2])
        elif kind == "relu":
            h = torch.relu(h)
        elif kind == "sigmoid":
            h = torch.sigmoid(h)
        elif kind == "tanh":
            h = torch.tanh(h)
        elif kind == "maxpool":
            h = torch.stack([h[:, torch.as_tensor(w)].max(dim=1).values for w in op[1]], dim=1)
        elif kind == "residual":
            h = forward_torch(op[1], h) + h
    return h


# -------------------------------------------------------------------------- network generators

def _weights(rng, out_n: int, in_n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """He-like weights times the family scale; float32, as the ONNX file stores them."""
    W = rng.normal(size=(out_n, in_n)) * scale / math.sqrt(max(in_n, 1))
    b = rng.normal(size=out_n) * 0.5 * min(scale, 1.5)
    return W.astype(np.float32), b.astype(np.float32)


def _conv_weights(rng, co, ci, k, scale):
    W = rng.normal(size=(co, ci, k, k)) * scale / math.sqrt(ci * k * k)
    b = rng.normal(size=co) * 0.5 * min(scale, 1.5)
    return W.astype(np.float32), b.astype(np.float32)


def _batchnorm(rng, n: int) -> BatchNorm:
    sign = np.where(rng.random(n) < 0.2, -1.0, 1.0)  # a few negative scales flip a feature
    return BatchNorm(scale=(sign * rng.uniform(0.5, 2.0, n)).astype(np.float32),
                     bias=rng.normal(0, 0.5, n).astype(np.float32),
                     mean=rng.normal(0, 0.5, n).astype(np.float32),
                     var=rng.uniform(0.2, 2.0, n).astype(np.float32),
                     eps=float(rng.choice([1e-5, 1e-3])))


def _mlp_layers(rng, n_in: int, n_out: int, scale: float, act: str, max_units: int,
                batchnorm: bool = False) -> list:
    n_hidden = int(rng.integers(1, 4))
    sizes, budget = [], max_units
    for h in range(n_hidden):
        left = n_hidden - h - 1
        if budget - left < 1:
            break
        sizes.append(int(rng.integers(1, min(8, budget - left) + 1)))
        budget -= sizes[-1]
    layers, prev = [], n_in
    for size in sizes:
        W, b = _weights(rng, size, prev, scale)
        layers.append(Dense(W, b, style=str(rng.choice(["gemm", "matmul"]))))
        if batchnorm and rng.random() < 0.7:
            layers.append(_batchnorm(rng, size))
        layers.append(Act(act))
        prev = size
    W, b = _weights(rng, n_out, prev, scale)
    layers.append(Dense(W, b, style=str(rng.choice(["gemm", "matmul"]))))
    return layers


def _conv_stack(rng, in_shape: tuple, scale: float, batchnorm: bool, max_units: int,
                pool: bool) -> tuple[list, tuple, int]:
    """Conv [+ BN] + ReLU [+ MaxPool]: draws kernel/stride/pad/channels until the ReLUs fit."""
    ci, h, w = in_shape
    for _ in range(100):
        k = int(rng.integers(2, 4))
        s = int(rng.integers(1, 3))
        p = int(rng.integers(0, 2))
        co = int(rng.integers(1, 4))
        ho = _conv_out(h, k, s, p)
        if ho < (2 if pool else 1) or co * ho * ho > max_units:
            continue
        W, b = _conv_weights(rng, co, ci, k, scale)
        layers = [Conv(W, b, s, p)]
        n_relu = co * ho * ho
        if batchnorm:
            layers.append(_batchnorm(rng, co))
        shape = (co, ho, ho)
        if pool:
            ps, pp = int(rng.integers(1, 3)), int(rng.integers(0, 2))
            if _conv_out(ho, 2, ps, pp) < 1:
                continue
            mp = MaxPool(2, ps, pp)
            # Mostly Conv -> ReLU -> MaxPool; sometimes the pool comes first (both occur in VNN-COMP).
            layers += [Act("relu"), mp] if rng.random() < 0.75 else [mp, Act("relu")]
            shape = (co, _conv_out(ho, 2, ps, pp), _conv_out(ho, 2, ps, pp))
        else:
            layers.append(Act("relu"))
        return layers, shape, n_relu
    raise HarnessError("no conv configuration fits")


def make_net(rng: np.random.Generator, family: str) -> Net:
    """A random network of ``family``; its ONNX twin is written and checked by :func:`write_onnx`."""
    scale = float(rng.choice(WEIGHT_SCALES))
    n_out = int(rng.integers(1, 5))
    if family in ("mlp", "sigmoid", "tanh") or (family == "batchnorm" and rng.random() < 0.5):
        n_in = int(rng.integers(1, 7))
        act = {"mlp": "relu", "sigmoid": "sigmoid", "tanh": "tanh", "batchnorm": "relu"}[family]
        layers = _mlp_layers(rng, n_in, n_out, scale, act, MAX_RELUS, batchnorm=family == "batchnorm")
        return finish_net(Net(family, scale, (1, n_in), layers, n_out))
    if family == "residual":
        n_in = int(rng.integers(2, 6))
        W1, b1 = _weights(rng, n_in, n_in, scale)
        W2, b2 = _weights(rng, n_in, n_in, scale)
        W3, b3 = _weights(rng, n_out, n_in, scale)
        layers = [Residual([Dense(W1, b1), Act("relu"), Dense(W2, b2)]), Act("relu"), Dense(W3, b3)]
        return finish_net(Net(family, scale, (1, n_in), layers, n_out))
    in_shape = [(1, 4, 4), (2, 3, 3)][int(rng.integers(0, 2))]
    layers, shape, n_relu = _conv_stack(rng, in_shape, scale, batchnorm=family == "batchnorm", max_units=MAX_RELUS,
                                pool=family == "maxpool")
    layers.append(Flatten())
    prev = int(np.prod(shape))
    if rng.random() < 0.4 and n_relu < MAX_RELUS - 1:
        hidden = int(rng.integers(1, min(6, MAX_RELUS - n_relu) + 1))
        W, b = _weights(rng, hidden, prev, scale)
        layers += [Dense(W, b), Act("relu")]
        prev = hidden
    W, b = _weights(rng, n_out, prev, scale)
    layers.append(Dense(W, b, style=str(rng.choice(["gemm", "matmul"]))))
    return finish_net(Net(family, scale, (1,) + in_shape, layers, n_out))


def finish_net(net: Net) -> Net:
    """Lower ``net`` to flat ops (and check the ReLU budget)."""
    net.ops, shape = lower(net.layers, tuple(net.input_shape[1:]) if len(net.input_shape) > 2 else (net.input_shape[1],))
    assert int(np.prod(shape)) == net.n_outputs
    return net


# ------------------------------------------------------------------------------------ ONNX writer

def to_onnx(net: Net):
    """The ONNX model (opset 13, float32) of ``net``, built with onnx.helper."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    counter = [0]

    def name(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(arr: np.ndarray, prefix: str) -> str:
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(arr, dtype=np.float32), n))
        return n

    def emit(layers: list, cur: str) -> str:
        for layer in layers:
            out = name("t")
            if isinstance(layer, Dense):
                if layer.style == "gemm":
                    nodes.append(helper.make_node("Gemm", [cur, const(layer.W, "W"), const(layer.b, "b")], [out],
                                                  transB=1))
                else:
                    mid = name("mm")
                    nodes.append(helper.make_node("MatMul", [cur, const(layer.W.T.copy(), "W")], [mid]))
                    nodes.append(helper.make_node("Add", [mid, const(layer.b, "b")], [out]))
            elif isinstance(layer, Conv):
                k = layer.W.shape[2]
                nodes.append(helper.make_node("Conv", [cur, const(layer.W, "W"), const(layer.b, "b")], [out],
                                              kernel_shape=[k, k], strides=[layer.stride] * 2,
                                              pads=[layer.pad] * 4))
            elif isinstance(layer, BatchNorm):
                nodes.append(helper.make_node(
                    "BatchNormalization",
                    [cur, const(layer.scale, "g"), const(layer.bias, "beta"), const(layer.mean, "mu"),
                     const(layer.var, "var")], [out], epsilon=float(layer.eps)))
            elif isinstance(layer, Act):
                nodes.append(helper.make_node({"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}[layer.kind],
                                              [cur], [out]))
            elif isinstance(layer, MaxPool):
                nodes.append(helper.make_node("MaxPool", [cur], [out], kernel_shape=[layer.kernel] * 2,
                                              strides=[layer.stride] * 2, pads=[layer.pad] * 4))
            elif isinstance(layer, Flatten):
                nodes.append(helper.make_node("Flatten", [cur], [out], axis=1))
            elif isinstance(layer, Residual):
                body = emit(layer.body, cur)
                nodes.append(helper.make_node("Add", [body, cur], [out]))
            cur = out
        return cur

    last = emit(net.layers, "input")
    nodes.append(helper.make_node("Identity", [last], ["output"]))
    graph = helper.make_graph(nodes, f"soundness_{net.family}",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(net.input_shape))],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, net.n_outputs])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="vnnx-soundness-harness")
    model.ir_version = 8  # what onnxruntime of every supported version reads
    onnx.checker.check_model(model, full_check=True)
    return model


class OrtNet:
    """onnxruntime on the ONNX file itself (the judge of every witness), one thread."""

    def __init__(self, path: Path, input_shape: tuple):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_shape = tuple(input_shape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x``: (N, n_inputs) -> (N, n_outputs) float64 of the float32 outputs; inputs cast to float32."""
        x = np.asarray(x, dtype=np.float32).reshape(-1, int(np.prod(self.input_shape)))
        out = [np.asarray(self.session.run(None, {"input": row.reshape(self.input_shape)})[0]).reshape(-1)
               for row in x]
        return np.stack(out).astype(np.float64)


def write_onnx(net: Net, path: Path, rng: np.random.Generator) -> OrtNet:
    """Write ``net`` to ``path`` and check this file's float64 forward against onnxruntime on random
    inputs (raises HarnessError on disagreement: then the truth would be about another network)."""
    import onnx

    onnx.save(to_onnx(net), str(path))
    ort = OrtNet(path, net.input_shape)
    x = np.concatenate([rng.uniform(-1, 1, size=(6, net.n_inputs)), rng.uniform(-4, 4, size=(2, net.n_inputs))])
    x = x.astype(np.float32).astype(np.float64)
    y_ort, y_np = ort(x), forward(net.ops, x)
    err = np.abs(y_ort - y_np).max()
    if not err <= 1e-4 * (1.0 + np.abs(y_np).max()):
        raise HarnessError(f"{path}: numpy forward and onnxruntime differ by {err:.3g}")
    return ort


# =========================================================================== 2. properties

@dataclass
class Row:
    """One output constraint ``a . y <= b`` and the VNN-LIB atom it was written as."""
    atom: str
    a: np.ndarray  # (n_outputs,)
    b: float


@dataclass
class Disjunct:
    """One input box (as written, and as parsed: float(text)) and its clauses (each a list of rows,
    a conjunction; a clause without rows holds for every output)."""
    lo_txt: list
    hi_txt: list
    clauses: list

    @property
    def lo(self) -> np.ndarray:
        return np.array([float(t) for t in self.lo_txt])

    @property
    def hi(self) -> np.ndarray:
        return np.array([float(t) for t in self.hi_txt])

    def clause_arrays(self, n_out: int) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for clause in self.clauses:
            A = np.array([r.a for r in clause]).reshape(len(clause), n_out)
            b = np.array([r.b for r in clause], dtype=np.float64)
            out.append((A, b))
        return out


@dataclass
class Prop:
    """The harness's structured copy of one VNN-LIB file."""
    shape: str
    layout: str  # 'top' (one box, top-level assertions) or 'per-disjunct' (or of and with X bounds)
    disjuncts: list
    n_inputs: int
    n_outputs: int
    text: str = ""


def _fmt(v: float, digits: int = 10) -> str:
    """Positional decimal (VNN-LIB readers reject exponents), at most ``digits`` decimals."""
    s = f"{float(v):.{digits}f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "", "-") else s


def _row_const(j: int, op: str, c_txt: str, n_out: int) -> Row:
    a = np.zeros(n_out)
    c = float(c_txt)
    if op == "<=":
        a[j] = 1.0
        return Row(f"(<= Y_{j} {c_txt})", a, c)
    a[j] = -1.0
    return Row(f"(>= Y_{j} {c_txt})", a, -c)


def _row_cmp(i: int, op: str, j: int, n_out: int) -> Row:
    """``(op Y_i Y_j)``: <= is y_i - y_j <= 0, >= is y_j - y_i <= 0."""
    a = np.zeros(n_out)
    a[i], a[j] = (1.0, -1.0) if op == "<=" else (-1.0, 1.0)
    return Row(f"({op} Y_{i} Y_{j})", a, 0.0)


def render_vnnlib(prop: Prop, rng: np.random.Generator) -> str:
    """VNN-LIB 1.0 text of ``prop`` (VNN-COMP layouts)."""
    lines = [f"; soundness harness property, shape {prop.shape}", ""]
    lines += [f"(declare-const X_{i} Real)" for i in range(prop.n_inputs)]
    lines += [""] + [f"(declare-const Y_{j} Real)" for j in range(prop.n_outputs)] + [""]
    if prop.layout == "top":
        (d,) = prop.disjuncts
        for i, (lo, hi) in enumerate(zip(d.lo_txt, d.hi_txt)):
            lines += [f"(assert (<= X_{i} {hi}))", f"(assert (>= X_{i} {lo}))"]
        lines.append("")
        if len(d.clauses) == 1:
            rows = d.clauses[0]
            if len(rows) == 1:
                lines.append(f"(assert {rows[0].atom})")
            elif rows and rng.random() < 0.5:
                # ACAS-style: the conjunction as separate top-level assertions.
                lines += [f"(assert {r.atom})" for r in rows]
            elif rows:
                lines.append("(assert (and " + " ".join(r.atom for r in rows) + "))")
        elif d.clauses:
            lines.append("(assert (or")
            lines += ["    (and " + " ".join(r.atom for r in rows) + ")" for rows in d.clauses]
            lines.append("))")
    else:
        lines.append("(assert (or")
        for d in prop.disjuncts:
            (rows,) = d.clauses
            xs = " ".join(f"(>= X_{i} {lo}) (<= X_{i} {hi})" for i, (lo, hi) in enumerate(zip(d.lo_txt, d.hi_txt)))
            lines.append(f"    (and {xs}" + "".join(" " + r.atom for r in rows) + ")")
        lines.append("))")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ boxes and rows

def _box(rng, n: int, kind: str) -> tuple[list, list]:
    """Box bounds as text. ``kind``: 'normal' (eps log-uniform, sometimes per-input widths and
    zero-width inputs), 'point' (zero-width ranges at many-digit values float32 cannot hold, a
    few inputs perturbed), 'tiny' (width 1e-6), 'huge' (about +-50)."""
    if kind == "huge":
        r = [_fmt(rng.uniform(20, 50), 3) for _ in range(n)]
        return ["-" + v for v in r], r
    centre = rng.uniform(-1, 1, n)
    if kind == "point":
        # 13 decimals: lower == upper == e.g. 0.1234567891234, not a float32 value.
        vals = [f"{v:.13f}" for v in centre]
        lo, hi = list(vals), list(vals)
        n_pert = int(rng.integers(0, min(3, n) + 1)) if n > 1 else int(rng.integers(0, 2))
        for i in rng.choice(n, size=n_pert, replace=False):
            eps = 10 ** rng.uniform(-2.5, -0.3)
            lo[i], hi[i] = _fmt(centre[i] - eps), _fmt(centre[i] + eps)
        return lo, hi
    if kind == "tiny":
        return [f"{v - 5e-7:.13f}" for v in centre], [f"{v + 5e-7:.13f}" for v in centre]
    eps = 10 ** rng.uniform(-2.3, -0.1)
    widths = np.full(n, eps)
    if rng.random() < 0.4:
        widths = eps * rng.uniform(0, 1, n)
        widths[rng.random(n) < 0.15] = 0.0
    return [_fmt(c - w) for c, w in zip(centre, widths)], [_fmt(c + w) for c, w in zip(centre, widths)]


def _samples(ops, lo: np.ndarray, hi: np.ndarray, rng, n: int = 192) -> tuple[np.ndarray, np.ndarray]:
    """Points of the box (centre first, corners, uniform, then the minimiser and maximiser of
    each output found by gradient search) and this file's outputs there.

    The searched extremes make the sampled output range close to the true one, so that a
    right-hand side pushed "just beyond every sample" is usually a true unsat with a small
    margin (the cases CROWN cannot decide), not a sat that sampling missed."""
    x = np.concatenate([((lo + hi) / 2)[None], lo[None], hi[None], rng.uniform(lo, hi, size=(n, lo.size))])
    y = forward(ops, x)
    extra = []
    if np.any(hi > lo):
        for j in range(y.shape[1]):
            for sign in (1.0, -1.0):
                a = np.zeros((1, y.shape[1]))
                a[0, j] = sign
                starts = x[np.argsort(sign * y[:, j])[:3]]
                extra.append(gradient_search(ops, lo, hi, a, np.zeros(1), starts, steps=20)[0])
    if extra:
        x = np.concatenate([x, np.array(extra)])
        y = forward(ops, x)
    return x, y


def _const_rows(rng, ys: np.ndarray, specs: list, mode: str, n_out: int) -> list[Row]:
    """Rows ``(op Y_j c)`` with right-hand sides from sampled outputs ``ys`` (S, n_out).

    ``specs``: [(j, op)]. mode 'sat': all rows hold at one sampled anchor point (plus slack);
    'unsat': one row is pushed beyond every sampled value; 'near': one row sits at the sampled
    extreme, within a hair (the truth is then often within the 1e-4 band or decided by the MILP)."""
    anchor = int(rng.integers(0, len(ys)))
    rows = []
    push = int(rng.integers(0, len(specs)))
    for r, (j, op) in enumerate(specs):
        v = ys[:, j]
        spread = max(float(v.max() - v.min()), 0.05 * (1.0 + abs(float(v.mean()))))
        sign = 1.0 if op == "<=" else -1.0  # holds when sign * y <= sign * c
        # Offsets are log-uniform: small ones make cases that CROWN cannot decide, so that the
        # deeper stages (branch and bound, input split, MILP) get to answer.
        if mode == "sat" or r != push:
            c = v[anchor] + sign * 10 ** rng.uniform(-3.5, -0.5) * spread
        elif mode == "unsat":
            extreme = v.min() if op == "<=" else v.max()
            c = extreme - sign * 10 ** rng.uniform(-3.0, -0.3) * spread
        else:
            extreme = v.min() if op == "<=" else v.max()
            c = extreme + sign * rng.choice([-1.0, 1.0]) * rng.uniform(0.0, 2e-3) * spread
        rows.append(_row_const(j, op, _fmt(c, 8), n_out))
    return rows


def _interval_rows(rng, ys, j, mode, n_out) -> list[Row]:
    """``(and (>= Y_j lo) (<= Y_j hi))``: the violation is y_j inside [lo, hi]."""
    v = ys[:, j]
    spread = max(float(v.max() - v.min()), 0.05 * (1.0 + abs(float(v.mean()))))
    if mode == "sat":
        mid = v[int(rng.integers(0, len(v)))]
        lo, hi = mid - 10 ** rng.uniform(-3.5, -0.5) * spread, mid + 10 ** rng.uniform(-3.5, -0.5) * spread
    elif mode == "unsat":
        if rng.random() < 0.5:
            lo = v.max() + 10 ** rng.uniform(-3.0, -0.3) * spread
            hi = lo + rng.uniform(0.01, 1.0) * spread
        else:
            hi = v.min() - 10 ** rng.uniform(-3.0, -0.3) * spread
            lo = hi - rng.uniform(0.01, 1.0) * spread
    else:
        lo = v.max() + rng.choice([-1.0, 1.0]) * rng.uniform(0, 2e-3) * spread
        hi = lo + rng.uniform(0.01, 1.0) * spread
    return [_row_const(j, ">=", _fmt(lo, 8), n_out), _row_const(j, "<=", _fmt(hi, 8), n_out)]


def _output_clauses(rng, kind: str, ys: np.ndarray, y_centre: np.ndarray, mode: str, n_out: int) -> list[list[Row]]:
    """The clauses (disjunction of conjunctions) of output shape ``kind``."""
    if n_out < 2 and kind in ("robust", "acas"):
        kind = "halfspace"
    if kind == "robust":
        label = int(np.argmax(y_centre))
        others = [j for j in range(n_out) if j != label]
        if rng.random() < 0.3 and len(others) > 1:
            others = sorted(rng.choice(others, size=int(rng.integers(1, len(others))), replace=False).tolist())
        # (or (and (>= Y_j Y_label)) ...): some other logit at least the label's.
        return [[_row_cmp(j, ">=", label, n_out)] for j in others]
    if kind == "halfspace":
        return [_const_rows(rng, ys, [(int(rng.integers(0, n_out)), str(rng.choice(["<=", ">="])))], mode, n_out)]
    if kind == "interval":
        return [_interval_rows(rng, ys, int(rng.integers(0, n_out)), mode, n_out)]
    if kind == "acas":
        # (and (<= Y_k Y_j) ...): y_k minimal among some outputs (ACAS Xu: "COC is minimal").
        k = int(np.argmin(y_centre)) if rng.random() < 0.5 else int(rng.integers(0, n_out))
        others = [j for j in range(n_out) if j != k]
        if len(others) > 1 and rng.random() < 0.4:
            others = sorted(rng.choice(others, size=int(rng.integers(1, len(others))), replace=False).tolist())
        return [[_row_cmp(k, "<=", j, n_out) for j in others]]
    if kind == "or-and":
        clauses = []
        sat_clause = int(rng.integers(0, 3))
        for q in range(int(rng.integers(2, 4))):
            m = mode if (mode != "sat" or q == sat_clause) else "unsat"
            if n_out >= 2 and rng.random() < 0.3:
                i, j = rng.choice(n_out, size=2, replace=False)
                rows = [_row_cmp(int(i), str(rng.choice(["<=", ">="])), int(j), n_out)]
                if rng.random() < 0.5:
                    rows += _const_rows(rng, ys, [(int(rng.integers(0, n_out)), "<=")], m, n_out)
            else:
                specs = [(int(rng.integers(0, n_out)), str(rng.choice(["<=", ">="])))
                         for _ in range(int(rng.integers(1, 3)))]
                rows = _const_rows(rng, ys, specs, m, n_out)
            clauses.append(rows)
        return clauses
    raise HarnessError(f"unknown output kind {kind}")


def make_property(rng: np.random.Generator, net: Net, shape: str) -> tuple[Prop, np.ndarray]:
    """A random property of ``shape`` for ``net``, and the sampled points used to pick its
    right-hand sides (handed to the truth as extra witness candidates).

    Shapes: robust, halfspace, interval, acas, or-and (single box, top-level assertions);
    multibox (or of and with per-disjunct boxes); pointbox/tiny/huge (special boxes, any output
    kind); noout (only X assertions); multibox-noout (one disjunct has no output constraint)."""
    n_in, n_out = net.n_inputs, net.n_outputs
    mode = str(rng.choice(["sat", "unsat", "near"], p=[0.4, 0.42, 0.18]))
    out_kinds = ["robust", "halfspace", "interval", "acas", "or-and"]
    all_x = []
    if shape in ("multibox", "multibox-noout"):
        disjuncts = []
        n_dis = int(rng.integers(2, 4))
        sat_d = int(rng.integers(0, n_dis))
        for d in range(n_dis):
            lo_t, hi_t = _box(rng, n_in, str(rng.choice(["normal", "normal", "point"])))
            dis = Disjunct(lo_t, hi_t, [])
            x, ys = _samples(net.ops, dis.lo, dis.hi, rng)
            all_x.append(x)
            m = mode if (mode != "sat" or d == sat_d) else "unsat"
            if shape == "multibox-noout" and d == n_dis - 1:
                rows = []
            elif n_out >= 2 and rng.random() < 0.3:
                rows = _output_clauses(rng, "acas", ys, ys[0], m, n_out)[0]
            else:
                specs = [(int(rng.integers(0, n_out)), str(rng.choice(["<=", ">="])))
                         for _ in range(int(rng.integers(1, 3)))]
                rows = _const_rows(rng, ys, specs, m, n_out)
            dis.clauses = [rows]
            disjuncts.append(dis)
        prop = Prop(shape, "per-disjunct", disjuncts, n_in, n_out)
    else:
        box_kind = {"pointbox": "point", "tiny": "tiny", "huge": "huge"}.get(shape, "normal")
        lo_t, hi_t = _box(rng, n_in, box_kind)
        dis = Disjunct(lo_t, hi_t, [])
        x, ys = _samples(net.ops, dis.lo, dis.hi, rng)
        all_x.append(x)
        if shape == "noout":
            dis.clauses = [[]]
        else:
            kind = shape if shape in out_kinds else str(rng.choice(out_kinds))
            dis.clauses = _output_clauses(rng, kind, ys, ys[0], mode, n_out)
            if shape not in out_kinds:
                shape = f"{shape}+{kind}"
        prop = Prop(shape, "top", [dis], n_in, n_out)
    prop.text = render_vnnlib(prop, rng)
    return prop, np.concatenate(all_x)


# ====================================================================== 3. truth (independent)

def interval_bounds(ops: list, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """This file's plain interval arithmetic, batched: boxes (B, n) -> output bounds (B, n_out)."""
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    for op in ops:
        kind = op[0]
        if kind == "affine":
            A, c = op[1], op[2]
            mid, rad = (lo + hi) / 2, (hi - lo) / 2
            m, r = mid @ A.T + c, rad @ np.abs(A).T
            lo, hi = m - r, m + r
        elif kind in ("relu", "sigmoid", "tanh"):  # monotone: endpoints map to endpoints
            f = {"relu": lambda v: np.maximum(v, 0.0), "sigmoid": lambda v: 0.5 * (1 + np.tanh(0.5 * v)),
                 "tanh": np.tanh}[kind]
            lo, hi = f(lo), f(hi)
        elif kind == "maxpool":
            lo = np.stack([lo[:, w].max(axis=1) for w in op[1]], axis=1)
            hi = np.stack([hi[:, w].max(axis=1) for w in op[1]], axis=1)
        elif kind == "residual":
            blo, bhi = interval_bounds(op[1], lo, hi)
            lo, hi = blo + lo, bhi + hi
    return lo, hi


class _Milp:
    """A MILP under construction: variables with bounds and integrality, rows ``lo <= a v <= hi``.
    Values of the network are affine expressions (M, c) over the variables, so affine layers cost
    no variables; bounds of an expression are this file's interval arithmetic over the variables'
    bounds (ReLU/MaxPool outputs are variables with their own intervals)."""

    def __init__(self, x_lo: np.ndarray, x_hi: np.ndarray):
        self.lb = list(map(float, x_lo))
        self.ub = list(map(float, x_hi))
        self.integer = [0] * len(self.lb)
        self.rows: list[tuple[dict, float, float]] = []

    @property
    def n(self) -> int:
        return len(self.lb)

    def var(self, lb: float, ub: float, integer: bool = False) -> int:
        self.lb.append(float(lb))
        self.ub.append(float(ub))
        self.integer.append(1 if integer else 0)
        return self.n - 1

    def pad(self, M: np.ndarray) -> np.ndarray:
        return M if M.shape[1] == self.n else np.hstack([M, np.zeros((M.shape[0], self.n - M.shape[1]))])

    def bounds(self, M: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        M = self.pad(M)
        lb, ub = np.array(self.lb), np.array(self.ub)
        pos, neg = np.maximum(M, 0), np.minimum(M, 0)
        return c + pos @ lb + neg @ ub, c + pos @ ub + neg @ lb

    def row(self, coef: dict, lo: float, hi: float) -> None:
        self.rows.append((coef, lo, hi))

    def expr_coef(self, m_row: np.ndarray, extra: dict) -> dict:
        coef = {int(k): float(v) for k, v in enumerate(m_row) if v != 0.0}
        for k, v in extra.items():
            coef[k] = coef.get(k, 0.0) + v
        return coef


def _encode(milp: _Milp, ops: list, M: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``ops`` on the expression (M, c); returns the output expression (exact MILP)."""
    for op in ops:
        kind = op[0]
        if kind == "affine":
            M, c = op[1] @ milp.pad(M), op[1] @ c + op[2]
        elif kind == "relu":
            lo, hi = milp.bounds(M, c)
            M = milp.pad(M)
            newM, newc = np.zeros_like(M), np.zeros_like(c)
            cols = []
            for i in range(len(c)):
                if lo[i] >= 0:
                    newM[i], newc[i] = M[i], c[i]
                elif hi[i] <= 0:
                    pass  # y = 0
                else:
                    y = milp.var(0.0, hi[i])
                    d = milp.var(0.0, 1.0, integer=True)
                    # y >= x;  y <= x - L (1 - d);  y <= U d   (y >= 0 is its bound)
                    milp.row(milp.expr_coef(-M[i], {y: 1.0}), c[i], np.inf)
                    milp.row(milp.expr_coef(-M[i], {y: 1.0, d: -lo[i]}), -np.inf, c[i] - lo[i])
                    milp.row({y: 1.0, d: -hi[i]}, -np.inf, 0.0)
                    cols.append((i, y))
            newM = milp.pad(newM)
            for i, y in cols:
                newM[i] = 0.0
                newM[i, y] = 1.0
                newc[i] = 0.0
            M, c = newM, newc
        elif kind == "maxpool":
            lo, hi = milp.bounds(M, c)
            M = milp.pad(M)
            outs = []
            for w in op[1]:
                best_lo = lo[w].max()
                # A cell whose upper bound is below another cell's lower bound never wins: dropping
                # it leaves the max unchanged (exact), and keeps the big-M small.
                cand = [int(i) for i in w if hi[i] >= best_lo]
                if len(cand) == 1:
                    outs.append(("copy", cand[0]))
                    continue
                u_max = float(hi[cand].max())
                y = milp.var(best_lo, u_max)
                ds = [milp.var(0.0, 1.0, integer=True) for _ in cand]
                for i, d in zip(cand, ds):
                    # y >= x_i;  y <= x_i + (U_max - L_i)(1 - d_i);  sum d_i = 1
                    milp.row(milp.expr_coef(-M[i], {y: 1.0}), c[i], np.inf)
                    big = u_max - lo[i]
                    milp.row(milp.expr_coef(-M[i], {y: 1.0, d: big}), -np.inf, c[i] + big)
                milp.row({d: 1.0 for d in ds}, 1.0, 1.0)
                outs.append(("var", y))
            newM, newc = np.zeros((len(outs), milp.n)), np.zeros(len(outs))
            Mp = milp.pad(M)
            for r, (how, idx) in enumerate(outs):
                if how == "copy":
                    newM[r], newc[r] = Mp[idx], c[idx]
                else:
                    newM[r, idx] = 1.0
            M, c = newM, newc
        elif kind == "residual":
            bM, bc = _encode(milp, op[1], M, c)
            M, c = milp.pad(bM) + milp.pad(M), bc + c
        else:
            raise HarnessError(f"no exact MILP encoding for {kind}")
    return milp.pad(M), c


@dataclass
class MilpResult:
    value: float        # objective at the solver's solution (upper bound on m, up to tolerances)
    lower: float        # solver's proven lower bound on m (dual bound)
    x: Optional[np.ndarray]
    status: str
    binaries: int
    seconds: float


def milp_min_margin(ops: list, lo: np.ndarray, hi: np.ndarray, A: np.ndarray, b: np.ndarray,
                    time_limit: float = MILP_TIME_LIMIT) -> MilpResult:
    """Exact ``min_{x in [lo, hi]} max_r (A_r y(x) - b_r)`` by MILP (scipy.optimize.milp = HiGHS).

    The lower bound is HiGHS's dual bound: the MILP relaxes nothing (big-M from sound interval
    bounds), so it is a lower bound on the true minimum whatever the gap; with mip_rel_gap 1e-9
    (HiGHS also stops at its default absolute gap 1e-6) it is the optimum."""
    from scipy.optimize import Bounds, LinearConstraint, milp

    t0 = time.monotonic()
    n_in = lo.size
    m = _Milp(lo, hi)
    M, c = _encode(m, ops, np.eye(n_in), np.zeros(n_in))
    t = m.var(-np.inf, np.inf)
    for r in range(len(b)):
        # t >= A_r (M v + c) - b_r
        row = A[r] @ M
        m.row(m.expr_coef(-row, {t: 1.0}), float(A[r] @ c - b[r]), np.inf)
    nv = m.n
    Amat = np.zeros((len(m.rows), nv))
    rlo, rhi = np.zeros(len(m.rows)), np.zeros(len(m.rows))
    for k, (coef, l, h) in enumerate(m.rows):
        for j, v in coef.items():
            Amat[k, j] += v
        rlo[k], rhi[k] = l, h
    obj = np.zeros(nv)
    obj[t] = 1.0
    res = milp(obj, integrality=np.array(m.integer), bounds=Bounds(np.array(m.lb), np.array(m.ub)),
               constraints=LinearConstraint(Amat, rlo, rhi),
               options={"mip_rel_gap": 1e-9, "time_limit": float(time_limit), "presolve": True, "disp": False})
    n_bin = int(sum(m.integer))
    secs = time.monotonic() - t0
    if res.x is None:
        if res.status == 2:
            raise HarnessError("truth MILP infeasible on a non-empty box (encoding bug)")
        dual = getattr(res, "mip_dual_bound", None)
        return MilpResult(np.inf, -np.inf if dual is None else float(dual), None, f"status {res.status}", n_bin, secs)
    dual = getattr(res, "mip_dual_bound", None)
    lower = float(res.fun) if dual is None or not np.isfinite(dual) else float(dual)
    return MilpResult(float(res.fun), min(lower, float(res.fun)), np.asarray(res.x[:n_in]),
                      "optimal" if res.status == 0 else f"status {res.status}", n_bin, secs)


def ibp_min_margin_lower(ops: list, lo: np.ndarray, hi: np.ndarray, clauses: list, threshold: float,
                         max_boxes: int = 1024) -> float:
    """A lower bound on ``min over the box of min over clauses of max_rows (A y - b)`` by this
    file's interval arithmetic with input bisection (widest input first), stopping once every
    sub-box is above ``threshold`` or after ``max_boxes`` bounded boxes. Sound for any network."""
    rows_A = [A for A, _ in clauses]
    rows_b = [b for _, b in clauses]
    if any(len(b) == 0 for b in rows_b):
        return -np.inf
    C = np.vstack(rows_A)
    rhs = np.concatenate(rows_b)
    starts = np.cumsum([0] + [len(b) for b in rows_b])
    queue_lo, queue_hi = lo[None].copy(), hi[None].copy()
    bounded, worst = 0, np.inf
    while queue_lo.shape[0]:
        ylo, yhi = interval_bounds(ops, queue_lo, queue_hi)
        bounded += queue_lo.shape[0]
        # Lower bound of each row a.y over the box: interval of a.y from y's interval.
        row_lo = np.maximum(C, 0) @ ylo.T + np.minimum(C, 0) @ yhi.T - rhs[:, None]  # (rows, B)
        clause_lo = np.stack([row_lo[s:e].max(axis=0) for s, e in zip(starts[:-1], starts[1:])])
        box_lo = clause_lo.min(axis=0)  # (B,)
        open_ = box_lo <= threshold
        worst_closed = box_lo[~open_].min() if (~open_).any() else np.inf
        if not open_.any():
            return float(min(worst, worst_closed))
        worst = min(worst, worst_closed)
        if bounded + 2 * int(open_.sum()) > max_boxes:
            return float(min(worst, box_lo[open_].min()))
        olo, ohi = queue_lo[open_], queue_hi[open_]
        d = np.argmax(ohi - olo, axis=1)
        if np.all((ohi - olo)[np.arange(len(d)), d] <= 0):
            return float(min(worst, box_lo[open_].min()))
        mid = (olo[np.arange(len(d)), d] + ohi[np.arange(len(d)), d]) / 2
        lo2, hi1 = olo.copy(), ohi.copy()
        hi1[np.arange(len(d)), d] = mid
        lo2[np.arange(len(d)), d] = mid
        queue_lo, queue_hi = np.concatenate([olo, lo2]), np.concatenate([hi1, ohi])
    return float(worst)


def _clause_margin(y: np.ndarray, A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """max_rows (A y - b) for y (N, n_out); -inf for a clause without rows."""
    if len(b) == 0:
        return np.full(len(y), -np.inf)
    return (y @ A.T - b).max(axis=1)


def gradient_search(ops: list, lo: np.ndarray, hi: np.ndarray, A: np.ndarray, b: np.ndarray,
                    starts: np.ndarray, steps: int = 60) -> tuple[np.ndarray, float]:
    """Projected sign-gradient descent on the clause margin from ``starts`` (float64, torch
    autograd through this file's forward); returns the best point and its float64 margin."""
    import torch

    x = torch.tensor(starts, dtype=torch.float64, requires_grad=True)
    tlo, thi = torch.as_tensor(lo), torch.as_tensor(hi)
    width = torch.as_tensor(hi - lo)
    At, bt = torch.as_tensor(A), torch.as_tensor(b)
    best_x, best_m = starts[0].copy(), np.inf
    for s in range(steps):
        y = forward_torch(ops, x)
        marg = (y @ At.T - bt).max(dim=1).values
        mv = marg.detach().numpy()
        k = int(np.argmin(mv))
        if mv[k] < best_m:
            best_m, best_x = float(mv[k]), x.detach().numpy()[k].copy()
        (g,) = torch.autograd.grad(marg.sum(), x)
        step = width * (0.25 * (0.02 ** (s / max(steps - 1, 1))))
        with torch.no_grad():
            x = torch.minimum(torch.maximum(x - step * torch.sign(g), tlo), thi)
        x.requires_grad_(True)
    return best_x, best_m


@dataclass
class Truth:
    """The harness's answer for one case.

    status: 'sat' (certain: a confirmed witness), 'unsat' (certain: proven lower bound above the
    tolerance), or 'uncertain'. m_star: best known value of min over (box, clause) of the margin
    (exact MILP optimum for piecewise-linear nets, best sampled/gradient value otherwise); m_lower:
    a proven lower bound on it."""
    status: str
    m_star: float
    m_lower: float
    method: str
    witness: Optional[np.ndarray] = None
    witness_margin_ort: float = float("nan")
    notes: list = field(default_factory=list)
    details: list = field(default_factory=list)


def _clip32(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Clip to the box, round to float32, and step back inside where float32 allows (a single
    point range float32 cannot hold stays within half an ulp of it)."""
    x32 = np.clip(np.asarray(x, dtype=np.float64), lo, hi).astype(np.float32)
    x32 = np.where(x32 < lo, np.nextafter(x32, np.float32(np.inf)), x32)
    x32 = np.where(x32 > hi, np.nextafter(x32, np.float32(-np.inf)), x32)
    return x32


def compute_truth(net: Net, ort: OrtNet, prop: Prop, hints: np.ndarray, rng: np.random.Generator) -> Truth:
    """The truth of one case, from this file's own MILP / sampling / interval arithmetic; every
    witness is confirmed with onnxruntime on the ONNX file (module docstring for the rules)."""
    n_out = net.n_outputs
    exact = net.piecewise_linear
    candidates = []  # (disjunct index, clause index, x float64)
    m_star, m_lower = np.inf, np.inf
    details, notes = [], []
    out_scale = 0.0
    conflict = False
    for p, d in enumerate(prop.disjuncts):
        lo, hi = d.lo, d.hi
        ylo, yhi = interval_bounds(net.ops, lo[None], hi[None])
        clauses = d.clause_arrays(n_out)
        for q, (A, b) in enumerate(clauses):
            if len(b) == 0:
                # No rows: every output violates; the centre is the witness.
                candidates.append((p, q, (lo + hi) / 2))
                m_star, m_lower = -np.inf, -np.inf
                details.append({"disjunct": p, "clause": q, "rows": 0, "m": -np.inf})
                continue
            # Size of the constrained quantities, for the float32 slack of "certain unsat".
            mag = np.abs(A) @ np.maximum(np.abs(ylo[0]), np.abs(yhi[0])) + np.abs(b)
            out_scale = max(out_scale, float(mag.max()))
            mask = np.all((hints >= lo - 1e-12) & (hints <= hi + 1e-12), axis=1)
            pts = hints[mask] if mask.any() else ((lo + hi) / 2)[None]
            if exact:
                res = milp_min_margin(net.ops, lo, hi, A, b)
                x_arg = np.clip(res.x, lo, hi) if res.x is not None else (lo + hi) / 2
                achieved = float(_clause_margin(forward(net.ops, x_arg[None]), A, b)[0])
                if res.x is not None and achieved - res.value > 1e-3 * (1.0 + abs(achieved)):
                    # The argmin's true margin should be the MILP objective (up to HiGHS tolerances).
                    notes.append(f"milp argmin mismatch d{p}c{q}: objective {res.value:.6g}, forward {achieved:.6g}")
                m_star = min(m_star, res.value)
                m_lower = min(m_lower, res.lower)
                candidates.append((p, q, x_arg))
                # The argmin checked with onnxruntime as well (float32 on the file itself).
                argmin_ort = float(_clause_margin(ort(_clip32(x_arg, lo, hi)[None]), A, b)[0])
                details.append({"disjunct": p, "clause": q, "rows": len(b), "m": res.value, "m_lower": res.lower,
                                "achieved": achieved, "argmin_ort": argmin_ort, "status": res.status,
                                "binaries": res.binaries,
                                "seconds": round(res.seconds, 4)})
            else:
                # Dense sampling, then gradient search from the best samples.
                xs = np.concatenate([pts, rng.uniform(lo, hi, size=(2048, lo.size))])
                marg = _clause_margin(forward(net.ops, xs), A, b)
                order = np.argsort(marg)[:8]
                x_best, m_best = gradient_search(net.ops, lo, hi, A, b, xs[order])
                if marg[order[0]] < m_best:
                    x_best, m_best = xs[order[0]], float(marg[order[0]])
                lower = ibp_min_margin_lower(net.ops, lo, hi, [(A, b)],
                                             threshold=WITNESS_TOL * 2 + F32_REL_SLACK * float(mag.max()))
                m_star, m_lower = min(m_star, m_best), min(m_lower, lower)
                candidates.append((p, q, x_best))
                details.append({"disjunct": p, "clause": q, "rows": len(b), "m": m_best, "m_lower": lower})
            # The spec generator's samples are witness candidates too, and a check of the proven
            # lower bound: no point of the box may have a smaller margin (else the MILP encoding
            # or the interval arithmetic is wrong, and the case must not count).
            samp = _clause_margin(forward(net.ops, pts), A, b)
            k = int(np.argmin(samp))
            candidates.append((p, q, pts[k]))
            lower_here = details[-1]["m_lower"]
            if samp[k] < lower_here - 1e-6 * (1.0 + float(mag.max())):
                notes.append(f"truth conflict d{p}c{q}: a sampled point has margin {samp[k]:.9g} below the proven "
                             f"lower bound {lower_here:.9g}")
                conflict = True
    # Confirm witnesses with onnxruntime (the judge) and with the float64 forward at the clipped
    # point; sort so the best candidate is tried first.
    witness, w_margin = None, float("nan")
    for p, q, x in candidates:
        d = prop.disjuncts[p]
        lo, hi = d.lo, d.hi
        A, b = d.clause_arrays(n_out)[q]
        x32 = _clip32(x, lo, hi)
        if np.abs(x32 - np.clip(x32, lo, hi)).max(initial=0.0) > 1e-6:
            continue
        m_ort = float(_clause_margin(ort(x32[None]), A, b)[0])
        m_64 = float(_clause_margin(forward(net.ops, np.clip(x32.astype(np.float64), lo, hi)[None]), A, b)[0])
        if m_ort < -WITNESS_TOL and m_64 < F64_SAT_MARGIN:
            witness, w_margin = x32, m_ort
            break
    unsat_threshold = WITNESS_TOL + F32_REL_SLACK * out_scale
    method = "milp" if exact else "sampling+interval"
    if witness is not None and m_lower > unsat_threshold:
        notes.append(f"truth conflict: confirmed witness (ort margin {w_margin:.3g}) but proven lower bound "
                     f"{m_lower:.6g}")
        status = "uncertain"
    elif conflict:
        status = "uncertain"
    elif witness is not None:
        status = "sat"
    elif m_lower > unsat_threshold:
        status = "unsat"
    else:
        status = "uncertain"
    return Truth(status, float(m_star), float(m_lower), method, witness, w_margin, notes, details)


# ================================================================== 4. judging vnnx's answers

def check_witness(ort: OrtNet, prop: Prop, x: Any) -> tuple[bool, str]:
    """This harness's witness check (VNN-COMP's): x within WITNESS_TOL of the box of some disjunct,
    and onnxruntime's output on the ONNX file satisfies every row of some clause of that same
    disjunct within WITNESS_TOL."""
    try:
        x = np.asarray(x, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError):
        return False, "counterexample x is not an array"
    if x.size != prop.n_inputs:
        return False, f"counterexample has {x.size} inputs, the network {prop.n_inputs}"
    if not np.all(np.isfinite(x)):
        return False, "counterexample has non-finite inputs"
    y = ort(x[None])[0]
    x64 = x.astype(np.float64)
    reasons = []
    for p, d in enumerate(prop.disjuncts):
        dist = float(np.maximum(np.maximum(d.lo - x64, x64 - d.hi), 0).max(initial=0.0))
        if dist > WITNESS_TOL:
            reasons.append(f"disjunct {p}: input {dist:.3g} outside the box")
            continue
        for q, (A, b) in enumerate(d.clause_arrays(prop.n_outputs)):
            viol = float((A @ y - b).max(initial=-np.inf))
            if viol <= WITNESS_TOL:
                return True, f"disjunct {p} clause {q} (margin {viol:.3g})"
            reasons.append(f"disjunct {p} clause {q}: output margin {viol:.3g} > {WITNESS_TOL}")
    return False, "; ".join(reasons)


def judge(verdict: str, cex_x: Any, truth: Truth, ort: OrtNet, prop: Prop) -> tuple[bool, bool, str]:
    """(wrong, inconsistency, why) for one stage result (rules in the module docstring)."""
    if verdict == "sat":
        if cex_x is None:
            return True, False, "sat without a counterexample"
        ok, why = check_witness(ort, prop, cex_x)
        if not ok:
            return True, False, f"sat witness fails the harness check: {why}"
        if truth.status == "unsat":
            return False, True, f"confirmed sat witness ({why}) but the truth is certain unsat " \
                                f"(m_lower {truth.m_lower:.6g})"
        return False, False, why
    if verdict == "unsat" and truth.status == "sat":
        return True, False, f"unsat but the harness holds a witness (onnxruntime margin {truth.witness_margin_ort:.3g})"
    return False, False, ""


# ============================================================================ 5. the cases

def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), *[int(k) for k in keys]])


def props_per_net(seed: int, net_index: int) -> int:
    return int(_rng(seed, 2, net_index).integers(4, 7))


def case_layout(seed: int, n_cases: int, start: int = 0):
    """[(case, net index, property index)] for cases start..n_cases-1 (a network holds 4-6 cases)."""
    out, case, net = [], 0, 0
    while case < n_cases:
        k = props_per_net(seed, net)
        for j in range(k):
            if start <= case < n_cases:
                out.append((case, net, j))
            case += 1
        net += 1
    return out


def net_family(seed: int, net_index: int, families: Sequence[str]) -> str:
    w = np.array([FAMILY_WEIGHTS[f] for f in families])
    return str(_rng(seed, 3, net_index).choice(list(families), p=w / w.sum()))


def schedule(case: int, family: str, k: int = STAGES_PER_CASE) -> list[str]:
    """The stages a case runs: a rotating pair over STAGES, 'auto' on every other case, and the
    ReLU branch and bound (which splits the max) on every third MaxPool net, at most ``k``
    (``k`` >= len(STAGES): all)."""
    if k >= len(STAGES):
        return list(STAGES)
    want = [STAGES[(2 * case) % len(STAGES)], STAGES[(2 * case + 1) % len(STAGES)]]
    if case % 2 == 0:
        want.insert(0, "auto")
    if family == "maxpool" and case % 3 == 1:
        want.insert(0, "bab")
    out = []
    for s in want:
        if s not in out:
            out.append(s)
    return out[:max(k, 1)]


@dataclass
class NetContext:
    """One network and what every case on it shares: the ONNX file, onnxruntime, vnnx's verifier."""
    index: int
    net: Net
    path: Path
    ort: OrtNet
    verifier: Any = None
    build_error: str = ""


@dataclass
class Case:
    case: int
    net: NetContext
    prop_index: int
    prop: Prop
    path: Path
    truth: Truth


def build_net(seed: int, net_index: int, families: Sequence[str], workdir: Path) -> NetContext:
    """Generate, write and check network ``net_index`` (deterministic in the seed)."""
    family = net_family(seed, net_index, families)
    rng = _rng(seed, 0, net_index)
    net = make_net(rng, family)
    path = workdir / f"net_{seed}_{net_index}.onnx"
    ort = write_onnx(net, path, rng)
    return NetContext(net_index, net, path, ort)


def build_case(seed: int, case: int, ctx: NetContext, prop_index: int, workdir: Path) -> Case:
    """Generate case ``case`` (property ``prop_index`` of its network), write its VNN-LIB file and
    compute its truth."""
    rng = _rng(seed, 1, ctx.index, prop_index)
    shapes = list(SHAPE_WEIGHTS)
    w = np.array([SHAPE_WEIGHTS[s] for s in shapes])
    shape = str(rng.choice(shapes, p=w / w.sum()))
    prop, hints = make_property(rng, ctx.net, shape)
    path = workdir / f"case_{seed}_{case}.vnnlib"
    path.write_text(prop.text)
    truth = compute_truth(ctx.net, ctx.ort, prop, hints, _rng(seed, 4, case))
    return Case(case, ctx, prop_index, prop, path, truth)


def attach_verifier(ctx: NetContext, verifier_factory: Optional[Callable] = None) -> None:
    """Load the ONNX file with vnnx and build its Verifier once (errors are kept, not raised)."""
    from vnnx.errors import VnnxError

    try:
        if verifier_factory is not None:
            ctx.verifier = verifier_factory(ctx)
            return
        from vnnx.cli import relaxations_for
        from vnnx.io.onnx import load_onnx
        from vnnx.verify import Verifier

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = load_onnx(ctx.path)
            ctx.verifier = Verifier(model, relaxations=relaxations_for("capm"))
    except VnnxError as exc:
        ctx.build_error = f"error: {_one_line(exc)}"
    except Exception as exc:  # noqa: BLE001 - a crash in vnnx is a finding, not a harness failure
        ctx.build_error = f"crash: {_one_line(exc)}"


def run_stage(case: Case, stage: str, timeout: float = STAGE_TIMEOUT) -> dict:
    """Run one vnnx stage on one case and judge it; returns the JSON-able record."""
    from vnnx.errors import VnnxError
    from vnnx.io.vnnlib import read_vnnlib

    ctx = case.net
    t0 = time.monotonic()
    verdict, decided_by, cex_x, message, stages = "error", "", None, "", []
    if ctx.build_error:
        verdict, message = ctx.build_error.split(":", 1)[0], ctx.build_error
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                spec = read_vnnlib(case.path, ctx.net.n_inputs, ctx.net.n_outputs)
                res = ctx.verifier.verify(spec, method=stage, timeout=timeout)
            verdict, decided_by = res.verdict, res.decided_by
            cex = getattr(res, "counterexample", None)
            cex_x = None if cex is None else getattr(cex, "x", None)
            stages = getattr(res, "stages", [])
        except VnnxError as exc:
            verdict, message = "error", _one_line(exc)
        except Exception as exc:  # noqa: BLE001 - a crash in vnnx is a finding
            verdict, message = "crash", _one_line(exc)
    seconds = time.monotonic() - t0
    wrong, inconsistent, why = judge(verdict, cex_x, case.truth, ctx.ort, case.prop)
    return {"case": case.case, "net": ctx.index, "family": ctx.net.family, "shape": case.prop.shape,
            "n_inputs": ctx.net.n_inputs, "stage": stage, "verdict": verdict, "decided_by": decided_by,
            "seconds": round(seconds, 4), "truth": case.truth.status, "truth_method": case.truth.method,
            "m_star": _num(case.truth.m_star), "m_lower": _num(case.truth.m_lower),
            "wrong": wrong, "inconsistent": inconsistent, "why": why, "message": message[:500],
            "truth_notes": case.truth.notes, "vnnx_stages": stages if (wrong or inconsistent) else []}


def _one_line(exc: BaseException) -> str:
    """The exception as one line, with the harness's file names generalised (so that equal
    failures on different networks count together)."""
    text = " ".join(str(exc).split())
    text = re.sub(r"\S*/(net|case)_\d+_\d+\.(onnx|vnnlib)", r"<\1>.\2", text)
    return f"{type(exc).__name__}: {text}"


def _num(v: float) -> Any:
    """JSON has no inf/nan: write them as strings."""
    v = float(v)
    return v if math.isfinite(v) else str(v)


def repro_command(seed: int, case: int, stage: str, families: Sequence[str] = DEFAULT_FAMILIES,
                  timeout: float = STAGE_TIMEOUT) -> str:
    """The command that reruns one (case, stage), with the options that change the case."""
    cmd = f"tools/soundness.py --case {seed}:{case} --stage {stage} -v"
    if tuple(families) != tuple(DEFAULT_FAMILIES):
        cmd += f" --families {','.join(families)}"
    if float(timeout) != STAGE_TIMEOUT:
        cmd += f" --timeout {float(timeout):g}"
    return cmd


# ============================================================================ 6. running

def _new_summary(mode: str, seed: int) -> dict:
    return {"mode": mode, "seed": seed, "cases": 0, "stage_runs": 0, "seconds": 0.0,
            "per_stage": {s: {k: 0 for k in VERDICT_KEYS} for s in STAGES},
            "truth": {"sat": 0, "unsat": 0, "uncertain": 0}, "families": {}, "shapes": {},
            "wrong": [], "inconsistencies": [], "truth_notes": [], "errors": {}, "crashes": {},
            "decided_by": {}, "harness_errors": []}


def _add_record(summary: dict, rec: dict, seed: int, new_case: bool) -> None:
    """Fold one (case, stage) record into the summary."""
    if new_case:
        summary["cases"] += 1
        summary["truth"][rec["truth"]] = summary["truth"].get(rec["truth"], 0) + 1
        summary["families"][rec["family"]] = summary["families"].get(rec["family"], 0) + 1
        base = rec["shape"].split("+")[0]
        summary["shapes"][base] = summary["shapes"].get(base, 0) + 1
        for note in rec.get("truth_notes", []):
            summary["truth_notes"].append({"case": rec["case"], "note": note})
    summary["stage_runs"] += 1
    per = summary["per_stage"].setdefault(rec["stage"], {k: 0 for k in VERDICT_KEYS})
    per[rec["verdict"]] = per.get(rec["verdict"], 0) + 1
    if rec["verdict"] in ("sat", "unsat"):
        # Which engine inside the stage answered (e.g. 'bab' answered by its CROWN pre-pass).
        by = summary["decided_by"].setdefault(rec["stage"], {})
        key = f"{rec['verdict']}:{rec.get('decided_by') or '?'}"
        by[key] = by.get(key, 0) + 1
    if rec["verdict"] in ("error", "crash"):
        bucket = summary["errors" if rec["verdict"] == "error" else "crashes"]
        key = (rec.get("message") or "?")[:160]
        bucket[key] = bucket.get(key, 0) + 1
    entry = {"seed": seed, "case": rec["case"], "stage": rec["stage"], "family": rec["family"],
             "shape": rec["shape"], "verdict": rec["verdict"], "truth": rec["truth"], "m_star": rec["m_star"],
             "m_lower": rec["m_lower"], "why": rec["why"],
             "command": repro_command(seed, rec["case"], rec["stage"], rec.get("families", DEFAULT_FAMILIES),
                                      rec.get("timeout", STAGE_TIMEOUT))}
    if rec["wrong"]:
        summary["wrong"].append(entry)
    if rec["inconsistent"]:
        summary["inconsistencies"].append(entry)


def _print_wrong(entry: dict, stream=sys.stderr) -> None:
    print(f"WRONG VERDICT seed {entry['seed']} case {entry['case']} stage {entry['stage']} "
          f"({entry['family']}, {entry['shape']}): vnnx says {entry['verdict']}, truth {entry['truth']} "
          f"(m* {entry['m_star']}, m_lower {entry['m_lower']}): {entry['why']}\n"
          f"  reproduce: {entry['command']}", file=stream, flush=True)


def _read_jsonl(path: Path) -> list[dict]:
    recs = []
    if path.is_file():
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    recs.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that (case, stage) is simply rerun
    return recs


def summarize_records(recs: list[dict], seed: Optional[int] = None, mode: str = "long") -> dict:
    """The summary of (case, stage) records (a long-mode file)."""
    summary = _new_summary(mode, seed if seed is not None else (recs[0]["seed"] if recs else 0))
    seen = set()
    for rec in recs:
        c = rec["case"]
        _add_record(summary, rec, rec.get("seed", summary["seed"]), c not in seen)
        seen.add(c)
        summary["seconds"] += float(rec.get("seconds", 0.0))
    return summary


def run(mode: str = "short", seed: int = 0, cases: Optional[int] = None, out: Optional[str | Path] = None,
        stages_per_case: int = STAGES_PER_CASE, only_stage: Optional[str] = None,
        families: Sequence[str] = DEFAULT_FAMILIES, timeout: float = STAGE_TIMEOUT,
        verifier_factory: Optional[Callable] = None, workdir: Optional[str | Path] = None,
        progress: bool = True, case_ids: Optional[Sequence[int]] = None, verbose: bool = False,
        stop_on_wrong: bool = False) -> dict:
    """Run the harness and return its summary dict.

    Args:
        mode: 'short' (SHORT_CASES cases in memory), 'long' (appends to ``out``, resumable) or
            'case' (only ``case_ids``, for reproducing).
        seed: everything (networks, properties, schedules) is a function of it.
        cases: number of cases (default SHORT_CASES; long mode: 20000).
        out: long mode's JSONL file: one line per (case, stage), flushed as written; cases whose
            scheduled stages are all there are skipped on restart.
        stages_per_case: how many stages each case runs (rotating; len(STAGES) = all of them).
        only_stage: run this stage on every case instead of the schedule.
        families: network families drawn from (FAMILY_WEIGHTS).
        timeout: vnnx's per-stage timeout in seconds.
        verifier_factory: ``f(NetContext) -> object with .verify(spec, method, timeout)`` replacing
            vnnx's Verifier (tests use it to show that the harness can fail).
        workdir: where ONNX/VNN-LIB files go (a temporary folder by default, removed at the end).
        case_ids: in mode 'case', the case numbers to run.
        stop_on_wrong: stop at the first wrong verdict (the long run's choice: a wrong verdict is
            to be looked at, not counted).

    Returns:
        the summary (cases, per-stage verdict counts, truth counts, wrong verdicts, ...).
    """
    import torch

    torch.set_num_threads(1)
    import vnnx  # noqa: F401 - its compatibility patches before anything imports auto_LiRPA
    from vnnx.verify import METHODS

    if tuple(METHODS) != STAGES:
        warnings.warn(f"vnnx.verify.METHODS is {METHODS}, the harness knows {STAGES}")
    for f in families:
        if f not in FAMILY_WEIGHTS:
            raise ValueError(f"unknown family {f!r}; choose from {', '.join(FAMILY_WEIGHTS)}")
    n_cases = cases if cases is not None else (20000 if mode == "long" else SHORT_CASES)
    own_dir = workdir is None
    wd = Path(tempfile.mkdtemp(prefix="vnnx_soundness_")) if own_dir else Path(workdir)
    wd.mkdir(parents=True, exist_ok=True)
    summary = _new_summary(mode, seed)
    t_start = time.monotonic()
    stop = False

    done: dict[int, set] = {}
    out_f = None
    if mode == "long":
        if out is None:
            raise ValueError("long mode needs an output file")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        old = _read_jsonl(out)
        seeds = {r.get("seed") for r in old}
        if old and seeds != {seed}:
            raise ValueError(f"{out} holds results of seed(s) {sorted(seeds)}, not {seed}; use another file")
        fams = {tuple(r.get("families", DEFAULT_FAMILIES)) for r in old}
        if old and fams != {tuple(families)}:
            raise ValueError(f"{out} holds results for families {sorted(fams)}, not {tuple(families)}")
        for r in old:
            done.setdefault(r["case"], set()).add(r["stage"])
        out_f = open(out, "a")
    if mode == "case":
        wanted = sorted(set(case_ids or []))
        layout = [t for t in case_layout(seed, max(wanted) + 1) if t[0] in wanted] if wanted else []
    else:
        layout = case_layout(seed, n_cases)

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(layout), desc=f"soundness {mode}", unit="case", file=sys.stderr, dynamic_ncols=True)
    try:
        by_net: dict[int, list] = {}
        for c, n, k in layout:
            by_net.setdefault(n, []).append((c, k))
        for n, items in by_net.items():
            if stop:
                break
            family = net_family(seed, n, families)
            plans = []
            for c, k in items:
                st = [only_stage] if only_stage else schedule(c, family, stages_per_case)
                todo = [s for s in st if s not in done.get(c, set())]
                if todo:
                    plans.append((c, k, todo))
                elif bar is not None:
                    bar.update(1)
            if not plans:
                continue
            try:
                ctx = build_net(seed, n, families, wd)
            except Exception as exc:  # noqa: BLE001 - the harness's own failure: report, go on
                summary["harness_errors"].append({"net": n, "cases": [c for c, _, _ in plans],
                                                  "error": _one_line(exc)})
                print(f"HARNESS ERROR on network {n}: {_one_line(exc)}", file=sys.stderr, flush=True)
                if bar is not None:
                    bar.update(len(plans))
                continue
            attach_verifier(ctx, verifier_factory)
            if verbose:
                print(f"network {n}: {ctx.net.describe()}\n  file {ctx.path}"
                      + (f"\n  vnnx: {ctx.build_error}" if ctx.build_error else ""), file=sys.stderr)
            for c, k, todo in plans:
                if stop:
                    break
                try:
                    case = build_case(seed, c, ctx, k, wd)
                except Exception as exc:  # noqa: BLE001 - the harness's own failure: report, go on
                    summary["harness_errors"].append({"net": n, "cases": [c], "error": _one_line(exc)})
                    print(f"HARNESS ERROR on case {c}: {_one_line(exc)}", file=sys.stderr, flush=True)
                    if bar is not None:
                        bar.update(1)
                    continue
                if verbose:
                    _print_case(case)
                first = True
                for stage in todo:
                    rec = run_stage(case, stage, timeout)
                    rec["seed"], rec["families"], rec["timeout"] = seed, list(families), timeout
                    if verbose:
                        print(f"  stage {stage}: {rec['verdict']} ({rec['decided_by'] or '-'}, {rec['seconds']} s) "
                              f"{rec['message']} {rec['why']}", file=sys.stderr)
                    if out_f is not None:
                        out_f.write(json.dumps(rec, default=str) + "\n")
                        out_f.flush()
                    _add_record(summary, rec, seed, first)
                    first = False
                    if rec["wrong"]:
                        _print_wrong(summary["wrong"][-1])
                        stop = stop or stop_on_wrong
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(wrong=len(summary["wrong"]), refresh=False)
            if own_dir or mode == "long":
                # Long runs write tens of thousands of files: keep only what a repro needs (none).
                for p in list(wd.glob(f"*_{seed}_*")):
                    if mode != "case":
                        p.unlink(missing_ok=True)
    finally:
        if bar is not None:
            bar.close()
        if out_f is not None:
            out_f.close()
        if own_dir and mode != "case":
            shutil.rmtree(wd, ignore_errors=True)
    summary["seconds"] = round(time.monotonic() - t_start, 2)
    if mode == "long":
        total = summarize_records(_read_jsonl(Path(out)), seed)
        total["seconds_this_chunk"] = summary["seconds"]
        total["cases_this_chunk"] = summary["cases"]
        total["wrong_this_chunk"] = summary["wrong"]
        total["harness_errors"] = summary["harness_errors"]
        return total
    return summary


def _print_case(case: Case) -> None:
    t = case.truth
    print(f"case {case.case} (property {case.prop_index} of network {case.net.index}), shape {case.prop.shape}, "
          f"file {case.path}\n{case.prop.text}"
          f"truth: {t.status} by {t.method}, m* {t.m_star:.9g}, proven lower bound {t.m_lower:.9g}"
          + (f", witness onnxruntime margin {t.witness_margin_ort:.6g}" if t.witness is not None else ""),
          file=sys.stderr)
    for d in t.details:
        print(f"  {d}", file=sys.stderr)
    for note in t.notes:
        print(f"  note: {note}", file=sys.stderr)


# ============================================================================ 7. reporting

def format_summary(s: dict) -> str:
    """Human-readable totals."""
    lines = [f"mode {s['mode']}, seed {s['seed']}: {s['cases']} cases, {s['stage_runs']} stage runs, "
             f"{s['seconds']:.1f} s" + (f" (this chunk: {s['cases_this_chunk']} cases, {s['seconds_this_chunk']:.1f} s)"
                                         if "cases_this_chunk" in s else ""),
             f"truth: certain sat {s['truth'].get('sat', 0)}, certain unsat {s['truth'].get('unsat', 0)}, "
             f"uncertain {s['truth'].get('uncertain', 0)}",
             "families: " + ", ".join(f"{k} {v}" for k, v in sorted(s["families"].items())),
             "shapes: " + ", ".join(f"{k} {v}" for k, v in sorted(s["shapes"].items())),
             "",
             f"{'stage':<15}" + "".join(f"{k:>9}" for k in VERDICT_KEYS) + f"{'total':>9}"]
    for stage, counts in s["per_stage"].items():
        lines.append(f"{stage:<15}" + "".join(f"{counts.get(k, 0):>9}" for k in VERDICT_KEYS)
                     + f"{sum(counts.values()):>9}")
    if s.get("decided_by"):
        # Which engine inside each stage gave the answer (most stages run CROWN first).
        lines.append("")
        lines.append("answered by (verdict:engine):")
        for stage, by in s["decided_by"].items():
            lines.append(f"  {stage:<15}" + ", ".join(f"{k} {v}" for k, v in sorted(by.items())))
    lines.append("")
    lines.append(f"wrong verdicts: {len(s['wrong'])}")
    for w in s["wrong"][:50]:
        lines.append(f"  seed {w['seed']} case {w['case']} stage {w['stage']} {w['family']} {w['shape']}: "
                     f"{w['verdict']} vs truth {w['truth']} (m* {w['m_star']}): {w['why']}\n    {w['command']}")
    lines.append(f"harness inconsistencies (confirmed sat vs certain unsat): {len(s['inconsistencies'])}")
    for w in s["inconsistencies"][:20]:
        lines.append(f"  case {w['case']} stage {w['stage']}: {w['why']}\n    {w['command']}")
    if s["truth_notes"]:
        lines.append(f"truth notes: {len(s['truth_notes'])}")
        for n in s["truth_notes"][:10]:
            lines.append(f"  case {n['case']}: {n['note']}")
    if s.get("harness_errors"):
        lines.append(f"harness errors (cases skipped): {len(s['harness_errors'])}")
        for e in s["harness_errors"][:10]:
            lines.append(f"  network {e['net']} cases {e['cases']}: {e['error']}")
    for what in ("errors", "crashes"):
        if s[what]:
            lines.append(f"{what} (VnnxError{'s' if what == 'errors' else ': other exceptions'}), by message:")
            for msg, k in sorted(s[what].items(), key=lambda kv: -kv[1])[:10]:
                lines.append(f"  {k:6d}  {msg}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="tools/soundness.py",
        description="Differential soundness harness: random small networks and VNN-LIB properties, "
                    "an independent exact truth (MILP / witnesses / interval arithmetic), each vnnx stage "
                    "alone. Exit status 1 if any verdict is wrong.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  tools/soundness.py --short\n"
               "  tools/soundness.py --long --out out/soundness_long.jsonl --cases 20000\n"
               "  tools/soundness.py --summary out/soundness_long.jsonl\n"
               "  tools/soundness.py --case 0:17 --stage bab -v")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--short", action="store_true", help=f"{SHORT_CASES} cases in memory (about a minute)")
    g.add_argument("--long", action="store_true", help="many cases, appended to --out (resumable)")
    g.add_argument("--case", metavar="SEED:CASE", help="reproduce one case (prints truth and stage details with -v)")
    g.add_argument("--summary", metavar="FILE.jsonl", help="print the totals of an existing long-mode file")
    p.add_argument("--out", help="long mode: the JSONL file (one line per case and stage)")
    p.add_argument("--cases", type=int, help=f"number of cases (short: {SHORT_CASES}, long: 20000)")
    p.add_argument("--seed", type=int, default=0, help="seed of everything (default 0)")
    p.add_argument("--stage", choices=STAGES, help="run only this stage (default: the rotating schedule; "
                                                   "with --case: all stages)")
    p.add_argument("--stages-per-case", type=int, default=STAGES_PER_CASE,
                   help=f"stages per case, rotating (default {STAGES_PER_CASE}; {len(STAGES)} runs all)")
    p.add_argument("--timeout", type=float, default=STAGE_TIMEOUT, help=f"vnnx per-stage timeout, s (default {STAGE_TIMEOUT:g})")
    p.add_argument("--families", default=",".join(DEFAULT_FAMILIES),
                   help=f"network families, comma-separated, from {','.join(FAMILY_WEIGHTS)} (default: all)")
    p.add_argument("--workdir", help="keep ONNX/VNN-LIB files here (default: a temporary folder)")
    p.add_argument("--json", help="also write the summary as JSON to this file")
    p.add_argument("--stop-on-wrong", action="store_true", help="stop at the first wrong verdict")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.add_argument("-v", "--verbose", action="store_true", help="print networks, properties, truths, stage results")
    args = p.parse_args(argv)
    families = tuple(f.strip() for f in args.families.split(",") if f.strip())

    if args.summary:
        recs = _read_jsonl(Path(args.summary))
        summary = summarize_records(recs)
    elif args.case:
        try:
            seed_s, case_s = args.case.split(":")
            seed, case = int(seed_s), int(case_s)
        except ValueError:
            p.error("--case wants SEED:CASE, e.g. 0:17")
        wd = args.workdir or tempfile.mkdtemp(prefix="vnnx_soundness_case_")
        summary = run("case", seed=seed, case_ids=[case], only_stage=args.stage, stages_per_case=len(STAGES),
                      families=families, timeout=args.timeout, workdir=wd, progress=False, verbose=args.verbose)
        print(f"files kept in {wd}", file=sys.stderr)
    elif args.long:
        if not args.out:
            p.error("--long needs --out FILE.jsonl")
        summary = run("long", seed=args.seed, cases=args.cases, out=args.out, stages_per_case=args.stages_per_case,
                      only_stage=args.stage, families=families, timeout=args.timeout, workdir=args.workdir,
                      progress=not args.no_progress, verbose=args.verbose, stop_on_wrong=args.stop_on_wrong)
    else:
        summary = run("short", seed=args.seed, cases=args.cases, stages_per_case=args.stages_per_case,
                      only_stage=args.stage, families=families, timeout=args.timeout, workdir=args.workdir,
                      progress=not args.no_progress, verbose=args.verbose, stop_on_wrong=args.stop_on_wrong)
    print(format_summary(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=str))
    return 1 if summary["wrong"] else 0


if __name__ == "__main__":
    sys.exit(main())
