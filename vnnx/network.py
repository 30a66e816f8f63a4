"""A plain view of a feed-forward network: a chain of affine maps and activations.

Every layer acts on one sample, flattened in C order (the order VNN-LIB's ``X_i`` and ``Y_j``
use). A bound graph (:mod:`vnnx.graph`, the one representation read from ONNX) that is a chain
(Gemm/MatMul/Conv/BatchNorm/Reshape/... between ReLU, MaxPool, Sigmoid and Tanh nodes) maps onto
this view (:func:`vnnx.io.onnx.to_network`): consecutive affine ops fold into one :class:`Dense`
(or a :class:`Conv` when the group is one convolution); :meth:`Network.to_graph` goes back.

The view is what the MILP encoding, the plugins' passes and the canonical torch module (given
to auto_LiRPA) are built from. It holds float64 numpy arrays so that exact encodings do not
inherit float32 rounding from the file.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence, Union

import numpy as np

from vnnx.errors import ShapeMismatchError, UnsupportedOpError

Shape = tuple[int, ...]


def _size(shape: Shape) -> int:
    return int(math.prod(shape))


def _unflatten_cls():
    from torch import nn

    class Unflatten(nn.Module):
        """(N, prod(shape)) -> (N, *shape). ``reshape(-1, ...)`` traces to a constant-shape
        onnx::Reshape, which auto_LiRPA 0.3 handles; ``nn.Unflatten`` traces to an ATen op it does not."""

        def __init__(self, shape: Shape) -> None:
            super().__init__()
            self.shape = tuple(int(s) for s in shape)

        def forward(self, x):
            return x.reshape((-1,) + self.shape)

    return Unflatten


def Unflatten(shape: Shape):  # noqa: N802 - behaves like a module class
    """A module reshaping flattened samples back to ``shape`` (see ``_unflatten_cls``)."""
    global _UNFLATTEN
    if _UNFLATTEN is None:
        _UNFLATTEN = _unflatten_cls()
    return _UNFLATTEN(shape)


_UNFLATTEN = None


@dataclass(frozen=True)
class Dense:
    """``y = weight @ x + bias`` on flattened vectors. ``weight``: (out, in), ``bias``: (out,)."""

    weight: np.ndarray
    bias: np.ndarray
    in_shape: Shape
    out_shape: Shape

    def __post_init__(self) -> None:
        if self.weight.shape != (_size(self.out_shape), _size(self.in_shape)):
            raise ShapeMismatchError(
                f"Dense weight {self.weight.shape} does not map {self.in_shape} to {self.out_shape}")

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(W, b)`` with ``W``: (out, in) acting on flattened inputs."""
        return self.weight, self.bias

    def sparse_matrix(self):
        """``(W, b)`` with ``W`` a float64 ``scipy.sparse.csr_matrix`` (zero weights dropped)."""
        import scipy.sparse as sp

        return sp.csr_matrix(np.asarray(self.weight, dtype=np.float64)), np.asarray(self.bias, dtype=np.float64)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``x``: (N, in) -> (N, out)."""
        return x @ self.weight.T + self.bias

    def graph_op(self):
        """This layer as a bound-graph operator with the (per-sample) shapes it reads and writes
        (:meth:`Network.to_graph`)."""
        from vnnx.ops.linear import Linear

        return Linear(self.weight, self.bias), (1, _size(self.in_shape)), (1, _size(self.out_shape))

    def torch_modules(self, dtype) -> list:
        """This layer as torch modules on flattened samples (:meth:`Network.to_torch`)."""
        import torch
        from torch import nn

        lin = nn.Linear(self.weight.shape[1], self.weight.shape[0], dtype=dtype)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(self.weight))
            lin.bias.copy_(torch.from_numpy(self.bias))
        return [lin]


@dataclass(frozen=True)
class Conv:
    """2-D convolution with zero padding, input (C, H, W) -> output (O, H', W'), per sample.

    ``weight``: (O, C/groups, kh, kw); ``padding``: (top, left, bottom, right).
    """

    weight: np.ndarray
    bias: np.ndarray
    in_shape: Shape
    out_shape: Shape
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """The convolution as a dense ``(W, b)`` on flattened (C, H, W) vectors (each entry is
        one kernel weight or 0; built from :meth:`sparse_matrix`)."""
        w, b = self.sparse_matrix()
        return w.toarray(), b

    def sparse_matrix(self):
        """The convolution as ``(W, b)`` with ``W`` a float64 ``scipy.sparse.csr_matrix`` on
        flattened (C, H, W) vectors, built from the kernel (one vectorised pass per kernel
        offset, never the dense matrix); zero weights and out-of-range (padding) taps dropped."""
        import scipy.sparse as sp

        c_in, h, w = self.in_shape
        c_out, oh, ow = self.out_shape
        cg, og = c_in // self.groups, c_out // self.groups
        kh, kw = self.weight.shape[2:]
        o, oi, oj = np.meshgrid(np.arange(c_out), np.arange(oh), np.arange(ow), indexing="ij")
        rows_all = (o * oh + oi) * ow + oj
        rows, cols, vals = [], [], []
        for ci in range(cg):
            chan = (o // og) * cg + ci
            for di in range(kh):
                r = oi * self.stride[0] - self.padding[0] + di * self.dilation[0]
                for dj in range(kw):
                    q = oj * self.stride[1] - self.padding[1] + dj * self.dilation[1]
                    val = np.broadcast_to(self.weight[:, ci, di, dj][:, None, None], o.shape)
                    keep = (r >= 0) & (r < h) & (q >= 0) & (q < w) & (val != 0)
                    rows.append(rows_all[keep])
                    cols.append(((chan * h + r) * w + q)[keep])
                    vals.append(val[keep].astype(np.float64))
        mat = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                            shape=(_size(self.out_shape), _size(self.in_shape)))
        return mat, np.repeat(np.asarray(self.bias, dtype=np.float64), oh * ow)

    def apply(self, x: np.ndarray) -> np.ndarray:
        n = x.shape[0]
        out = _conv_numpy(x.reshape((n,) + tuple(self.in_shape)), self.weight, self.bias, self)
        return out.reshape(n, -1)

    def graph_op(self):
        from vnnx.ops.conv import Conv as ConvOp

        op = ConvOp(self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return op, (1,) + tuple(self.in_shape), (1,) + tuple(self.out_shape)

    def torch_modules(self, dtype) -> list:
        import torch
        from torch import nn

        pt, pl, pb, pr = self.padding
        conv = nn.Conv2d(self.in_shape[0], self.weight.shape[0], self.weight.shape[2:],
                         stride=self.stride, dilation=self.dilation, groups=self.groups,
                         padding=(pt, pl) if (pt, pl) == (pb, pr) else 0, dtype=dtype)
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(self.weight))
            conv.bias.copy_(torch.from_numpy(self.bias))
        mods = [Unflatten(self.in_shape)]
        if (pt, pl) != (pb, pr):
            mods.append(nn.ZeroPad2d((pl, pr, pt, pb)))
        return mods + [conv, nn.Flatten()]


def _conv_numpy(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, conv: Conv) -> np.ndarray:
    import torch

    t = torch.nn.functional.pad(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)),
                                (conv.padding[1], conv.padding[3], conv.padding[0], conv.padding[2]))
    y = torch.nn.functional.conv2d(t, torch.from_numpy(weight.astype(np.float64)),
                                   torch.from_numpy(bias.astype(np.float64)),
                                   stride=conv.stride, dilation=conv.dilation, groups=conv.groups)
    return y.numpy()


@dataclass(frozen=True)
class Relu:
    shape: Shape

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, 0.0)

    def graph_op(self):
        """Elementwise: the operator keeps whatever shape it is given (None, None)."""
        from vnnx.ops.relu import Relu as Op

        return Op(), None, None

    def torch_modules(self, dtype) -> list:
        from torch import nn

        return [nn.ReLU()]


@dataclass(frozen=True)
class Sigmoid:
    shape: Shape

    def apply(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-x))

    def graph_op(self):
        from vnnx.ops.sigmoid import Sigmoid as Op

        return Op(), None, None

    def torch_modules(self, dtype) -> list:
        from torch import nn

        return [nn.Sigmoid()]


@dataclass(frozen=True)
class Tanh:
    shape: Shape

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x)

    def graph_op(self):
        from vnnx.ops.tanh import Tanh as Op

        return Op(), None, None

    def torch_modules(self, dtype) -> list:
        from torch import nn

        return [nn.Tanh()]


@dataclass(frozen=True)
class MaxPool:
    """2-D max pooling on (C, H, W) with −∞ padding (ONNX semantics).

    ``padding``: (top, left, bottom, right). Padding cells never win a max, so each output is
    the max over the window's in-range cells only (:meth:`windows`).
    """

    in_shape: Shape
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    ceil_mode: bool = False
    out_shape: Shape = field(default=())

    def __post_init__(self) -> None:
        if len(self.in_shape) != 3:
            raise UnsupportedOpError(f"MaxPool expects a (C, H, W) input, got {self.in_shape}")
        c, h, w = self.in_shape
        oh = _pool_out(h, self.kernel[0], self.stride[0], self.padding[0], self.padding[2], self.ceil_mode)
        ow = _pool_out(w, self.kernel[1], self.stride[1], self.padding[1], self.padding[3], self.ceil_mode)
        if oh <= 0 or ow <= 0:
            raise ShapeMismatchError(f"MaxPool window {self.kernel} does not fit input {self.in_shape}")
        object.__setattr__(self, "out_shape", (c, oh, ow))

    def windows(self) -> list[np.ndarray]:
        """For each output (flattened C order), the flattened input indices in its window."""
        c, h, w = self.in_shape
        _, oh, ow = self.out_shape
        out = []
        for ch, i, j in itertools.product(range(c), range(oh), range(ow)):
            r0 = i * self.stride[0] - self.padding[0]
            c0 = j * self.stride[1] - self.padding[1]
            rows = [r for r in range(r0, r0 + self.kernel[0]) if 0 <= r < h]
            cols = [q for q in range(c0, c0 + self.kernel[1]) if 0 <= q < w]
            out.append(np.array([ch * h * w + r * w + q for r in rows for q in cols], dtype=np.int64))
        return out

    def window_table(self) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`windows` as arrays: ``index`` (P, K) int64 flat input indices, K = kh·kw slots
        (0 in slots that fall in the padding), and ``valid`` (P, K) bool, False there. Raises
        :class:`UnsupportedOpError` when a window is made of padding only."""
        cells = self.windows()
        k = self.kernel[0] * self.kernel[1]
        index = np.zeros((len(cells), k), dtype=np.int64)
        valid = np.zeros((len(cells), k), dtype=bool)
        for p, c in enumerate(cells):
            if len(c) == 0:
                raise UnsupportedOpError(f"MaxPool {self.kernel}/{self.stride} on {self.in_shape} has a window "
                                         f"made of padding only")
            index[p, : len(c)] = c
            valid[p, : len(c)] = True
        return index, valid

    def apply(self, x: np.ndarray) -> np.ndarray:
        return np.stack([x[:, idx].max(axis=1) for idx in self.windows()], axis=1)

    def graph_op(self):
        from vnnx.ops.maxpool import MaxPool as PoolOp

        op = PoolOp(self.kernel, self.stride, self.padding, self.ceil_mode)
        return op, (1,) + tuple(self.in_shape), (1,) + tuple(self.out_shape)

    def torch_modules(self, dtype) -> list:
        from torch import nn

        return [Unflatten(self.in_shape)] + _torch_maxpool(self) + [nn.Flatten()]


def _pool_out(n: int, k: int, s: int, p0: int, p1: int, ceil_mode: bool) -> int:
    span = n + p0 + p1 - k
    if span < 0:
        return 0
    out = (-(-span // s) if ceil_mode else span // s) + 1
    # ONNX/torch rule: with ceil_mode the last window must start inside the input or left pad.
    if ceil_mode and (out - 1) * s >= n + p0:
        out -= 1
    return out


def _torch_maxpool(layer: "MaxPool") -> list:
    """torch modules computing ``layer`` exactly on (N, C, H, W).

    Plain ``MaxPool2d`` when there is no padding and no ceil_mode. Otherwise the ONNX windows
    are made explicit: −∞ padding that covers exactly the last window (top/left as given,
    bottom/right as far as the last window reaches), then an unpadded floor-mode pool. torch's
    own ceil rule counts padding as input and can add a window ONNX does not have. That pool is
    one module (:class:`vnnx.torch_pool.PaddedMaxPool2d`) that traces to ONE ``onnx::MaxPool``
    with ``pads`` (``ceil_mode`` folded into them): auto_LiRPA 0.3 cannot bound a separate −∞
    ``Pad`` node.
    """
    from torch import nn

    from vnnx.torch_pool import PaddedMaxPool2d

    if not layer.ceil_mode and not any(layer.padding):
        return [nn.MaxPool2d(layer.kernel, layer.stride)]
    return [PaddedMaxPool2d(layer.kernel, layer.stride, layer.padding, layer.ceil_mode)]


Layer = Union[Dense, Conv, Relu, MaxPool, Sigmoid, Tanh]
AFFINE = (Dense, Conv)
PIECEWISE_LINEAR = (Dense, Conv, Relu, MaxPool)


@dataclass
class Network:
    """A chain of layers. ``input_shape``/``output_shape`` are the ONNX tensor shapes (batch
    dimension included when the file has one); every layer works on flattened samples."""

    input_shape: Shape
    output_shape: Shape
    layers: list[Layer]

    @property
    def n_inputs(self) -> int:
        return _size(self.input_shape)

    @property
    def n_outputs(self) -> int:
        return _size(self.output_shape)

    @property
    def is_piecewise_linear(self) -> bool:
        return all(isinstance(layer, PIECEWISE_LINEAR) for layer in self.layers)

    def forward(self, x: np.ndarray, return_all: bool = False):
        """Evaluate in float64. ``x``: (N, n_inputs) (or any shape with N leading samples).

        Returns the (N, n_outputs) outputs, or with ``return_all`` the list of every layer's
        output (index k is the output of ``layers[k]``).
        """
        h = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        if h.shape[1] != self.n_inputs:
            raise ShapeMismatchError(f"network expects {self.n_inputs} inputs per sample, got {h.shape[1]}")
        outs = []
        for layer in self.layers:
            h = layer.apply(h)
            outs.append(h)
        return outs if return_all else h

    def to_graph(self, label: str = "network"):
        """The same function as a bound graph (:mod:`vnnx.graph`), for the engine
        (:class:`vnnx.engine.GraphEngine`) and the MILP: one operator per layer, with Reshapes
        where a layer reads another shape than the one before it (a Dense reads ``(1, n)``, a
        Conv or MaxPool ``(1, C, H, W)``). ``graph.layer_nodes[k]`` is the node holding the
        output of ``layers[k]``, so bounds of graph nodes map back to layers."""
        from vnnx.graph import Graph, Node
        from vnnx.ops.reshape import Reshape

        nodes = [Node("input", None, (), tuple(self.input_shape))]
        self_nodes = []

        def add(name, op, shape, in_shape):
            op.in_shapes, op.out_shape = (tuple(in_shape),), tuple(shape)
            nodes.append(Node(name, op, (len(nodes) - 1,), tuple(shape)))

        for k, layer in enumerate(self.layers):
            op, reads, writes = layer.graph_op()
            shape = nodes[-1].shape
            if reads is not None and tuple(reads) != shape:
                add(f"layer{k}/reshape", Reshape(reads), reads, shape)
                shape = tuple(reads)
            add(f"layer{k}", op, shape if writes is None else writes, shape)
            self_nodes.append(len(nodes) - 1)
        if nodes[-1].shape != tuple(self.output_shape):
            add("output/reshape", Reshape(self.output_shape), self.output_shape, nodes[-1].shape)
        graph = Graph(nodes, len(nodes) - 1, label)
        graph.layer_nodes = self_nodes
        return graph

    def pre_activation_indices(self) -> list[int]:
        """Indices k of layers whose output feeds a ReLU (``layers[k + 1]`` is a ReLU)."""
        return [k for k in range(len(self.layers) - 1) if isinstance(self.layers[k + 1], Relu)]

    def to_torch(self, dtype=None):
        """A canonical ``torch.nn.Sequential`` on (N, n_inputs) flattened inputs.

        This is the module handed to auto_LiRPA: Linear, Conv2d, ReLU, MaxPool2d, Sigmoid, Tanh,
        Flatten and a reshape only.
        """
        import torch
        from torch import nn

        # Parameters are created in ``dtype`` before the float64 weights are copied in, so a
        # float64 module carries the exact weights (creating in float32 first would round them).
        dtype = dtype or torch.float32
        mods = [m for layer in self.layers for m in layer.torch_modules(dtype)]
        return nn.Sequential(*mods).to(dtype)

    def dense_layers(self) -> Sequence[Layer]:
        return [layer for layer in self.layers if isinstance(layer, AFFINE)]


class MatrixCache:
    """The float64 ``(W, b)`` of Dense/Conv layers, dense or sparse, kept across calls on
    networks that share layer objects (a Conv's matrices are costly to build; a pass that
    rebuilds a network many times, e.g. the substitute plugin's pruning, keeps the untouched
    layers' matrices). An entry holds its layer, so that the id it is filed under stays its own.

    Example::

        cache = MatrixCache()
        W, b = cache.sparse(net.layers[0])   # built once, then served from the cache
    """

    def __init__(self) -> None:
        self._entries: dict[tuple[int, bool], tuple] = {}

    def _get(self, layer, sparse: bool):
        hit = self._entries.get((id(layer), sparse))
        if hit is not None and hit[0] is layer:
            return hit[1], hit[2]
        return self.put(layer, *_build_matrix(layer, sparse), sparse)

    def dense(self, layer) -> tuple[np.ndarray, np.ndarray]:
        """``(W, b)`` of ``layer``, W a float64 ndarray."""
        return self._get(layer, False)

    def sparse(self, layer):
        """``(W, b)`` of ``layer``, W a float64 ``scipy.sparse.csr_matrix``."""
        return self._get(layer, True)

    def put(self, layer, w, b: np.ndarray, sparse: bool = True):
        """File ``(w, b)`` (already known, e.g. from the folding that made ``layer``) under
        ``layer``; returns them."""
        self._entries[(id(layer), sparse)] = (layer, w, b)
        return w, b


def _build_matrix(layer, sparse: bool):
    if sparse:
        import scipy.sparse as sp

        w, b = layer.sparse_matrix()
        w = sp.csr_matrix(w, dtype=np.float64)
    else:
        w, b = layer.matrix()
        w = np.asarray(w, dtype=np.float64)
    return w, np.asarray(b, dtype=np.float64)


def layer_matrix(layer, cache: "MatrixCache | None" = None, sparse: bool = False):
    """``(W, b)`` of a Dense/Conv layer in float64, dense or CSR, through ``cache`` if given."""
    return cache._get(layer, sparse) if cache is not None else _build_matrix(layer, sparse)
