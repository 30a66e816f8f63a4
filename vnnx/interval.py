"""Interval bound propagation (IBP) over the plain network view, in float64.

Each layer maps a box ``[lower, upper]`` of its input to a box containing every output it can
produce. Affine layers split the weight into its positive and negative parts
(``W⁺ l + W⁻ u + b``, Gowal et al. 2018, eq. 6); monotone activations map end points; MaxPool
takes the max of lowers and the max of uppers over each window.

The boxes are sound for the float64 network: affine results are widened by a bound on float64
rounding (Higham's γₙ for dot products), activations by a few ulps.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from vnnx.errors import ShapeMismatchError, UnsupportedOpError, VnnxError
from vnnx.network import Conv, Dense, MaxPool, Network, Relu, Sigmoid, Tanh

_EPS = np.finfo(np.float64).eps
_ACTIVATION_SLACK = 8 * _EPS   # exp/tanh are accurate to a few ulps; values are at most 1 in size

Bounds = tuple[np.ndarray, np.ndarray]


def interval_bounds(network: Network, x_lower: np.ndarray, x_upper: np.ndarray) -> list[Bounds]:
    """Sound float64 interval bounds of every layer output.

    ``x_lower``, ``x_upper``: (n_inputs,) input box (flattened C order, model-input space).
    Returns a list with one ``(lower, upper)`` pair per layer; entry k bounds the output of
    ``network.layers[k]`` (flattened, float64).

    Example::

        bounds = interval_bounds(net, x - eps, x + eps)
        out_lower, out_upper = bounds[-1]
    """
    lower, upper = check_box(network, x_lower, x_upper)
    out: list[Bounds] = []
    for k, layer in enumerate(network.layers):
        lower, upper = propagate(layer, lower, upper, name=f"layer {k}")
        out.append((lower, upper))
    return out


def check_box(network: Network, x_lower: np.ndarray, x_upper: np.ndarray) -> Bounds:
    """Validate an input box for ``network``; return it flattened as float64 arrays."""
    lower = np.asarray(x_lower, dtype=np.float64).ravel()
    upper = np.asarray(x_upper, dtype=np.float64).ravel()
    if lower.size != network.n_inputs or upper.size != network.n_inputs:
        raise ShapeMismatchError(f"input box has {lower.size}/{upper.size} entries, network expects {network.n_inputs}")
    if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
        raise VnnxError("input box has non-finite bounds")
    bad = np.flatnonzero(lower > upper)
    if bad.size:
        i = int(bad[0])
        raise VnnxError(f"empty input box: lower[{i}] = {lower[i]} > upper[{i}] = {upper[i]}")
    return lower, upper


def propagate(layer, lower: np.ndarray, upper: np.ndarray, name: str = "layer") -> Bounds:
    """Bounds of ``layer``'s output for inputs in ``[lower, upper]`` (flattened, float64)."""
    if isinstance(layer, (Dense, Conv)):
        return _affine(layer, lower, upper)
    if isinstance(layer, Relu):
        return np.maximum(lower, 0.0), np.maximum(upper, 0.0)
    if isinstance(layer, MaxPool):
        idx = window_matrix(layer)
        # Padded slots point at an appended -inf entry, which never wins a max.
        lo = np.append(lower, -np.inf)[idx].max(axis=1)
        up = np.append(upper, -np.inf)[idx].max(axis=1)
        return lo, up
    if isinstance(layer, Sigmoid):
        with np.errstate(over="ignore"):
            lo = 1.0 / (1.0 + np.exp(-lower)) - _ACTIVATION_SLACK
            up = 1.0 / (1.0 + np.exp(-upper)) + _ACTIVATION_SLACK
        return np.clip(lo, 0.0, 1.0), np.clip(up, 0.0, 1.0)
    if isinstance(layer, Tanh):
        return (np.clip(np.tanh(lower) - _ACTIVATION_SLACK, -1.0, 1.0),
                np.clip(np.tanh(upper) + _ACTIVATION_SLACK, -1.0, 1.0))
    raise UnsupportedOpError(f"{name}: no interval rule for {type(layer).__name__}")


def affine_interval(w, b: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> Bounds:
    """Sound float64 bounds of ``w @ h + b`` for ``h`` in ``[lower, upper]``; ``w`` a dense
    (out, in) array or a scipy sparse matrix (whose fan-in is the longest row's non-zeros)."""
    if hasattr(w, "tocsr"):
        import scipy.sparse as sp

        w = w.tocsr()
        # The parts share w's pattern (explicit zeros are harmless in a product, and cheaper
        # than the pattern changes of w.maximum(0)).
        w_pos, w_neg, w_abs = (sp.csr_matrix((f(w.data), w.indices, w.indptr), shape=w.shape)
                               for f in (lambda d: np.maximum(d, 0.0), lambda d: np.minimum(d, 0.0), np.abs))
        fan_in = int(np.diff(w.indptr).max()) if w.nnz else 0
    else:
        w_pos, w_neg, w_abs = np.maximum(w, 0.0), np.minimum(w, 0.0), np.abs(w)
        fan_in = w.shape[1]
    mag = np.maximum(np.abs(lower), np.abs(upper))
    lo = w_pos @ lower + w_neg @ upper + b
    up = w_pos @ upper + w_neg @ lower + b
    return _pad(lo, up, fan_in, w_abs @ mag + np.abs(b))


def _pad(lo: np.ndarray, up: np.ndarray, fan_in: int, scale: np.ndarray) -> Bounds:
    # Rounding of two dot products plus the bias: |error| <= γ_{2n+2} (|W| |x| + |b|).
    err = (2 * fan_in + 4) * _EPS * scale
    return lo - err, up + err


def _affine(layer, lower: np.ndarray, upper: np.ndarray) -> Bounds:
    if isinstance(layer, Dense):
        return affine_interval(layer.weight, layer.bias, lower, upper)
    w = layer.weight
    zero = np.zeros_like(layer.bias)
    pos = dataclasses.replace(layer, weight=np.maximum(w, 0.0), bias=zero)
    neg = dataclasses.replace(layer, weight=np.minimum(w, 0.0), bias=zero)
    absw = dataclasses.replace(layer, weight=np.abs(w), bias=zero)
    mag = np.maximum(np.abs(lower), np.abs(upper))
    rows = np.stack([lower, upper, mag])
    p, n, a = pos.apply(rows), neg.apply(rows), absw.apply(rows[2:3])[0]
    bias = np.repeat(layer.bias, int(np.prod(layer.out_shape[1:])))
    return _pad(p[0] + n[1] + bias, p[1] + n[0] + bias, int(np.prod(w.shape[1:])), a + np.abs(bias))


_WINDOWS: dict[tuple, np.ndarray] = {}


def window_matrix(layer: MaxPool) -> np.ndarray:
    """(n_out, k_max) input indices of each MaxPool window; short windows (at padded borders)
    are filled with ``n_in``, an index one past the input. Cached per pooling geometry."""
    key = (tuple(layer.in_shape), tuple(layer.kernel), tuple(layer.stride), tuple(layer.padding), layer.ceil_mode)
    if key not in _WINDOWS:
        wins = layer.windows()
        n_in = int(np.prod(layer.in_shape))
        k_max = max(len(w) for w in wins)
        idx = np.full((len(wins), k_max), n_in, dtype=np.int64)
        for r, w in enumerate(wins):
            idx[r, :len(w)] = w
        _WINDOWS[key] = idx
    return _WINDOWS[key]
