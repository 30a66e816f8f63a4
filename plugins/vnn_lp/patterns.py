"""The reference behaviour a sparsified network must keep on the validation set.

VNN (Baninajjar et al., ICML 2024, §3) fixes each validation sample's ReLU activation pattern:
with the pattern fixed, every layer is linear per sample, so the conditions "same pattern",
"same argmax" and "margin kept" are linear in one layer's weights and can be put in an LP.

A network is cut into *segments*: one affine layer (Dense or Conv) followed by its *block* of
piecewise-linear layers (ReLU, MaxPool) up to the next affine layer. For one sample and a fixed
pattern the block is a selection: each block output is one entry of the affine output ``z`` or
the constant 0 (``sel`` below). Every condition becomes a *constraint* ``z[p] − z[q] > 0`` (or
``>= 0``) on the segment's own affine output, with ``-1`` standing for the constant 0:

* ReLU active: ``z[p] > 0`` (``q = -1``); inactive: ``0 − z[q] >= 0`` (``p = -1``);
* MaxPool: the reference winner ``p`` is not beaten by any other window entry ``q``;
* argmax (last segment only): the target logit beats every other one.

A constraint's ``margin`` is its value in the original network (float64). Samples on which the
original network itself is numerically ambiguous are *degenerate*: they are left out of the LP
and of the guarantee, and counted in the report. Ambiguous means either that float32 evaluation
of the original (onnxruntime) already breaks a constraint, or that a margin is within the
float32 rounding noise of its entries (:func:`float32_noise`; the noise is relative to the
size of the terms summed, so a dead channel whose weights are 1e-7 has margins of 1e-10 that
are perfectly well defined, while a margin of 1e-7 on a neuron summing terms of size 10 is
not). An absolute threshold gets both wrong: 1e-9 threw away 7 of 12 MNIST images on ERAN's
convSmall, whose dead channels produce such margins on every image.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from vnnx.errors import ShapeMismatchError, UnsupportedOpError
from vnnx.network import Conv, Dense, MaxPool, Network, Relu

#: Unit round-off of float32.
U32 = 2.0 ** -24
#: Safety factor on the first-order float32 error estimate of :func:`float32_noise`.
NOISE_FACTOR = 4.0

ACTIVE, INACTIVE, POOL, ARGMAX = 0, 1, 2, 3
KIND_NAMES = ("relu-active", "relu-inactive", "maxpool", "argmax")
#: Kinds whose constraint is strict (``> 0``); the others allow equality (``>= 0``).
STRICT = np.array([True, False, False, True])


@dataclass(frozen=True)
class Segment:
    """``affine``: index in ``network.layers`` of a Dense/Conv; ``block``: indices of the
    ReLU/MaxPool layers that follow it, in order, up to the next affine layer."""

    affine: int
    block: tuple[int, ...]

    @property
    def last(self) -> int:
        """Index of the segment's last layer (its output feeds the next segment)."""
        return self.block[-1] if self.block else self.affine


def split_segments(network: Network) -> tuple[tuple[int, ...], list[Segment]]:
    """``(prefix, segments)``: the activation layers before the first affine layer (they act on
    the fixed input) and the segments. Raises :class:`UnsupportedOpError` for Sigmoid/Tanh or a
    network without an affine layer."""
    prefix: list[int] = []
    segments: list[Segment] = []
    for k, layer in enumerate(network.layers):
        if isinstance(layer, (Dense, Conv)):
            segments.append(Segment(k, ()))
        elif isinstance(layer, (Relu, MaxPool)):
            if segments:
                segments[-1] = Segment(segments[-1].affine, segments[-1].block + (k,))
            else:
                prefix.append(k)
        else:
            raise UnsupportedOpError(
                f"vnn-lp: layer {k} is a {type(layer).__name__}; the LP pass needs a piecewise-linear "
                "network (Dense, Conv, ReLU, MaxPool)")
    if not segments:
        raise UnsupportedOpError("vnn-lp: the network has no Dense or Conv layer to sparsify")
    return tuple(prefix), segments


@dataclass
class Constraints:
    """Rows ``z[n, p] − z[n, q]`` (``-1`` = constant 0) of one segment's affine output ``z``.

    All arrays are (K,). ``margin``: the value in the original network. ``kind``: ACTIVE,
    INACTIVE, POOL or ARGMAX. ``required``: for ARGMAX rows, the logit margin the result must
    keep (``min(M, original sample margin)``, 0 without ``--margin``); 0 otherwise.
    """

    n: np.ndarray
    p: np.ndarray
    q: np.ndarray
    margin: np.ndarray
    kind: np.ndarray
    required: np.ndarray
    noise: Optional[np.ndarray] = None

    _FIELDS = ("n", "p", "q", "margin", "kind", "required", "noise")

    def __post_init__(self) -> None:
        if self.noise is None:
            self.noise = np.zeros(self.n.size)

    @staticmethod
    def empty() -> "Constraints":
        i = np.zeros(0, dtype=np.int64)
        f = np.zeros(0)
        return Constraints(i, i, i, f, i.astype(np.int8), f)

    @staticmethod
    def concat(parts: Sequence["Constraints"]) -> "Constraints":
        parts = [c for c in parts if len(c)] or [Constraints.empty()]
        return Constraints(*(np.concatenate([getattr(c, f) for c in parts]) for f in Constraints._FIELDS))

    def __len__(self) -> int:
        return int(self.n.size)

    def select(self, mask: np.ndarray) -> "Constraints":
        return Constraints(*(getattr(self, f)[mask] for f in Constraints._FIELDS))

    def values(self, z: np.ndarray) -> np.ndarray:
        """The rows evaluated on ``z``: (N, m) -> (K,), in ``z``'s dtype."""
        zero = np.zeros((), dtype=z.dtype)
        vp = np.where(self.p >= 0, z[self.n, np.maximum(self.p, 0)], zero)
        vq = np.where(self.q >= 0, z[self.n, np.maximum(self.q, 0)], zero)
        return vp - vq

    def lp_lower(self, slack: float, margin: float) -> np.ndarray:
        """Right-hand sides for the LP: ``value >= lp_lower``.

        Every side is kept ``max(slack, noise)`` away from 0 (so that LP tolerances and the
        float32 rounding of the new network cannot land it on the wrong side; for inactive
        ReLUs too, as a pre-activation of +1e-9 would switch the ReLU on), but never more than
        the original margin, so the original weights stay feasible. ARGMAX rows ask for
        ``margin + that`` when a margin is requested.
        """
        want = np.maximum(float(slack), self.noise)
        if margin > 0:
            want = np.where(self.kind == ARGMAX, float(margin) + want, want)
        return np.minimum(want, self.margin)

    def satisfied(self, values: np.ndarray, margin_tol: float) -> np.ndarray:
        """(K,) bool: strict kinds ``> 0``, the others ``>= 0``; ARGMAX also ``>= required − margin_tol``."""
        ok = np.where(STRICT[self.kind], values > 0, values >= 0)
        argmax = self.kind == ARGMAX
        ok[argmax] &= values[argmax] >= self.required[argmax] - margin_tol
        return ok


@dataclass
class BlockPattern:
    """One segment's fixed pattern on the reference samples.

    ``z_ref``: (N, m) the original network's affine output. ``sel``: (N, m_out) block output j
    of sample n is ``z[n, sel[n, j]]``, or 0 where ``sel`` is -1. ``live``: (N, m) bool, the
    entries some block output selects (what later layers see). ``constraints``: the block's
    pattern rows, plus the argmax rows for the last segment.
    """

    z_ref: np.ndarray
    sel: np.ndarray
    live: np.ndarray
    constraints: Constraints


@dataclass
class Reference:
    """What the pass must preserve, on the non-degenerate validation samples.

    ``x``: (N, n_inputs) float64 samples kept; ``kept``: indices of those samples in the data
    given; ``target``: (N,) the class each must keep (its label when the original network is
    right, else the original prediction); ``argmax_exempt``: (N,) samples whose original output
    has a tie (e.g. every logit cut to 0 by a final ReLU), which get no argmax rows.
    ``blocks[s]``: the pattern of segment s. ``n_given``/``n_degenerate`` for the report.
    ``x_all``, ``all_target``, ``all_exempt``, ``all_margin``: the same for every given sample,
    degenerate ones included (the direct check runs on all of them); ``margin``: the M asked.
    """

    x: np.ndarray
    kept: np.ndarray
    target: np.ndarray
    argmax_exempt: np.ndarray
    original_margin: np.ndarray
    prefix: tuple[int, ...]
    segments: list[Segment]
    blocks: list[BlockPattern]
    n_given: int
    n_degenerate: int
    degenerate_reasons: dict = field(default_factory=dict)
    x_all: Optional[np.ndarray] = None
    all_target: Optional[np.ndarray] = None
    all_exempt: Optional[np.ndarray] = None
    all_margin: Optional[np.ndarray] = None
    margin: float = 0.0


def _relu_step(sel: np.ndarray, value: np.ndarray, parts: list[Constraints]) -> np.ndarray:
    n_idx = np.broadcast_to(np.arange(sel.shape[0])[:, None], sel.shape)
    expr = sel >= 0
    active = value > 0
    m_act = expr & active
    m_inact = expr & ~active
    for mask, kind in ((m_act, ACTIVE), (m_inact, INACTIVE)):
        k = int(mask.sum())
        p = sel[mask] if kind == ACTIVE else np.full(k, -1)
        q = np.full(k, -1) if kind == ACTIVE else sel[mask]
        parts.append(Constraints(n_idx[mask].astype(np.int64), p.astype(np.int64), q.astype(np.int64),
                                 np.abs(value[mask]), np.full(k, kind, np.int8), np.zeros(k)))
    return np.where(active, sel, -1)


def _pool_windows(pool: MaxPool) -> np.ndarray:
    """(n_out, kmax) flattened input indices of each window, -1 padded."""
    wins = pool.windows()
    kmax = max(len(w) for w in wins)
    out = np.full((len(wins), kmax), -1, dtype=np.int64)
    for i, w in enumerate(wins):
        out[i, :len(w)] = w
    return out


def _pool_step(pool: MaxPool, sel: np.ndarray, value: np.ndarray, parts: list[Constraints]) -> np.ndarray:
    win = _pool_windows(pool)                                   # (J, k)
    valid = win >= 0
    vals = np.where(valid[None], value[:, np.maximum(win, 0)], -np.inf)   # (N, J, k)
    best = vals.argmax(axis=2)                                  # (N, J)
    n, j = np.indices(best.shape)
    w_idx = win[j, best]                                        # (N, J) winner's input index
    w_sel = sel[n, w_idx]
    w_val = value[n, w_idx]
    others = np.broadcast_to(win[None], vals.shape)
    o_sel = np.where(valid[None], sel[n[..., None], np.maximum(others, 0)], -2)
    o_val = vals
    is_other = valid[None] & (np.arange(win.shape[1])[None, None, :] != best[..., None])
    p = np.broadcast_to(w_sel[..., None], o_sel.shape)
    # Two copies of one expression (or two constant zeros) cannot change order.
    mask = is_other & (p != o_sel)
    nn = np.broadcast_to(n[..., None], o_sel.shape)
    k = int(mask.sum())
    parts.append(Constraints(nn[mask].astype(np.int64), p[mask].astype(np.int64), o_sel[mask].astype(np.int64),
                             (w_val[..., None] - o_val)[mask], np.full(k, POOL, np.int8), np.zeros(k)))
    return w_sel


def block_pattern(network: Network, seg: Segment, z_ref: np.ndarray, outs: list[np.ndarray]) -> BlockPattern:
    """The fixed pattern of ``seg`` from the original network's layer outputs ``outs``."""
    n, m = z_ref.shape
    sel = np.broadcast_to(np.arange(m), (n, m)).copy()
    parts: list[Constraints] = []
    for k in seg.block:
        layer = network.layers[k]
        value = outs[k - 1]
        if isinstance(layer, Relu):
            sel = _relu_step(sel, value, parts)
        else:
            sel = _pool_step(layer, sel, value, parts)
    live = np.zeros((n, m), dtype=bool)
    rows = np.broadcast_to(np.arange(n)[:, None], sel.shape)
    live[rows[sel >= 0], sel[sel >= 0]] = True
    return BlockPattern(z_ref, sel, live, Constraints.concat(parts))


def argmax_constraints(sel: np.ndarray, y_ref: np.ndarray, target: np.ndarray, margin: float,
                       exempt: np.ndarray) -> Constraints:
    """Rows ``y[t] − y[j] > 0`` (and ``>= min(M, original margin)``) for every j ≠ t, written on
    the last segment's affine output through its selection ``sel``."""
    n, c = y_ref.shape
    rows = np.arange(n)
    nn = np.broadcast_to(rows[:, None], (n, c))
    jj = np.broadcast_to(np.arange(c)[None, :], (n, c))
    mask = (jj != target[:, None]) & ~exempt[:, None]
    p = np.broadcast_to(sel[rows, target][:, None], (n, c))
    q = sel
    diff = y_ref[rows, target][:, None] - y_ref
    sample_margin = np.where(jj != target[:, None], diff, np.inf).min(axis=1)
    required = np.minimum(margin, sample_margin) if margin > 0 else np.zeros(n)
    mask = mask & (p != q)
    k = int(mask.sum())
    return Constraints(nn[mask].astype(np.int64), p[mask].astype(np.int64), q[mask].astype(np.int64),
                       diff[mask], np.full(k, ARGMAX, np.int8),
                       np.broadcast_to(required[:, None], (n, c))[mask].copy())


def build_reference(network: Network, x: np.ndarray, y: np.ndarray, margin: float = 0.0,
                    float32_z: Optional[dict[int, np.ndarray]] = None) -> Reference:
    """The reference patterns of ``network`` on samples ``x`` (N, n_inputs) with labels ``y`` (N,).

    ``float32_z``: the original network's affine outputs in float32, keyed by the affine layer's
    index (only segments with constraints are read), from onnxruntime or a float32 forward
    pass; samples on which they break a constraint are degenerate. Without them only the
    exact-tie test applies.
    """
    x = np.asarray(x, dtype=np.float64)
    prefix, segments = split_segments(network)
    outs = network.forward(x, return_all=True)
    y_ref = outs[-1]
    n = len(x)
    pred = y_ref.argmax(axis=1)
    target = np.where(pred == y, y, pred).astype(np.int64)
    blocks = [block_pattern(network, seg, outs[seg.affine], outs) for seg in segments]
    last = blocks[-1]
    # A tie in the original output (all logits zero after a final ReLU, say) leaves no argmax
    # to keep; the sample keeps its activation pattern only.
    others = np.where(np.arange(y_ref.shape[1])[None] != target[:, None], y_ref, -np.inf)
    sample_margin = y_ref[np.arange(n), target] - others.max(axis=1)
    exempt = sample_margin <= 0
    last.constraints = Constraints.concat(
        [last.constraints, argmax_constraints(last.sel, y_ref, target, margin, exempt)])

    noise = float32_noise(network, x, segments, blocks, outs)
    bad_tie = np.zeros(n, dtype=bool)
    bad_f32 = np.zeros(n, dtype=bool)
    for seg, blk in zip(segments, blocks):
        c = blk.constraints
        if not len(c):
            continue
        e = noise[seg.affine]
        c_noise = np.where(c.p >= 0, e[c.n, np.maximum(c.p, 0)], 0.0) + \
            np.where(c.q >= 0, e[c.n, np.maximum(c.q, 0)], 0.0)
        # Strict sides need a margin above the noise; an exact 0 on a non-strict side (an
        # inactive ReLU on an all-zero input) is fine when there is no noise at all.
        c.noise = c_noise
        ambiguous = np.where(STRICT[c.kind], c.margin <= c_noise, c.margin < c_noise)
        bad_tie[c.n[ambiguous]] = True
        if float32_z is not None:
            z32 = np.asarray(float32_z[seg.affine]).reshape(n, -1)
            ok = c.satisfied(c.values(z32), margin_tol=np.inf)
            bad_f32[c.n[~ok]] = True
    degenerate = bad_tie | bad_f32
    keep = np.flatnonzero(~degenerate)
    return Reference(x[keep], keep, target[keep], exempt[keep], sample_margin[keep], prefix, segments,
                     [_take(b, keep) for b in blocks], n, int(degenerate.sum()),
                     {"within_float32_noise": int(bad_tie.sum()),
                      "float32_disagrees": int((bad_f32 & ~bad_tie).sum())},
                     x, target, exempt, sample_margin, float(margin))


def float32_noise(network: Network, x: np.ndarray, segments: Sequence[Segment], blocks: Sequence[BlockPattern],
                  outs: list[np.ndarray]) -> dict[int, np.ndarray]:
    """A first-order estimate of float32 rounding error on each segment's affine output,
    {affine index: (N, m)}, in network units.

    Standard forward error analysis (Higham, Accuracy and Stability, §3.1): a dot product of K
    terms computed in float32 is off by about ``sqrt(K)·u·Σ|w_i h_i|`` (the random-walk size of
    the worst-case ``K·u`` bound), plus the input's own error carried through ``|W|``. The
    input starts with ``u·|x|`` (the cast to float32); ReLU and MaxPool pass errors on through
    the selection ``sel`` of each block. ``NOISE_FACTOR`` covers the gap to engines that sum
    in another order.
    """
    x = np.asarray(x, dtype=np.float64)
    err = U32 * np.abs(x)
    noise: dict[int, np.ndarray] = {}
    for seg, blk in zip(segments, blocks):
        layer = network.layers[seg.affine]
        h_abs = np.abs(x) if seg.affine == 0 else np.abs(outs[seg.affine - 1])
        fan_in = int(np.prod(layer.weight.shape[1:]))
        terms = _mapped_layer(layer, np.abs).apply(h_abs) + np.abs(_bias_per_output(layer))
        carried = np.sqrt(_mapped_layer(layer, np.square).apply(np.square(err)))
        e = carried + NOISE_FACTOR * U32 * (np.sqrt(fan_in) + 2.0) * terms
        noise[seg.affine] = e
        rows = np.broadcast_to(np.arange(len(x))[:, None], blk.sel.shape)
        err = np.where(blk.sel >= 0, e[rows, np.maximum(blk.sel, 0)], 0.0)
    return noise


def _mapped_layer(layer, fn):
    """The layer with weights ``fn(W)`` and no bias (|W| or W², for the error estimate)."""
    if isinstance(layer, Dense):
        return Dense(fn(layer.weight), np.zeros_like(layer.bias), layer.in_shape, layer.out_shape)
    return Conv(fn(layer.weight), np.zeros_like(layer.bias), layer.in_shape, layer.out_shape, layer.stride,
                layer.padding, layer.dilation, layer.groups)


def _bias_per_output(layer) -> np.ndarray:
    if isinstance(layer, Dense):
        return layer.bias
    return np.repeat(layer.bias, int(np.prod(layer.out_shape[1:])))


def affine_outputs(network: Network, x: np.ndarray, segments: Sequence[Segment],
                   dtype=np.float64) -> dict[int, np.ndarray]:
    """Every segment's affine output on ``x`` (N, n_inputs), keyed by the affine layer index,
    computed layer by layer in ``dtype`` (float32 emulates an inference engine)."""
    h = np.asarray(x, dtype=dtype).reshape(len(x), -1)
    wanted = {s.affine for s in segments}
    out: dict[int, np.ndarray] = {}
    for k, layer in enumerate(network.layers):
        h = apply_layer(layer, h, dtype)
        if k in wanted:
            out[k] = h
    return out


def apply_layer(layer, h: np.ndarray, dtype=np.float64) -> np.ndarray:
    """``layer`` on (N, in) in ``dtype``; float32 rounds weights and arithmetic to float32."""
    if dtype == np.float64:
        return layer.apply(h)
    if isinstance(layer, Dense):
        return (h @ layer.weight.astype(dtype).T + layer.bias.astype(dtype)).astype(dtype)
    if isinstance(layer, Conv):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(h.reshape((len(h),) + tuple(layer.in_shape)), dtype=dtype))
        pt, pl, pb, pr = layer.padding
        t = torch.nn.functional.pad(t, (pl, pr, pt, pb))
        out = torch.nn.functional.conv2d(t, torch.from_numpy(layer.weight.astype(dtype)),
                                         torch.from_numpy(layer.bias.astype(dtype)), stride=layer.stride,
                                         dilation=layer.dilation, groups=layer.groups)
        return out.numpy().reshape(len(h), -1)
    return layer.apply(h).astype(dtype)


def violations(ref: Reference, z_by_affine: dict[int, np.ndarray], margin_tol: float) -> dict[str, int]:
    """Count broken constraints, by kind, of ``ref`` on the given affine outputs (see
    :func:`affine_outputs`); an empty dict means the guarantee holds."""
    counts: dict[str, int] = {}
    for seg, blk in zip(ref.segments, ref.blocks):
        c = blk.constraints
        if not len(c):
            continue
        z = np.asarray(z_by_affine[seg.affine]).reshape(len(ref.x), -1)
        bad = ~c.satisfied(c.values(z), margin_tol)
        if bad.any():
            for kind in np.unique(c.kind[bad]):
                name = KIND_NAMES[kind]
                counts[name] = counts.get(name, 0) + int((c.kind[bad] == kind).sum())
    return counts


def _take(blk: BlockPattern, keep: np.ndarray) -> BlockPattern:
    remap = np.full(blk.z_ref.shape[0], -1, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    c = blk.constraints.select(remap[blk.constraints.n] >= 0)
    c.n = remap[c.n]
    return BlockPattern(blk.z_ref[keep], blk.sel[keep], blk.live[keep], c)


def check_inputs(network: Network, x_val, y_val) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten validation data: ``x_val`` (N, ...) with N·n_inputs values,
    ``y_val`` (N,) integer labels in ``[0, n_outputs)``. Raises :class:`ShapeMismatchError`."""
    x = np.asarray(x_val)
    y = np.asarray(y_val)
    if x.ndim < 1 or len(x) == 0:
        raise ShapeMismatchError("vnn-lp: the validation data is empty")
    per_sample = int(np.prod(x.shape[1:], dtype=np.int64))
    if per_sample != network.n_inputs:
        raise ShapeMismatchError(
            f"vnn-lp: the validation data has {per_sample} values per sample (shape {x.shape}), "
            f"the network expects {network.n_inputs} (input shape {network.input_shape})")
    if y.ndim != 1 or len(y) != len(x):
        raise ShapeMismatchError(f"vnn-lp: labels have shape {y.shape}, expected ({len(x)},) for {len(x)} samples")
    if not np.all(np.isfinite(x.astype(np.float64))):
        raise ShapeMismatchError("vnn-lp: the validation data contains NaN or infinite values")
    if not (np.issubdtype(y.dtype, np.integer) or np.array_equal(y, np.round(y))):
        raise ShapeMismatchError(f"vnn-lp: labels are not integers (dtype {y.dtype})")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= network.n_outputs:
        raise ShapeMismatchError(
            f"vnn-lp: labels range over {y.min()}..{y.max()}, the network has {network.n_outputs} outputs")
    return x.reshape(len(x), -1).astype(np.float64), y
