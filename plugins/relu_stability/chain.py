"""A network as a chain of *steps* that interval bounds can walk: affine, ReLU, MaxPool.

Both the training side (a ``torch.nn.Sequential`` from :mod:`vnnx.architectures`, whose
parameters must stay differentiable) and the analysis side (a plain
:class:`vnnx.network.Network`, float64) become the same :class:`Chain`, so naive and improved
interval arithmetic (:mod:`.bounds`) exist once. Every step maps flattened samples
``(B, n_in) -> (B, n_out)``; an affine step is a maximal run of Linear / Conv2d / reshape /
zero-pad modules between two activations.

:func:`sequential_to_network` turns the same kind of Sequential into a plain
:class:`~vnnx.network.Network`, which is what the passes (:mod:`.passes`) and the ONNX export
work on.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vnnx.errors import UnsupportedOpError
from vnnx.network import Conv, Dense, MaxPool, Network, Relu

Shape = tuple[int, ...]


# ----------------------------------------------------------------------------- affine ops
@dataclass
class _Reshape:
    shape: Shape

    def apply(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        return x.reshape((x.shape[0],) + self.shape)

    apply_abs = apply


@dataclass
class _Linear:
    weight: torch.Tensor          # (out, in)
    bias: Optional[torch.Tensor]  # (out,)

    def apply(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias if bias else None)

    def apply_abs(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.abs())


@dataclass
class _Conv:
    weight: torch.Tensor          # (O, C/groups, kh, kw)
    bias: Optional[torch.Tensor]  # (O,)
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]   # top, left, bottom, right (zeros)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    def _conv(self, x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor]) -> torch.Tensor:
        pt, pl, pb, pr = self.padding
        if (pt, pl) == (pb, pr):
            return F.conv2d(x, w, b, self.stride, (pt, pl), self.dilation, self.groups)
        return F.conv2d(F.pad(x, (pl, pr, pt, pb)), w, b, self.stride, 0, self.dilation, self.groups)

    def apply(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        return self._conv(x, self.weight, self.bias if bias else None)

    def apply_abs(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv(x, self.weight.abs(), None)


@dataclass
class _ZeroPad:
    pads: tuple[int, int, int, int]      # left, right, top, bottom (F.pad order)

    def apply(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        return F.pad(x, self.pads)

    apply_abs = apply


_AffineOp = Union[_Reshape, _Linear, _Conv, _ZeroPad]


# ---------------------------------------------------------------------------------- steps
@dataclass
class AffineStep:
    """``y = M x + c`` on flattened samples, as a run of ops (so convolutions stay convolutions).

    ``in_shape``/``out_shape``: per-sample tensor shapes around the run.
    """

    ops: list
    in_shape: Shape
    out_shape: Shape

    @property
    def n_in(self) -> int:
        return math.prod(self.in_shape)

    @property
    def n_out(self) -> int:
        return math.prod(self.out_shape)

    def _run(self, x: torch.Tensor, bias: bool, absolute: bool) -> torch.Tensor:
        h = x.reshape((x.shape[0],) + tuple(self.in_shape))
        for op in self.ops:
            h = op.apply_abs(h) if absolute else op.apply(h, bias)
        return h.reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, n_in) -> (B, n_out), bias included."""
        return self._run(x, True, False)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        """``M x`` without the bias."""
        return self._run(x, False, False)

    def interval(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Naive interval arithmetic: centre through ``M``, radius through ``|M|``."""
        mid, rad = (hi + lo) / 2, (hi - lo) / 2
        mid = self.forward(mid)
        rad = self._run(rad, False, True)
        return mid - rad, mid + rad

    def dense(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M, c)`` with ``M``: (n_out, n_in), ``c``: (n_out,); differentiable in the weights."""
        linears = [op for op in self.ops if isinstance(op, _Linear)]
        if len(linears) == 1 and all(isinstance(op, (_Linear, _Reshape)) for op in self.ops):
            lin = linears[0]
            bias = lin.bias if lin.bias is not None else torch.zeros_like(lin.weight[:, 0])
            return lin.weight, bias
        ref = self._reference_tensor()
        eye = torch.eye(self.n_in, dtype=ref.dtype, device=ref.device)
        matrix = self.linear(eye).T
        bias = self.forward(torch.zeros(1, self.n_in, dtype=ref.dtype, device=ref.device))[0]
        return matrix, bias

    def _reference_tensor(self) -> torch.Tensor:
        for op in self.ops:
            if isinstance(op, (_Linear, _Conv)):
                return op.weight
        return torch.zeros(())


@dataclass
class ReluStep:
    n: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def interval(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.relu(lo), torch.relu(hi)


@dataclass
class PoolStep:
    """Max pooling with −∞ padding, through the window lists of :class:`vnnx.network.MaxPool`."""

    pool: MaxPool
    index: torch.Tensor = field(init=False)   # (n_out, max window), padded with n_in (a −∞ slot)

    def __post_init__(self) -> None:
        windows = self.pool.windows()
        n_in = math.prod(self.pool.in_shape)
        width = max(len(w) for w in windows)
        idx = np.full((len(windows), width), n_in, dtype=np.int64)
        for i, w in enumerate(windows):
            idx[i, :len(w)] = w
        self.index = torch.from_numpy(idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = torch.full((x.shape[0], 1), float("-inf"), dtype=x.dtype, device=x.device)
        return torch.cat([x, pad], dim=1)[:, self.index].amax(dim=2)

    def interval(self, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # max is monotone in every argument.
        return self.forward(lo), self.forward(hi)


Step = Union[AffineStep, ReluStep, PoolStep]


@dataclass
class Chain:
    """Steps in order; ``input_shape`` is the per-sample input shape (e.g. ``(1, 28, 28)``)."""

    steps: list
    input_shape: Shape

    @property
    def n_inputs(self) -> int:
        return math.prod(self.input_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.reshape(x.shape[0], -1)
        for step in self.steps:
            h = step.forward(h)
        return h

    def relu_indices(self) -> list[int]:
        """Indices of the ReLU steps, in order."""
        return [i for i, s in enumerate(self.steps) if isinstance(s, ReluStep)]


# ------------------------------------------------------------------------- from Sequential
def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _flat_modules(model: nn.Module) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        out: list[nn.Module] = []
        for m in model:
            out += _flat_modules(m)
        return out
    return [model]


def _pads_of(module: nn.Module) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` of a ZeroPad2d / ConstantPad2d."""
    p = module.padding
    return (p, p, p, p) if isinstance(p, int) else tuple(int(v) for v in p)


def _conv_op(m: nn.Conv2d, where: str) -> _Conv:
    if isinstance(m.padding, str) or m.padding_mode != "zeros":
        raise UnsupportedOpError(f"{where}: Conv2d needs numeric zero padding (got {m.padding!r}, {m.padding_mode})")
    ph, pw = _pair(m.padding)
    return _Conv(m.weight, m.bias, _pair(m.stride), (ph, pw, ph, pw), _pair(m.dilation), m.groups)


def _pool_layer(m: nn.MaxPool2d, in_shape: Shape, extra_pad: tuple[int, int, int, int], where: str) -> MaxPool:
    if _pair(m.dilation) != (1, 1) or m.return_indices:
        raise UnsupportedOpError(f"{where}: MaxPool2d with dilation or return_indices is not supported")
    if len(in_shape) != 3:
        raise UnsupportedOpError(f"{where}: MaxPool2d expects a (C, H, W) input, got {in_shape}")
    kh, kw = _pair(m.kernel_size)
    sh, sw = _pair(m.stride if m.stride is not None else m.kernel_size)
    ph, pw = _pair(m.padding)
    left, right, top, bottom = extra_pad
    shape = (in_shape[0], in_shape[1] - top - bottom, in_shape[2] - left - right)
    return MaxPool(shape, (kh, kw), (sh, sw), (ph + top, pw + left, ph + bottom, pw + right), bool(m.ceil_mode))


def chain_from_sequential(model: nn.Module, input_shape: Sequence[int]) -> Chain:
    """The chain of a Sequential of Flatten / Unflatten / Linear / Conv2d / ZeroPad2d /
    ReLU / MaxPool2d (nested Sequentials, Identity and Dropout allowed; Dropout counts as the
    identity, i.e. bounds hold for the model in eval mode). Parameters are shared, not copied.

    ``input_shape``: per-sample shape, e.g. ``(1, 28, 28)``. Raises UnsupportedOpError naming
    the module index for anything else.
    """
    modules = _flat_modules(model)
    shape: Shape = tuple(int(d) for d in input_shape)
    steps: list = []
    ops: list = []
    ops_in: Shape = shape
    ref = next(iter(model.parameters()), torch.zeros(()))

    def flush(cur: Shape) -> None:
        nonlocal ops, ops_in
        # A run of pure reshapes needs no step: steps act on flattened (C-order) samples.
        if any(not isinstance(op, _Reshape) for op in ops):
            steps.append(AffineStep(ops, ops_in, cur))
        ops = []

    pending_pool_pad: Optional[tuple[int, int, int, int]] = None
    for i, m in enumerate(modules):
        where = f"module {i} ({type(m).__name__})"
        with torch.no_grad():
            new_shape = tuple(m(torch.zeros((1,) + shape, dtype=ref.dtype)).shape[1:])
        if pending_pool_pad is not None and not isinstance(m, nn.MaxPool2d):
            raise UnsupportedOpError(f"{where}: a −∞ ConstantPad2d must be followed by MaxPool2d")
        if isinstance(m, (nn.Identity, nn.Dropout)):
            continue
        if isinstance(m, (nn.Flatten, nn.Unflatten)):
            if not ops:
                ops_in = shape
            ops.append(_Reshape(new_shape))
        elif isinstance(m, nn.Linear):
            if len(shape) != 1:
                raise UnsupportedOpError(f"{where}: Linear on a {shape} tensor acts on its last axis; "
                                         "flatten first")
            if not ops:
                ops_in = shape
            ops.append(_Linear(m.weight, m.bias))
        elif isinstance(m, nn.Conv2d):
            if not ops:
                ops_in = shape
            ops.append(_conv_op(m, where))
        elif isinstance(m, nn.ConstantPad2d) and math.isinf(m.value) and m.value < 0:
            flush(shape)
            pending_pool_pad = _pads_of(m)
        elif isinstance(m, nn.ZeroPad2d) or (isinstance(m, nn.ConstantPad2d) and m.value == 0):
            if not ops:
                ops_in = shape
            ops.append(_ZeroPad(_pads_of(m)))
        elif isinstance(m, nn.ReLU):
            flush(shape)
            steps.append(ReluStep(math.prod(shape)))
        elif isinstance(m, nn.MaxPool2d):
            flush(shape)
            steps.append(PoolStep(_pool_layer(m, shape, pending_pool_pad or (0, 0, 0, 0), where)))
            pending_pool_pad = None
        else:
            raise UnsupportedOpError(f"{where}: not supported by ReLU-stability bounds "
                                     "(Linear, Conv2d, ReLU, MaxPool2d, Flatten, Unflatten, ZeroPad2d only)")
        shape = new_shape
    flush(shape)
    return Chain(steps, tuple(int(d) for d in input_shape))


# --------------------------------------------------------------------------- from Network
def chain_from_network(network: Network, dtype: torch.dtype = torch.float64) -> Chain:
    """The chain of a plain piecewise-linear network; step ``k`` is ``network.layers[k]``."""
    steps: list = []
    for k, layer in enumerate(network.layers):
        if isinstance(layer, Dense):
            op = _Linear(torch.as_tensor(layer.weight, dtype=dtype), torch.as_tensor(layer.bias, dtype=dtype))
            steps.append(AffineStep([op], (math.prod(layer.in_shape),), (math.prod(layer.out_shape),)))
        elif isinstance(layer, Conv):
            op = _Conv(torch.as_tensor(layer.weight, dtype=dtype), torch.as_tensor(layer.bias, dtype=dtype),
                       tuple(layer.stride), tuple(layer.padding), tuple(layer.dilation), layer.groups)
            steps.append(AffineStep([op], tuple(layer.in_shape), tuple(layer.out_shape)))
        elif isinstance(layer, Relu):
            steps.append(ReluStep(math.prod(layer.shape)))
        elif isinstance(layer, MaxPool):
            steps.append(PoolStep(layer))
        else:
            raise UnsupportedOpError(f"layer {k} ({type(layer).__name__}): ReLU-stability bounds handle "
                                     "Dense, Conv, Relu and MaxPool layers only")
    shape = tuple(network.input_shape)
    if len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return Chain(steps, shape)


# ----------------------------------------------------------------------- to a plain Network
def sequential_to_network(model: nn.Module, input_shape: Sequence[int],
                          batch_dim: bool = True) -> Network:
    """A plain float64 :class:`Network` with the same function as the Sequential ``model``.

    ``input_shape``: per-sample shape, e.g. ``(1, 28, 28)``. The network's ONNX-style
    ``input_shape`` gets a leading batch dimension of 1 when ``batch_dim``. Conv2d stays
    :class:`~vnnx.network.Conv` (zero pads before it folded in), Linear becomes
    :class:`~vnnx.network.Dense`; reshapes vanish because layers act on flattened samples.
    """
    modules = _flat_modules(model)
    shape: Shape = tuple(int(d) for d in input_shape)
    layers: list = []
    zero_pad = (0, 0, 0, 0)       # pending ZeroPad2d (left, right, top, bottom)
    pool_pad: Optional[tuple[int, int, int, int]] = None
    ref = next(iter(model.parameters()), torch.zeros(()))

    def arr(t: Optional[torch.Tensor], n: int) -> np.ndarray:
        return np.zeros(n) if t is None else t.detach().cpu().double().numpy().copy()

    for i, m in enumerate(modules):
        where = f"module {i} ({type(m).__name__})"
        with torch.no_grad():
            new_shape = tuple(m(torch.zeros((1,) + shape, dtype=ref.dtype)).shape[1:])
        if zero_pad != (0, 0, 0, 0) and not isinstance(m, nn.Conv2d):
            raise UnsupportedOpError(f"{where}: a zero pad must be followed by Conv2d")
        if isinstance(m, (nn.Identity, nn.Dropout, nn.Flatten, nn.Unflatten)):
            pass
        elif isinstance(m, nn.Linear):
            if len(shape) != 1:
                raise UnsupportedOpError(f"{where}: Linear on a {shape} tensor; flatten first")
            layers.append(Dense(arr(m.weight, 0), arr(m.bias, m.out_features), shape, new_shape))
        elif isinstance(m, nn.Conv2d):
            op = _conv_op(m, where)
            left, right, top, bottom = zero_pad
            pt, pl, pb, pr = op.padding
            in_shape = (shape[0], shape[1] - top - bottom, shape[2] - left - right)
            layers.append(Conv(arr(m.weight, 0), arr(m.bias, m.out_channels), in_shape, new_shape,
                               op.stride, (pt + top, pl + left, pb + bottom, pr + right), op.dilation, op.groups))
            zero_pad = (0, 0, 0, 0)
        elif isinstance(m, nn.ConstantPad2d) and math.isinf(m.value) and m.value < 0:
            pool_pad = _pads_of(m)
        elif isinstance(m, nn.ZeroPad2d) or (isinstance(m, nn.ConstantPad2d) and m.value == 0):
            zero_pad = tuple(a + b for a, b in zip(zero_pad, _pads_of(m)))
        elif isinstance(m, nn.ReLU):
            layers.append(Relu(shape))
        elif isinstance(m, nn.MaxPool2d):
            layers.append(_pool_layer(m, shape, pool_pad or (0, 0, 0, 0), where))
            pool_pad = None
        else:
            raise UnsupportedOpError(f"{where}: cannot be written as a plain network layer")
        shape = new_shape
    in_shape = tuple(int(d) for d in input_shape)
    return Network(((1,) + in_shape) if batch_dim else in_shape,
                   ((1,) + shape) if batch_dim else shape, layers)
