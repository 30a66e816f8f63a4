"""Rewrite every MaxPool of a plain network into Conv/ReLU layers that compute the same max.

As DNNV's ``ReluifyMaxPool``: ``max(a, b) = ReLU(a − b) + ReLU(b) − ReLU(−b)``, applied as a
pairwise tree over each window (depth ⌈log2 K⌋); a value without a partner at some level is
carried through the ReLU as ``ReLU(v) − ReLU(−v)``. All windows share one local tree, so the
layers are convolutions with ``groups = C``:

* level 0: a depthwise Conv with the pool's kernel and stride when every window is full;
  otherwise (padding, ``ceil_mode`` overhang) a Dense gather in which a window's padding slots
  repeat one of its in-range cells (−∞ padding never wins, and max is idempotent);
* later levels and the final combination: 1×1 grouped Convs.

The result is exact in real arithmetic; in floating point ``(a − b) + b`` may differ from ``a``
by one rounding. The rewrite gives a MaxPool-free net for the MILP and a cross-check of CAPM.
"""
from __future__ import annotations

import numpy as np

from vnnx.errors import UnsupportedOpError
from vnnx.network import Conv, Dense, Layer, MaxPool, Network, Relu


def reluify_maxpool(network: Network, *, max_dense_entries: int = 50_000_000) -> Network:
    """Return a copy of ``network`` in which each :class:`MaxPool` is replaced by
    Conv/Dense + ReLU layers computing the same outputs (same shapes and C-order flattening).

    ``max_dense_entries`` bounds the size of the Dense gather used for padded pools (raises
    :class:`UnsupportedOpError` beyond it). A network without MaxPool comes back unchanged
    (a new :class:`Network` holding the same layer objects).

    Example: ``net2 = reluify_maxpool(net); np.allclose(net.forward(x), net2.forward(x))``.
    """
    layers: list[Layer] = []
    for k, layer in enumerate(network.layers):
        if isinstance(layer, MaxPool):
            layers += maxpool_as_relu_layers(layer, max_dense_entries=max_dense_entries, where=f"layer {k}")
        else:
            layers.append(layer)
    return Network(network.input_shape, network.output_shape, layers)


def maxpool_as_relu_layers(pool: MaxPool, *, max_dense_entries: int = 50_000_000,
                           where: str = "MaxPool") -> list[Layer]:
    """The Conv/Dense/Relu layers replacing one :class:`MaxPool` (input (C, H, W) flattened,
    output (C, OH, OW) flattened)."""
    c, _, _ = pool.in_shape
    _, oh, ow = pool.out_shape
    splits, merges = _tree(pool.kernel[0] * pool.kernel[1])
    layers: list[Layer] = []
    units = splits[0].shape[0]
    layers.append(_first_layer(pool, splits[0], where, max_dense_entries))
    for split, merge in zip(splits[1:], merges[:-1]):
        layers.append(Relu((c * units, oh, ow)))
        layers.append(_grouped_1x1(split @ merge, c, oh, ow))
        units = split.shape[0]
    if merges:
        layers.append(Relu((c * units, oh, ow)))
        layers.append(_grouped_1x1(merges[-1], c, oh, ow))
    return layers


def _tree(k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Local maps of the pairwise max tree over k values.

    ``splits[l]`` (U_l × m_l) maps the level's values to pre-activation units; ``merges[l]``
    (m_{l+1} × U_l) maps the ReLU'd units to the next level's values. With k = 1 there is no
    ReLU: ``splits = [I_1]`` and no merge.
    """
    splits: list[np.ndarray] = []
    merges: list[np.ndarray] = []
    m = k
    while True:
        if m == 1:
            if not splits:
                splits.append(np.eye(1))
            return splits, merges
        rows, merge_rows = [], []
        eye = np.eye(m)
        for i in range(0, m - 1, 2):                     # max(a, b) = ReLU(a−b) + ReLU(b) − ReLU(−b)
            rows += [eye[i] - eye[i + 1], eye[i + 1], -eye[i + 1]]
            merge_rows.append((len(rows) - 3, len(rows) - 2, len(rows) - 1))
        if m % 2:                                         # carry v = ReLU(v) − ReLU(−v)
            rows += [eye[m - 1], -eye[m - 1]]
            merge_rows.append((len(rows) - 2, None, len(rows) - 1))
        merge = np.zeros((len(merge_rows), len(rows)))
        for r, (p, q, n) in enumerate(merge_rows):
            merge[r, p] += 1.0
            if q is not None:
                merge[r, q] += 1.0
            merge[r, n] -= 1.0
        splits.append(np.array(rows))
        merges.append(merge)
        m = merge.shape[0]


def _first_layer(pool: MaxPool, split: np.ndarray, where: str, max_dense_entries: int) -> Layer:
    c, h, w = pool.in_shape
    _, oh, ow = pool.out_shape
    units, k = split.shape
    kh, kw = pool.kernel
    windows = MaxPool((1, h, w), pool.kernel, pool.stride, pool.padding, pool.ceil_mode).windows()
    out_shape = (c * units, oh, ow)
    if all(len(cells) == k for cells in windows):
        weight = np.tile(split.reshape(1, units, 1, kh, kw), (c, 1, 1, 1, 1)).reshape(c * units, 1, kh, kw)
        conv = Conv(weight, np.zeros(c * units), (c, h, w), out_shape, stride=pool.stride, groups=c)
        if conv.apply(np.zeros((1, c * h * w))).shape[1] != c * units * oh * ow:
            raise UnsupportedOpError(f"{where}: MaxPool {pool.kernel}/{pool.stride} has no Conv form")
        return conv
    n_in, n_out = c * h * w, c * units * oh * ow
    if n_in * n_out > max_dense_entries:
        raise UnsupportedOpError(
            f"{where}: padded MaxPool needs a {n_out}x{n_in} Dense gather "
            f"(> max_dense_entries={max_dense_entries})")
    plane = np.zeros((units, oh * ow, h * w))           # one channel's gather
    for p, cells in enumerate(windows):
        if len(cells) == 0:
            raise UnsupportedOpError(f"{where}: MaxPool window {p} lies entirely in the padding")
        slots = np.concatenate([cells, np.full(k - len(cells), cells[0])])
        for u in range(units):
            np.add.at(plane[u, p], slots, split[u])
    dense = np.zeros((c, units, oh * ow, c, h * w))
    for ch in range(c):
        dense[ch, :, :, ch] = plane
    return Dense(dense.reshape(n_out, n_in), np.zeros(n_out), (c, h, w), out_shape)


def _grouped_1x1(matrix: np.ndarray, c: int, oh: int, ow: int) -> Conv:
    """The same (out × in) map on every channel group and pixel, as a 1×1 Conv with groups=c."""
    n_out, n_in = matrix.shape
    weight = np.tile(matrix.reshape(1, n_out, n_in, 1, 1), (c, 1, 1, 1, 1)).reshape(c * n_out, n_in, 1, 1)
    return Conv(weight, np.zeros(c * n_out), (c * n_in, oh, ow), (c * n_out, oh, ow), groups=c)
