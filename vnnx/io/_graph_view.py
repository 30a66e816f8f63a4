"""Read a bound graph (:mod:`vnnx.graph`) as a plain :class:`~vnnx.network.Network` layer chain.

The graph is the one representation read from ONNX (:func:`vnnx.graph.from_onnx`); this view is
derived from it. The graph must be a chain: every operator reads the one before it. It is cut at
the nonlinear operators (Relu, Sigmoid, Tanh, MaxPool), and every maximal run of linear operators
between two cuts becomes one layer: a :class:`~vnnx.network.Conv` when the run is one 2-D
convolution (zero padding before it, per-channel affine maps around it and reshapes at its ends
folded in), else one exact :class:`~vnnx.network.Dense` read off the run (``W`` from the linear
parts applied to unit vectors, ``b`` = the run on 0), or no layer for a run of reshapes only.
Every layer is checked in float64 against the operators it replaces.

Private to :mod:`vnnx.io.onnx`; use :func:`vnnx.io.onnx.to_network`.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np
import torch

from vnnx.errors import UnsupportedOpError, VnnxError
from vnnx.network import Conv, Dense, Layer, MaxPool, Network, Relu, Sigmoid, Tanh

#: Nonlinear operator kinds the chain view has a layer for; the runs between them are affine.
ACTIVATIONS = {"Relu": Relu, "Sigmoid": Sigmoid, "Tanh": Tanh}
#: A Dense layer larger than this many entries (float64) is refused rather than built:
#: 2**25 entries is 256 MiB.
MAX_DENSE_ENTRIES = 2 ** 25
#: Relative tolerance of the float64 self-checks of every layer against the operators it replaces.
LAYER_RTOL = 1e-9
_VERIFY_SAMPLES = 3
#: Unit vectors pushed through a run at once when its Dense matrix is read off.
UNIT_CHUNK = 1024
_VERIFY_SEED = 0

Shape = tuple[int, ...]
TensorFn = Callable[[torch.Tensor], torch.Tensor]


def per_sample_shape(shape: Shape) -> Shape:
    """Drop the batch dim: a leading 1 on a tensor of rank >= 2. ``(1, 784, 1)`` -> ``(784, 1)``."""
    shape = tuple(int(d) for d in shape)
    return shape[1:] if len(shape) >= 2 and shape[0] == 1 else shape


class _Chain:
    """The graph's operator nodes 1..n in chain order, with what a run needs of them."""

    def __init__(self, graph, label: str) -> None:
        self.graph, self.label = graph, label
        for k, node in enumerate(graph.nodes[1:], 1):
            if node.inputs != (k - 1,):
                raise UnsupportedOpError(
                    f"{label}: non-sequential graph at node {node.name} ({node.op.kind}): vnnx handles chains only")

    def shape(self, k: int) -> Shape:
        return tuple(self.graph.nodes[k].shape)

    def op(self, k: int):
        return self.graph.nodes[k].op

    def kind(self, k: int) -> str:
        return self.graph.nodes[k].op.kind

    def name(self, k: int) -> str:
        return self.graph.nodes[k].name

    def fn(self, run: list[int], linear_part: bool = False) -> TensorFn:
        """``t -> output of run[-1]`` for ``t``: (B, *shape of the run's input node)."""
        def f(t: torch.Tensor) -> torch.Tensor:
            for k in run:
                op = self.op(k)
                t = op.linear_part(t) if linear_part else op.forward(t)
            return t

        return f


def graph_to_network(graph, label: str) -> Network:
    """See :func:`vnnx.io.onnx.to_network`: the layer chain of a chain-shaped bound graph."""
    g = _Chain(graph, label)
    layers: list[Layer] = []
    run: list[int] = []
    run_in = 0
    with torch.no_grad():
        for k in range(1, len(graph.nodes)):
            op = g.op(k)
            if op.linear:
                run.append(k)
                continue
            kind = op.kind
            if kind != "MaxPool" and kind not in ACTIVATIONS:
                raise UnsupportedOpError(
                    f"{label}: operator {kind} (node '{g.name(k)}') has no layer in the chain view; it has "
                    f"Relu, Sigmoid, Tanh and MaxPool between affine maps")
            pool_pad = _pool_padding(g, run, run_in) if kind == "MaxPool" else None
            if pool_pad is not None:
                # A -inf Pad right before a MaxPool (how torch exports asymmetric pooling pads)
                # is pooling padding, not an affine map.
                run = run[:-1]
            layer = _affine_layer(g, run, run_in)
            if layer is not None:
                layers.append(layer)
            if kind == "MaxPool":
                layers.append(_maxpool_layer(g, k, pool_pad))
            else:
                layers.append(ACTIVATIONS[kind](per_sample_shape(g.shape(k))))
            run, run_in = [], k
        layer = _affine_layer(g, run, run_in)
        if layer is not None:
            layers.append(layer)
    return Network(tuple(graph.input_shape), tuple(graph.output_shape), layers)


# ------------------------------------------------------------------------------------- MaxPool
def _pool_padding(g: _Chain, run: list[int], run_in: int) -> Optional[tuple[int, tuple[int, int, int, int]]]:
    """``(pad node, (top, left, bottom, right))`` when ``run`` ends in a -inf Pad of H and W."""
    if not run or g.kind(run[-1]) != "Pad":
        return None
    pad = run[-1]
    src = run[-2] if len(run) > 1 else run_in
    if len(g.shape(src)) != 4:
        return None
    amounts = _pad_amounts(g.fn([pad]), g.shape(src), float("-inf"))
    return (pad, amounts) if amounts is not None else None


def _maxpool_layer(g: _Chain, k: int, pool_pad) -> MaxPool:
    op, name = g.op(k), g.name(k)
    nodes = [k] if pool_pad is None else [pool_pad[0], k]
    src = nodes[0] - 1
    x_shape = g.shape(src)
    if len(x_shape) != 4 or x_shape[0] != 1:
        raise UnsupportedOpError(
            f"{g.label}: MaxPool node '{name}' has input shape {x_shape}; vnnx handles 2-D max pooling on (1, C, H, W)")
    pads = tuple(int(p) for p in op.pads)
    if pool_pad is not None:
        pads = tuple(p + e for p, e in zip(pads, pool_pad[1]))
    layer = MaxPool(in_shape=per_sample_shape(x_shape), kernel=tuple(int(v) for v in op.kernel),
                    stride=tuple(int(v) for v in op.stride), padding=(pads[0], pads[1], pads[2], pads[3]),
                    ceil_mode=bool(op.ceil_mode))
    out_shape = per_sample_shape(g.shape(k))
    if tuple(layer.out_shape) != out_shape:
        raise UnsupportedOpError(
            f"{g.label}: MaxPool node '{name}': vnnx computes output shape {layer.out_shape}, "
            f"the network {out_shape} (padding/ceil_mode combination not supported)")
    _verify(layer, g.fn(nodes), x_shape, f"{g.label}: MaxPool node '{name}'")
    return layer


# --------------------------------------------------------------------------------- affine runs
def _affine_layer(g: _Chain, run: list[int], run_in: int) -> Optional[Layer]:
    """One layer for the run of linear operators ``run`` fed by node ``run_in``; None for a pure reshape."""
    if not run:
        return None
    x_shape, y_shape = g.shape(run_in), g.shape(run[-1])
    f = g.fn(run)
    what = f"{g.label}: nodes [{', '.join(g.name(k) for k in run)}]"
    conv = _conv_layer(g, run, run_in, f)
    if conv is not None:
        return conv
    n_in, n_out = math.prod(x_shape), math.prod(y_shape)
    if n_in * n_out > MAX_DENSE_ENTRIES:
        raise UnsupportedOpError(f"{what}: their affine map would be a dense {n_out} x {n_in} matrix; too large")
    bias = f(torch.zeros((1,) + x_shape, dtype=torch.float64)).reshape(-1).numpy().copy()
    weight = _matrix(g.fn(run, linear_part=True), x_shape, n_out)
    if (all(g.kind(k) == "Reshape" for k in run) and n_in == n_out and not bias.any()
            and np.array_equal(weight, np.eye(n_in))):
        return None
    layer = Dense(weight, bias, per_sample_shape(x_shape), per_sample_shape(y_shape))
    try:
        _verify(layer, f, x_shape, what)
    except VnnxError as exc:
        raise UnsupportedOpError(f"{exc}: not affine in the network input") from exc
    return layer


def _matrix(linear: TensorFn, x_shape: Shape, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of the linear map ``linear``: its values on the unit vectors, in
    batches of :data:`UNIT_CHUNK` (one batched call each)."""
    n_in = math.prod(x_shape)
    weight = np.empty((n_out, n_in))
    for start in range(0, n_in, UNIT_CHUNK):
        stop = min(n_in, start + UNIT_CHUNK)
        eye = torch.zeros((stop - start, n_in), dtype=torch.float64)
        eye[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
        weight[:, start:stop] = linear(eye.reshape((stop - start,) + x_shape)).reshape(stop - start, n_out).numpy().T
    return weight


def _verify(layer: Layer, f: TensorFn, x_shape: Shape, what: str) -> None:
    """Raise :class:`VnnxError` unless ``layer`` equals ``f`` (float64) on seeded random inputs."""
    rng = np.random.default_rng(_VERIFY_SEED)
    xs = rng.uniform(-1.0, 1.0, size=(_VERIFY_SAMPLES, math.prod(x_shape)))
    expect = f(torch.from_numpy(xs).reshape((_VERIFY_SAMPLES,) + tuple(x_shape))).reshape(_VERIFY_SAMPLES, -1).numpy()
    got = layer.apply(xs)
    if got.shape != expect.shape:
        raise VnnxError(f"{what}: layer output size {got.shape[1]} != {expect.shape[1]}")
    err = np.abs(got - expect).max()
    if not err <= LAYER_RTOL * (1.0 + np.abs(expect).max()):
        raise VnnxError(f"{what}: the {type(layer).__name__} layer differs from the nodes by {err:.3g}")


def _conv_layer(g: _Chain, run: list[int], run_in: int, f: TensorFn) -> Optional[Conv]:
    """A :class:`Conv` for a run with one 2-D Conv, or None when the run is not of that form.

    Zero-padding before the convolution folds into its padding; a per-channel affine map before
    it (input normalisation) folds into its weights when it has no padding; a per-channel affine
    map after it (a BatchNormalization the graph did not fold, a bias Add, scaling) folds into
    weights and bias. The result is checked against the operators; any doubt returns None (-> Dense).
    """
    from vnnx.ops.conv import Conv as ConvOp

    kinds = [g.kind(k) for k in run]
    if kinds.count("Conv") != 1:
        return None
    c = kinds.index("Conv")
    op = g.op(run[c])
    if type(op) is not ConvOp:      # a 1-D convolution reads as a Dense
        return None
    # Reshapes at either end keep the C-order flattening, so they do not change the layer.
    lead = 0
    while lead < c and kinds[lead] == "Reshape":
        lead += 1
    end = len(run)
    while end > c + 1 and kinds[end - 1] == "Reshape":
        end -= 1
    core_in = run[lead - 1] if lead else run_in
    pre, post = run[lead:c], run[c + 1:end]
    shapes = [g.shape(k) for k in (core_in, run[c] - 1, run[c], run[end - 1])]
    if not all(len(s) == 4 and s[0] == 1 for s in shapes):
        return None
    x_in, y_conv = shapes[0], shapes[2]
    pads = [int(p) for p in op.pads]
    weight = op.weight.numpy().copy()
    bias = np.zeros(weight.shape[0]) if op.bias is None else op.bias.numpy().copy()
    if pre:
        g_pre = g.fn(pre)
        extra = _pad_amounts(g_pre, x_in)
        if extra is not None:
            pads = [p + e for p, e in zip(pads, extra)]
        elif not any(pads):
            channel = _per_channel_affine(g_pre, x_in)
            if channel is None:
                return None
            weight, bias = _fold_input_affine(weight, bias, op.groups, *channel)
        else:
            return None
    if post:
        channel = _per_channel_affine(g.fn(post), y_conv)
        if channel is None:
            return None
        a, d = channel
        weight = weight * a[:, None, None, None]
        bias = a * bias + d
    layer = Conv(weight=weight, bias=bias, in_shape=per_sample_shape(x_in),
                 out_shape=per_sample_shape(shapes[3]), stride=tuple(int(s) for s in op.stride),
                 padding=(pads[0], pads[1], pads[2], pads[3]), dilation=tuple(int(d) for d in op.dilation),
                 groups=int(op.groups))
    try:
        _verify(layer, f, g.shape(run_in), "conv")
    except VnnxError:
        return None
    return layer


def _pad_amounts(fn: TensorFn, shape: Shape, value: float = 0.0) -> Optional[tuple[int, int, int, int]]:
    """``(top, left, bottom, right)`` when ``fn`` pads H and W of (1, C, H, W) with ``value``."""
    probe = fn(torch.ones((1,) + tuple(shape), dtype=torch.float64))[0]
    if probe.dim() != 4 or tuple(probe.shape[:2]) != tuple(shape[:2]):
        return None
    inside = probe[0, 0] == 1.0
    rows = torch.nonzero(inside.any(dim=1)).flatten()
    cols = torch.nonzero(inside.any(dim=0)).flatten()
    if len(rows) == 0 or len(cols) == 0:
        return None
    top, left = int(rows[0]), int(cols[0])
    bottom, right = probe.shape[2] - 1 - int(rows[-1]), probe.shape[3] - 1 - int(cols[-1])
    r = torch.from_numpy(np.random.default_rng(_VERIFY_SEED).uniform(-1, 1, tuple(shape)))
    expect = torch.nn.functional.pad(r, (left, right, top, bottom), value=value)
    got = fn(r.unsqueeze(0))[0]
    if got.shape != expect.shape or not torch.equal(got, expect):
        return None
    return top, left, bottom, right


def _per_channel_affine(fn: TensorFn, shape: Shape) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """``(a, d)``, each (C,), when ``fn(x) = a[c] * x + d[c]`` on (1, C, H, W) tensors, else None."""
    zeros = torch.zeros((1,) + tuple(shape), dtype=torch.float64)
    d_full = fn(zeros)[0]
    a_full = fn(torch.ones_like(zeros))[0] - d_full
    if tuple(d_full.shape) != tuple(shape):
        return None
    c = shape[1]
    a = a_full[0].reshape(c, -1)
    d = d_full[0].reshape(c, -1)
    if not (torch.all(a == a[:, :1]) and torch.all(d == d[:, :1])):
        return None
    a_c, d_c = a[:, 0], d[:, 0]
    r = torch.from_numpy(np.random.default_rng(_VERIFY_SEED).uniform(-1, 1, tuple(shape)))
    expect = a_c[None, :, None, None] * r + d_c[None, :, None, None]
    if not torch.allclose(fn(r.unsqueeze(0))[0], expect, rtol=LAYER_RTOL, atol=LAYER_RTOL):
        return None
    return a_c.numpy().copy(), d_c.numpy().copy()


def _fold_input_affine(weight: np.ndarray, bias: np.ndarray, groups: int, a_in: np.ndarray,
                       d_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """conv(a * x + d) as one convolution of x; exact only without padding."""
    out_ch, cg = weight.shape[:2]
    group_of = np.arange(out_ch) // (out_ch // groups)
    idx = group_of[:, None] * cg + np.arange(cg)[None, :]          # (O, C/groups) input channel
    new_w = weight * a_in[idx][:, :, None, None]
    new_b = bias + (weight * d_in[idx][:, :, None, None]).sum(axis=(1, 2, 3))
    return new_w, new_b
