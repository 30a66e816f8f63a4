"""Build a substitute network from per-neuron replacements of ReLUs, folding the linear pieces
into the adjacent affine layers.

A replacement turns ReLU neuron ``i`` of the layer fed by ``network.layers[k]`` into the affine
map ``h_i = slope_i * z_i + intercept_i``. The substitute stays a plain chain
(:class:`vnnx.network.Network`), so it exports to ONNX and encodes as a MILP unchanged:

* slope 0 (``con``, inactive ``act``, flat ``lin``): the neuron is deleted; ``intercept_i``
  times its outgoing weights moves into the next layer's bias;
* every ReLU of a layer replaced: the layer is linear, and the affine layers on both sides of it
  merge into one (one layer fewer);
* otherwise (slope != 0 in a layer that keeps some ReLUs): the chain has no skip connections, so
  the neuron passes through its ReLU shifted by a sound lower bound ``L_i`` of ``z_i`` over the
  whole input domain: ``relu(z_i - L_i) = z_i - L_i`` there, and the next layer gets
  ``slope_i * (z_i - L_i) + slope_i * L_i + intercept_i``. That ReLU is provably stable (no
  binary in the MILP, no split in branch and bound) but still a neuron of the file; it is
  counted as ``linear_passthrough``, not as a kept ReLU. Exact on the domain box only.

Candidates are ReLU layers between two affine (Dense/Conv) layers; ReLUs feeding a MaxPool or
ending the network are never replaced. Affine layers touched by a change become Dense.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from vnnx.errors import ConfigError
from vnnx.network import AFFINE, Dense, MatrixCache, Network, Relu

PASSTHROUGH_MARGIN = 1e-3
_EPS = np.finfo(np.float64).eps


@dataclass
class Replacement:
    """Per-neuron replacement of one ReLU layer (fed by original layer ``k``): ``removed`` (n,)
    bool, ``slope``/``intercept`` (n,) used where removed."""

    removed: np.ndarray
    slope: np.ndarray
    intercept: np.ndarray


@dataclass
class FoldInfo:
    """What :func:`build_substitute` did. ``neuron_map[new_k] = (orig_k, orig_index (m,),
    nonlinear (m,) bool)`` for each ReLU layer of the substitute fed by its layer ``new_k``."""

    relus_total: int = 0
    relus_kept: int = 0
    deleted: int = 0
    linear_passthrough: int = 0
    layers_merged: int = 0
    neuron_map: dict = field(default_factory=dict)


def candidate_layers(network: Network) -> list[int]:
    """Indices k of affine layers feeding a ReLU that feeds an affine layer."""
    out = []
    for k in network.pre_activation_indices():
        if isinstance(network.layers[k], AFFINE) and k + 2 < len(network.layers) \
                and isinstance(network.layers[k + 2], AFFINE):
            out.append(k)
    return out


def _dense_layer(W: sp.spmatrix, b: np.ndarray, cache: MatrixCache) -> Dense:
    """A Dense layer written from the folded sparse ``(W, b)``, which stay in ``cache`` for the
    bounds computed on the substitute."""
    W = sp.csr_matrix(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    layer = Dense(W.toarray(), b, (W.shape[1],), (W.shape[0],))
    cache.put(layer, W, b)
    return layer


def build_substitute(network: Network, replacements: dict[int, Replacement],
                     domain: tuple[np.ndarray, np.ndarray],
                     matrix_cache: MatrixCache | None = None) -> tuple[Network, FoldInfo]:
    """The substitute of ``network`` under ``replacements`` ({original k: Replacement}).

    ``domain``: the (n_inputs,) input box (e.g. the clip range) on which the substitute must
    equal the mathematical substitute; pass-through shifts are sound interval bounds over it.
    ``matrix_cache``: a :class:`vnnx.network.MatrixCache` kept by the caller across calls (and
    shared with the bounds computed on the substitutes); the written layers' matrices go in it.
    The folding works on sparse matrices (a merged convolution stays sparse until the end);
    only the layers written out are dense.
    """
    cands = set(candidate_layers(network))
    for k in replacements:
        if k not in cands:
            raise ConfigError(f"layer {k} is not an affine layer between a ReLU and an affine layer")
    if matrix_cache is None:
        matrix_cache = MatrixCache()
    lo, up = (np.asarray(v, dtype=np.float64).ravel() for v in domain)
    info = FoldInfo()
    out: list = []
    # Interval bounds of the current stream (the output of out[-1], or the input).
    cur_lo, cur_up = lo, up
    # Original stream h relates to the new stream by h = M @ h_new + m (None: identity; M sparse).
    M: sp.spmatrix | None = None
    m: np.ndarray | None = None
    layers = network.layers
    k = 0
    while k < len(layers):
        layer = layers[k]
        if isinstance(layer, AFFINE):
            if M is None:
                W = b = None
            else:
                W0, b0 = matrix_cache.sparse(layer)
                W, b = sp.csr_matrix(W0 @ M), W0 @ m + b0
            if isinstance(layers[k + 1] if k + 1 < len(layers) else None, Relu):
                info.relus_total += layer_size(layer)
            rep = replacements.get(k)
            if rep is None or not np.any(rep.removed):
                if W is None:
                    new_layer = layer
                    W0, b0 = (layer.weight, layer.bias) if isinstance(layer, Dense) else matrix_cache.sparse(layer)
                    cur_lo, cur_up = affine_interval(W0, b0, cur_lo, cur_up)
                else:
                    new_layer = _dense_layer(W, b, matrix_cache)
                    cur_lo, cur_up = affine_interval(W, b, cur_lo, cur_up)
                out.append(new_layer)
                M = m = None
                if k + 1 < len(layers) and isinstance(layers[k + 1], Relu):
                    n = layer_size(new_layer)
                    info.relus_kept += n
                    info.neuron_map[len(out) - 1] = (k, np.arange(n), np.ones(n, bool))
                k += 1
                continue
            # A ReLU layer with replacements: layers[k] affine, layers[k+1] Relu, layers[k+2] affine.
            if W is None:
                W, b = matrix_cache.sparse(layer)
            removed = np.asarray(rep.removed, bool)
            slope = np.where(removed, np.asarray(rep.slope, np.float64), 1.0)
            icpt = np.where(removed, np.asarray(rep.intercept, np.float64), 0.0)
            n = removed.size
            if removed.all():
                # Linear layer: h = diag(slope) (W h_new + b) + icpt, merged into the next affine.
                M = sp.diags(slope) @ W
                m = slope * b + icpt
                info.deleted += n
                info.layers_merged += 1
                k += 2
                continue
            keep_nl = ~removed
            flat = removed & (slope == 0)
            passthru = removed & (slope != 0)
            rows = np.flatnonzero(keep_nl | passthru)
            z_lo, _ = affine_interval(W, b, cur_lo, cur_up)
            # A margin below the interval bound keeps the shifted pre-activation clearly positive,
            # so every bound engine (and the MILP) sees a stable ReLU despite round-off.
            shift = np.where(passthru, z_lo - PASSTHROUGH_MARGIN * (1.0 + np.abs(z_lo)), 0.0)
            Wn, bn = W[rows], b[rows] - shift[rows]
            out.append(_dense_layer(Wn, bn, matrix_cache))
            info.neuron_map[len(out) - 1] = (k, rows, keep_nl[rows])
            out.append(Relu((rows.size,)))
            cur_lo, cur_up = affine_interval(Wn, bn, cur_lo, cur_up)
            cur_lo, cur_up = np.maximum(cur_lo, 0), np.maximum(cur_up, 0)
            # A scaled column selection: W0 @ M is a gather.
            M = sp.csc_matrix((slope[rows], (rows, np.arange(rows.size))), shape=(n, rows.size))
            m = np.where(passthru, slope * shift, 0.0) + np.where(removed, icpt, 0.0)
            info.relus_kept += int(keep_nl.sum())
            info.deleted += int(flat.sum())
            info.linear_passthrough += int(passthru.sum())
            k += 2
            continue
        if M is not None:  # pragma: no cover - candidates are followed by an affine layer
            raise ConfigError(f"layer {k} ({type(layer).__name__}) follows a replaced ReLU layer")
        out.append(layer)
        cur_lo, cur_up = layer_interval(layer, cur_lo, cur_up)
        k += 1
    sub = Network(tuple(network.input_shape), tuple(network.output_shape), out)
    return sub, info


def affine_interval(W, b: np.ndarray, lo: np.ndarray, up: np.ndarray):
    """Sound float64 bounds of ``W @ h + b`` for ``h`` in ``[lo, up]`` (all flattened; ``W`` a
    dense array or a scipy sparse matrix), padded for the rounding of the products and the
    bias: ``|error| <= γ_{2n+2} (|W| |h| + |b|)``, n the longest row's non-zeros."""
    if sp.issparse(W):
        W = W.tocsr()
        # The parts share W's pattern (explicit zeros are harmless in a product).
        w_pos, w_neg, w_abs = (sp.csr_matrix((f(W.data), W.indices, W.indptr), shape=W.shape)
                               for f in (lambda d: np.maximum(d, 0.0), lambda d: np.minimum(d, 0.0), np.abs))
        fan_in = int(np.diff(W.indptr).max()) if W.nnz else 0
    else:
        w_pos, w_neg, w_abs = np.maximum(W, 0.0), np.minimum(W, 0.0), np.abs(W)
        fan_in = W.shape[1]
    out_lo = w_pos @ lo + w_neg @ up + b
    out_up = w_pos @ up + w_neg @ lo + b
    err = (2 * fan_in + 4) * _EPS * (w_abs @ np.maximum(np.abs(lo), np.abs(up)) + np.abs(b))
    return out_lo - err, out_up + err


def layer_interval(layer, lo: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sound bounds of a non-affine layer's output for inputs in ``[lo, up]`` (flattened):
    ReLU clamped; any other layer (MaxPool, ...) by the graph engine's interval rule."""
    if isinstance(layer, Relu):
        return np.maximum(lo, 0.0), np.maximum(up, 0.0)
    from vnnx.engine import ChainBounds

    in_shape = getattr(layer, "in_shape", None) or layer.shape
    out_shape = getattr(layer, "out_shape", None) or layer.shape
    return ChainBounds(Network(tuple(in_shape), tuple(out_shape), [layer])).layer_bounds(lo, up, "ibp")[0]


def _n(shape) -> int:
    return int(np.prod(shape))


def layer_size(layer) -> int:
    return int(layer.bias.size) if isinstance(layer, Dense) else _n(layer.out_shape)
