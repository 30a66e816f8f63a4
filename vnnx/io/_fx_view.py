"""Read an onnx2torch ``fx.GraphModule`` as a plain :class:`~vnnx.network.Network`.

The walk has two stages. First every fx node is evaluated once on a zero input of the exact
ONNX input shape, in float64: nodes that do not depend on the input are constants (kept, never
part of a layer); the nodes that do form the *data path*, which must be a chain. Then the chain
is cut at the activations (Relu, Sigmoid, Tanh, MaxPool, recognised by the ONNX op type of the
node onnx2torch converted), and every maximal run of nodes between two cuts is read as one affine
map: exactly, by evaluating the run (``b = f(0)``, ``W`` = the Jacobian), and then checked on
seeded random inputs, so a node that is not affine after all is an error, never a wrong layer.

Private to :mod:`vnnx.io.onnx`; use :func:`vnnx.io.onnx.to_network`.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Callable

import numpy as np
import onnx
import torch
from torch import fx
from torch.fx.node import map_arg

from vnnx.errors import UnsupportedOpError, VnnxError
from vnnx.network import Conv, Dense, Layer, MaxPool, Network, Relu, Sigmoid, Tanh

ACTIVATION_OPS = frozenset({"Relu", "Sigmoid", "Tanh", "MaxPool"})
#: Ops that only move or relabel values. A run of these alone that turns out to be the
#: identity on flattened samples (a Flatten before a Gemm, say) becomes no layer at all; an
#: identity made of arithmetic (``x @ I + 0``) stays a Dense, mirroring the file.
RESHAPE_OPS = frozenset({"Flatten", "Reshape", "Identity", "Dropout", "Squeeze", "Unsqueeze", ""})
#: A Dense layer larger than this many entries (float64) is refused rather than built:
#: 2**25 entries is 256 MiB.
MAX_DENSE_ENTRIES = 2 ** 25
#: Relative tolerance of the float64 self-checks of every layer against the fx nodes it replaces.
LAYER_RTOL = 1e-9
_VERIFY_SAMPLES = 3
_UNIT_CHUNK = 1024
_VERIFY_SEED = 0

Shape = tuple[int, ...]
TensorFn = Callable[[torch.Tensor], torch.Tensor]


def per_sample_shape(shape: Shape) -> Shape:
    """Drop the batch dim: a leading 1 on a tensor of rank >= 2. ``(1, 784, 1)`` -> ``(784, 1)``."""
    shape = tuple(int(d) for d in shape)
    return shape[1:] if len(shape) >= 2 and shape[0] == 1 else shape


class _Graph:
    """The float64 fx module, its constants, its data chain and the ONNX node behind each fx node."""

    def __init__(self, module: torch.nn.Module, proto: onnx.ModelProto, input_shape: Shape, label: str):
        self.label = label
        self.gm: fx.GraphModule = copy.deepcopy(module).double().eval()
        for p in self.gm.parameters():
            p.requires_grad_(False)
        self._producer = {out: node for node in proto.graph.node for out in node.output}
        self.env: dict[fx.Node, Any] = {}
        self.chain: list[fx.Node] = []
        self.placeholder: fx.Node | None = None
        self._walk(tuple(input_shape))

    # ---- ONNX side of an fx node
    def onnx_node(self, node: fx.Node) -> onnx.NodeProto | None:
        if node.op != "call_module":
            return None
        mapping = getattr(self.gm.get_submodule(node.target), "onnx_mapping", None)
        if mapping is None or not mapping.outputs:
            return None
        return self._producer.get(mapping.outputs[0])

    def op_type(self, node: fx.Node) -> str:
        proto = self.onnx_node(node)
        return proto.op_type if proto is not None else ""

    def name(self, node: fx.Node) -> str:
        proto = self.onnx_node(node)
        if proto is not None and proto.name:
            return proto.name
        return str(node.target) if node.op == "call_module" else node.name

    # ---- evaluation
    def call(self, node: fx.Node, lookup: Callable[[fx.Node], Any]) -> Any:
        args = map_arg(node.args, lookup)
        kwargs = map_arg(node.kwargs, lookup)
        if (self.op_type(node) == "Cast" and args and isinstance(args[0], torch.Tensor)
                and args[0].is_floating_point()):
            proto = self.onnx_node(node)
            to = next((a.i for a in proto.attribute if a.name == "to"), None) if proto is not None else None
            if to in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
                # A float-to-float Cast would drop the view's float64 back to float32.
                return args[0]
        if node.op == "call_module":
            return self.gm.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            obj, *rest = args
            return getattr(obj, node.target)(*rest, **kwargs)
        raise VnnxError(f"{self.label}: unexpected fx node kind {node.op} at {node.name}")

    def data_arg(self, node: fx.Node) -> fx.Node:
        """The one data-path input of a chain node."""
        return next(n for n in node.all_input_nodes if n is self.placeholder or n in self._data)

    def run_fn(self, run: list[fx.Node], run_in: fx.Node) -> TensorFn:
        """``t -> output of run[-1]`` when ``run_in`` produces ``t`` (full ONNX tensor shapes)."""
        def f(t: torch.Tensor) -> torch.Tensor:
            overlay: dict[fx.Node, Any] = {run_in: t}

            def lookup(n: fx.Node) -> Any:
                return overlay[n] if n in overlay else self.env[n]

            for node in run:
                overlay[node] = self.call(node, lookup)
            return overlay[run[-1]] if run else t

        return f

    def _walk(self, input_shape: Shape) -> None:
        self._data: set[fx.Node] = set()
        tail: fx.Node | None = None
        with torch.no_grad():
            for node in self.gm.graph.nodes:
                if node.op == "placeholder":
                    if self.placeholder is not None:
                        raise UnsupportedOpError(f"{self.label}: the network has more than one input")
                    self.placeholder = tail = node
                    self.env[node] = torch.zeros(input_shape, dtype=torch.float64)
                    self._data.add(node)
                elif node.op == "get_attr":
                    obj: Any = self.gm
                    for part in str(node.target).split("."):
                        obj = getattr(obj, part)
                    self.env[node] = obj
                elif node.op == "output":
                    if node.args[0] is not tail:
                        raise UnsupportedOpError(
                            f"{self.label}: non-sequential graph at the output (it is not the end "
                            "of the chain of nodes that depend on the input)")
                else:
                    refs: list[fx.Node] = []
                    map_arg((node.args, node.kwargs), lambda n: refs.append(n) or n)
                    data_refs = [r for r in refs if r in self._data]
                    # Shape reads only the (fixed) input shape, so it is a constant.
                    is_data = bool(data_refs) and self.op_type(node) != "Shape"
                    if is_data and (len(data_refs) > 1 or data_refs[0] is not tail):
                        raise UnsupportedOpError(
                            f"{self.label}: non-sequential graph at node {self.name(node)} "
                            f"({self.op_type(node) or node.op}): vnnx handles chains only")
                    try:
                        self.env[node] = self.call(node, self.env.__getitem__)
                    except Exception as exc:
                        raise UnsupportedOpError(
                            f"{self.label}: node {self.name(node)} ({self.op_type(node) or node.op}) "
                            f"fails in the float64 view: {exc}") from exc
                    if not is_data:
                        continue
                    self._data.add(node)
                    self.chain.append(node)
                    tail = node


def fx_to_network(module: torch.nn.Module, proto: onnx.ModelProto, input_shape: Shape,
                  output_shape: Shape, label: str) -> Network:
    """See :func:`vnnx.io.onnx.to_network`. ``proto`` is the model onnx2torch converted."""
    g = _Graph(module, proto, input_shape, label)
    layers: list[Layer] = []
    run: list[fx.Node] = []
    run_in = g.placeholder
    assert run_in is not None
    with torch.no_grad():
        for node in g.chain:
            op = g.op_type(node)
            if op not in ACTIVATION_OPS:
                run.append(node)
                continue
            pool_pad = _pool_padding(g, run, run_in) if op == "MaxPool" else None
            if pool_pad is not None:
                # A -inf Pad right before a MaxPool (how torch exports asymmetric pooling pads,
                # network.to_torch() included) is pooling padding, not an affine map.
                run = run[:-1]
            layer = _affine_layer(g, run, run_in)
            if layer is not None:
                layers.append(layer)
            if op == "MaxPool":
                layers.append(_maxpool_layer(g, node, pool_pad))
            else:
                layers.append(_activation_layer(g, node, op))
            run, run_in = [], node
        layer = _affine_layer(g, run, run_in)
        if layer is not None:
            layers.append(layer)
    return Network(tuple(input_shape), tuple(output_shape), layers)


# ------------------------------------------------------------------------------- activations
def _activation_layer(g: _Graph, node: fx.Node, op: str) -> Layer:
    shape = per_sample_shape(tuple(g.env[node].shape))
    if op == "Relu":
        return Relu(shape)
    if op == "Sigmoid":
        return Sigmoid(shape)
    return Tanh(shape)


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        out[a.name] = v.decode() if isinstance(v, bytes) else v
    return out


def _pool_padding(g: _Graph, run: list[fx.Node], run_in: fx.Node
                  ) -> tuple[fx.Node, tuple[int, int, int, int]] | None:
    """``(pad node, (top, left, bottom, right))`` when ``run`` ends in a -inf Pad of H and W."""
    if not run or g.op_type(run[-1]) != "Pad":
        return None
    pad = run[-1]
    src = g.data_arg(pad)
    x = g.env[src]
    if x.dim() != 4:
        return None
    amounts = _pad_amounts(g.run_fn([pad], src), x, float("-inf"))
    return (pad, amounts) if amounts is not None else None


def _maxpool_layer(g: _Graph, node: fx.Node,
                   pool_pad: tuple[fx.Node, tuple[int, int, int, int]] | None) -> MaxPool:
    # Geometry is read from the ONNX node, not from onnx2torch's modules: onnx2torch turns
    # asymmetric pads into a separate -inf pad module before a padding-free MaxPool2d.
    proto = g.onnx_node(node)
    assert proto is not None
    name = g.name(node)
    attrs = _attributes(proto)
    nodes = [node] if pool_pad is None else [pool_pad[0], node]
    src = g.data_arg(nodes[0])
    x = g.env[src]
    if x.dim() != 4 or x.shape[0] != 1:
        raise UnsupportedOpError(
            f"{g.label}: MaxPool node '{name}' has input shape {tuple(x.shape)}; vnnx handles "
            "2-D max pooling on (1, C, H, W)")
    kernel = tuple(int(k) for k in attrs["kernel_shape"])
    strides = tuple(int(s) for s in attrs.get("strides", [1, 1]))
    dilations = tuple(int(d) for d in attrs.get("dilations", [1, 1]))
    auto_pad = attrs.get("auto_pad", "NOTSET")
    pads = tuple(int(p) for p in attrs.get("pads", [0, 0, 0, 0])) if auto_pad == "NOTSET" else (0, 0, 0, 0)
    if dilations != (1, 1):
        raise UnsupportedOpError(f"{g.label}: MaxPool node '{name}' has dilations {dilations}; only 1 is supported")
    if auto_pad not in ("NOTSET", "VALID"):
        raise UnsupportedOpError(f"{g.label}: MaxPool node '{name}' has auto_pad={auto_pad}; not supported")
    if pool_pad is not None:
        pads = tuple(p + e for p, e in zip(pads, pool_pad[1]))
    layer = MaxPool(in_shape=per_sample_shape(tuple(x.shape)), kernel=kernel, stride=strides,
                    padding=(pads[0], pads[1], pads[2], pads[3]),
                    ceil_mode=bool(attrs.get("ceil_mode", 0)))
    out_shape = per_sample_shape(tuple(g.env[node].shape))
    if tuple(layer.out_shape) != out_shape:
        raise UnsupportedOpError(
            f"{g.label}: MaxPool node '{name}': vnnx computes output shape {layer.out_shape}, "
            f"the network {out_shape} (padding/ceil_mode combination not supported)")
    _verify(layer, g.run_fn(nodes, src), tuple(x.shape), f"{g.label}: MaxPool node '{name}'")
    return layer


# -------------------------------------------------------------------------------- affine runs
def _affine_layer(g: _Graph, run: list[fx.Node], run_in: fx.Node) -> Layer | None:
    """One layer for the run of affine nodes ``run`` fed by ``run_in``; None for a pure reshape."""
    if not run:
        return None
    x_shape = tuple(g.env[run_in].shape)
    y_shape = tuple(g.env[run[-1]].shape)
    f = g.run_fn(run, run_in)
    names = ", ".join(g.name(n) for n in run)
    what = f"{g.label}: nodes [{names}]"
    conv = _conv_layer(g, run, run_in, f)
    if conv is not None:
        return conv
    n_in, n_out = math.prod(x_shape), math.prod(y_shape)
    if n_in * n_out > MAX_DENSE_ENTRIES:
        raise UnsupportedOpError(
            f"{what}: their affine map would be a dense {n_out} x {n_in} matrix; too large")

    def flat(v: torch.Tensor) -> torch.Tensor:
        return f(v.reshape(x_shape)).reshape(-1)

    zero = torch.zeros(n_in, dtype=torch.float64)
    bias = flat(zero)
    weight = _jacobian(flat, zero, bias)
    w, b = weight.numpy().copy(), bias.numpy().copy()
    if (all(g.op_type(n) in RESHAPE_OPS for n in run) and n_in == n_out and not b.any()
            and np.array_equal(w, np.eye(n_in))):
        return None
    layer = Dense(w, b, per_sample_shape(x_shape), per_sample_shape(y_shape))
    try:
        _verify(layer, f, x_shape, what)
    except VnnxError as exc:
        raise UnsupportedOpError(f"{exc}: not affine in the network input") from exc
    return layer


def _jacobian(flat: TensorFn, zero: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """(n_out, n_in) linear part of an affine ``flat``: ``flat(e_i) - flat(0)`` per unit vector.

    Batched with ``torch.func.vmap`` (no autodiff needed for an affine map); one vector at a
    time when a module cannot run under vmap (e.g. a reshape fixing the batch size through
    data-dependent Python). Exactness does not depend on the path.
    """
    n_in = zero.numel()
    cols = []
    try:
        batched = torch.func.vmap(flat)
        for start in range(0, n_in, _UNIT_CHUNK):
            eye = torch.eye(n_in, dtype=zero.dtype)[start:start + _UNIT_CHUNK]
            cols.append((batched(eye) - bias).T)
    except Exception:
        cols = []
        for i in range(n_in):
            e = zero.clone()
            e[i] = 1.0
            cols.append((flat(e) - bias)[:, None])
    return torch.cat(cols, dim=1)


def _verify(layer: Layer, f: TensorFn, x_shape: tuple, what: str) -> None:
    """Raise :class:`VnnxError` unless ``layer`` equals ``f`` (float64) on seeded random inputs."""
    rng = np.random.default_rng(_VERIFY_SEED)
    xs = rng.uniform(-1.0, 1.0, size=(_VERIFY_SAMPLES, math.prod(x_shape)))
    expect = np.stack([f(torch.from_numpy(x.reshape(x_shape))).reshape(-1).numpy() for x in xs])
    got = layer.apply(xs)
    if got.shape != expect.shape:
        raise VnnxError(f"{what}: layer output size {got.shape[1]} != {expect.shape[1]}")
    err = np.abs(got - expect).max()
    if not err <= LAYER_RTOL * (1.0 + np.abs(expect).max()):
        raise VnnxError(f"{what}: the {type(layer).__name__} layer differs from the nodes by {err:.3g}")


def _conv_layer(g: _Graph, run: list[fx.Node], run_in: fx.Node, f: TensorFn) -> Conv | None:
    """A :class:`Conv` for a run with one 2-D Conv, or None when the run is not of that form.

    Zero-padding nodes before the convolution fold into its padding; a per-channel affine map
    before it (input normalisation) folds into its weights when it has no padding; a
    per-channel affine map after it (BatchNormalization, bias Add, scaling) folds into weights
    and bias. The result is checked against the nodes; any doubt returns None (-> Dense).
    """
    ops = [g.op_type(n) for n in run]
    if ops.count("Conv") != 1:
        return None
    k = ops.index("Conv")
    conv_node = run[k]
    # Reshapes at either end keep the C-order flattening, so they do not change the layer.
    lead = 0
    while lead < k and ops[lead] in RESHAPE_OPS:
        lead += 1
    end = len(run)
    while end > k + 1 and ops[end - 1] in RESHAPE_OPS:
        end -= 1
    core_in = run[lead - 1] if lead else run_in
    pre, post = run[lead:k], run[k + 1:end]
    x_in = g.env[core_in]
    x_conv = g.env[g.data_arg(conv_node)]
    y_conv = g.env[conv_node]
    y_out = g.env[run[end - 1]]
    if not all(t.dim() == 4 and t.shape[0] == 1 for t in (x_in, x_conv, y_conv, y_out)):
        return None
    torch_convs = [m for m in g.gm.get_submodule(conv_node.target).modules()
                   if isinstance(m, torch.nn.Conv2d)]
    proto = g.onnx_node(conv_node)
    if len(torch_convs) != 1 or proto is None:
        return None
    attrs = _attributes(proto)
    if attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return None
    pads = [int(p) for p in attrs.get("pads", [0, 0, 0, 0])] if attrs.get("auto_pad", "NOTSET") == "NOTSET" else [0] * 4
    conv = torch_convs[0]
    weight = conv.weight.detach().double().numpy().copy()
    bias = (conv.bias.detach().double().numpy().copy() if conv.bias is not None
            else np.zeros(weight.shape[0]))
    groups = int(conv.groups)

    if pre:
        g_pre = g.run_fn(pre, core_in)
        extra = _pad_amounts(g_pre, x_in)
        if extra is not None:
            pads = [p + e for p, e in zip(pads, extra)]
        elif not any(pads):
            channel = _per_channel_affine(g_pre, x_in)
            if channel is None:
                return None
            a_in, d_in = channel
            weight, bias = _fold_input_affine(weight, bias, groups, a_in, d_in)
        else:
            return None
    if post:
        channel = _per_channel_affine(g.run_fn(post, conv_node), y_conv)
        if channel is None:
            return None
        a, d = channel
        weight = weight * a[:, None, None, None]
        bias = a * bias + d
    layer = Conv(weight=weight, bias=bias, in_shape=per_sample_shape(tuple(x_in.shape)),
                 out_shape=per_sample_shape(tuple(y_out.shape)),
                 stride=tuple(int(s) for s in conv.stride), padding=(pads[0], pads[1], pads[2], pads[3]),
                 dilation=tuple(int(d) for d in conv.dilation), groups=groups)
    try:
        _verify(layer, f, tuple(g.env[run_in].shape), "conv")
    except Exception:
        return None
    return layer


def _pad_amounts(fn: TensorFn, x: torch.Tensor, value: float = 0.0
                 ) -> tuple[int, int, int, int] | None:
    """``(top, left, bottom, right)`` when ``fn`` pads H and W of (1, C, H, W) with ``value``."""
    probe = fn(torch.ones_like(x))
    if probe.dim() != 4 or probe.shape[:2] != x.shape[:2]:
        return None
    inside = probe[0, 0] == 1.0
    rows = torch.nonzero(inside.any(dim=1)).flatten()
    cols = torch.nonzero(inside.any(dim=0)).flatten()
    if len(rows) == 0 or len(cols) == 0:
        return None
    top, left = int(rows[0]), int(cols[0])
    bottom, right = probe.shape[2] - 1 - int(rows[-1]), probe.shape[3] - 1 - int(cols[-1])
    r = torch.from_numpy(np.random.default_rng(_VERIFY_SEED).uniform(-1, 1, tuple(x.shape)))
    expect = torch.nn.functional.pad(r, (left, right, top, bottom), value=value)
    got = fn(r)
    if got.shape != expect.shape or not torch.equal(got, expect):
        return None
    return top, left, bottom, right


def _per_channel_affine(fn: TensorFn, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray] | None:
    """``(a, d)``, each (C,), when ``fn(x) = a[c] * x + d[c]`` on (1, C, H, W) tensors, else None."""
    zeros = torch.zeros_like(x)
    d_full = fn(zeros)
    a_full = fn(torch.ones_like(x)) - d_full
    if d_full.shape != x.shape:
        return None
    c = x.shape[1]
    a = a_full[0].reshape(c, -1)
    d = d_full[0].reshape(c, -1)
    if not (torch.all(a == a[:, :1]) and torch.all(d == d[:, :1])):
        return None
    a_c, d_c = a[:, 0], d[:, 0]
    r = torch.from_numpy(np.random.default_rng(_VERIFY_SEED).uniform(-1, 1, tuple(x.shape)))
    expect = a_c[None, :, None, None] * r + d_c[None, :, None, None]
    if not torch.allclose(fn(r), expect, rtol=LAYER_RTOL, atol=LAYER_RTOL):
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
