"""The LPs of VNN's layer step (Baninajjar et al., ICML 2024, Eq. 3), built sparsely.

For a target affine layer with parameters θ (a Dense's weights and biases, or a Conv's kernel
weights and per-channel biases: one variable per kernel weight, so weight sharing is kept) and
the inputs ``a_n`` it receives from the already-sparsified earlier layers, its output on sample
n is linear in θ: ``z̃_n = A_n θ``. The LP is

    minimise ‖θ‖₁                              (= ‖W̃‖₁ + ‖b̃‖₁, with θ = θ⁺ − θ⁻, θ± ≥ 0)
    s.t.  lo[n, i] <= (A_n θ)_i <= hi[n, i]     ReLU pattern of the layer + ε-neighbourhood
          (A_n θ)_p − (A_n θ)_q >= lb           MaxPool winners / argmax of the layer itself
          g · z̃_n + h >= lb                     patterns / argmax of every LATER layer, which is
                                                affine in z̃_n once those patterns are fixed

The output of each *group* (a Dense neuron, or one output channel of a Conv) depends on that
group's parameters only, so without rows of the last two kinds that couple groups the LP
splits into one small LP per group. Later-layer rows that the ε-box alone already implies are
*redundant* and dropped (:func:`later_rows`); at ε = 0 the box is a point and they all are,
which is why VNN's ε = 0 problem separates per neuron.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
import scipy.sparse as sp

from vnnx.network import Conv, Dense, Network
from vnnx.solvers import LinearProblem

from .patterns import BlockPattern, Constraints, Reference

#: Bound on the dense scratch arrays (entries) built at once; keeps memory flat on conv nets.
CHUNK_ENTRIES = 4_000_000


# ------------------------------------------------------------------------------ parameters
class Parametrisation:
    """θ of one Dense or Conv layer and the linear map θ -> z̃_n.

    θ layout: group g's K weights at ``g*K .. g*K+K-1`` (a Dense row, or a Conv output
    channel's kernel flattened as (C/groups, kh, kw)), then the G biases at ``G*K + g``.
    ``inputs``: (N, in) the layer's inputs, flattened per sample.
    """

    def __init__(self, layer, inputs: np.ndarray) -> None:
        self.layer = layer
        inputs = np.asarray(inputs, dtype=np.float64)
        if isinstance(layer, Dense):
            self.G, self.K = layer.weight.shape
            self.L = 1
            self._local = inputs
        elif isinstance(layer, Conv):
            self.G = layer.weight.shape[0]
            self.K = int(np.prod(layer.weight.shape[1:]))
            self.L = int(np.prod(layer.out_shape[1:]))
            self._local = _patches(layer, inputs)            # (N, C*kh*kw, L)
            self._per_group = self.G // layer.groups
        else:  # pragma: no cover - segments only hold Dense/Conv
            raise TypeError(type(layer).__name__)
        self.n_params = self.G * self.K + self.G
        self.m = self.G * self.L
        self.theta0 = np.concatenate([layer.weight.reshape(self.G, self.K).ravel(), layer.bias])

    def position_group(self, pos: np.ndarray) -> np.ndarray:
        """Group (neuron / output channel) of each affine output position."""
        return np.asarray(pos) // self.L

    def group_params(self, g: int) -> np.ndarray:
        """Global θ indices of group g, local order: its K weights then its bias."""
        return np.r_[g * self.K + np.arange(self.K), self.G * self.K + g]

    def local_values(self, n_idx: np.ndarray, pos_idx: np.ndarray) -> np.ndarray:
        """(R, K): the inputs multiplying group weights in rows (n, pos)."""
        if self.L == 1 and isinstance(self.layer, Dense):
            return self._local[n_idx]
        o = pos_idx // self.L
        l_idx = pos_idx % self.L
        g_in = o // self._per_group
        cols = (g_in * self.K)[:, None] + np.arange(self.K)[None, :]
        return self._local[n_idx[:, None], cols, l_idx[:, None]]

    def rows(self, n_idx: np.ndarray, pos_idx: np.ndarray) -> sp.csr_matrix:
        """(R, n_params) sparse rows: ``row r · θ = z̃[n_idx[r], pos_idx[r]]``."""
        n_idx = np.asarray(n_idx, dtype=np.int64)
        pos_idx = np.asarray(pos_idx, dtype=np.int64)
        R = n_idx.size
        step = max(1, CHUNK_ENTRIES // max(self.K, 1))
        blocks = []
        for s in range(0, R, step):
            ni, pi = n_idx[s:s + step], pos_idx[s:s + step]
            vals = self.local_values(ni, pi)
            g = self.position_group(pi)
            r, k = np.nonzero(vals)
            data = np.r_[vals[r, k], np.ones(ni.size)]
            rr = np.r_[r, np.arange(ni.size)]
            cc = np.r_[g[r] * self.K + k, self.G * self.K + g]
            blocks.append(sp.csr_matrix((data, (rr, cc)), shape=(ni.size, self.n_params)))
        if not blocks:
            return sp.csr_matrix((0, self.n_params))
        return sp.vstack(blocks, format="csr")

    def group_rows(self, g: int, n_idx: np.ndarray, pos_idx: np.ndarray) -> np.ndarray:
        """(R, K+1) dense rows of group g in local order (weights, then the bias column)."""
        vals = self.local_values(np.asarray(n_idx, np.int64), np.asarray(pos_idx, np.int64))
        return np.hstack([vals, np.ones((vals.shape[0], 1))])

    def make_layer(self, theta: np.ndarray):
        """The layer with parameters ``theta`` (n_params,)."""
        theta = np.asarray(theta, dtype=np.float64)
        w = theta[:self.G * self.K].reshape(self.layer.weight.shape).copy()
        b = theta[self.G * self.K:].copy()
        if isinstance(self.layer, Dense):
            return Dense(w, b, self.layer.in_shape, self.layer.out_shape)
        c = self.layer
        return Conv(w, b, c.in_shape, c.out_shape, c.stride, c.padding, c.dilation, c.groups)


def _patches(conv: Conv, inputs: np.ndarray) -> np.ndarray:
    """im2col: (N, C*kh*kw, L) input patches of ``conv`` (channel-major, like its kernel)."""
    import torch

    n = len(inputs)
    t = torch.from_numpy(np.ascontiguousarray(inputs.reshape((n,) + tuple(conv.in_shape))))
    pt, pl, pb, pr = conv.padding
    t = torch.nn.functional.pad(t, (pl, pr, pt, pb))
    cols = torch.nn.functional.unfold(t, conv.weight.shape[2:], dilation=conv.dilation, stride=conv.stride)
    return cols.numpy()


# ------------------------------------------------------------------------------ bounds
@dataclass
class LayerBounds:
    """Bounds on the target layer's outputs z̃ (N, m) and its pair rows.

    ``lo``/``hi``: the ReLU pattern's sides (with slack) intersected, on live entries, with the
    ε-neighbourhood. ``pairs``: the block's rows on two entries (MaxPool winners, argmax).
    """

    lo: np.ndarray
    hi: np.ndarray
    pairs: Constraints
    pair_lb: np.ndarray


def layer_bounds(blk: BlockPattern, center: np.ndarray, epsilon: float, epsilon_mode: str, slack: float,
                 margin: float, drop_redundant_pairs: bool = False) -> LayerBounds:
    """Bounds of the LP for one target segment (see :class:`LayerBounds`).

    ``center``: (N, m) what the layer's ORIGINAL weights compute on the inputs it now receives
    (the original network's output for the first layer). ε-neighbourhood of each entry z of
    ``center`` that later layers see: ``relative``: |z̃ − z| <= ε|z| (for z > 0 the paper's
    [(1−ε)z, (1+ε)z]); ``absolute``: |z̃ − z| <= ε. Centring on the current inputs keeps the
    original weights feasible, so an ε > 0 step can always fall back on them.
    With ``drop_redundant_pairs`` pair rows implied by the bounds are left out.
    """
    z = np.asarray(center, dtype=np.float64)
    lo = np.full(z.shape, -np.inf)
    hi = np.full(z.shape, np.inf)
    c = blk.constraints
    lb = c.lp_lower(slack, margin)
    single_p = (c.p >= 0) & (c.q < 0)
    single_q = (c.p < 0) & (c.q >= 0)
    np.maximum.at(lo, (c.n[single_p], c.p[single_p]), lb[single_p])
    np.minimum.at(hi, (c.n[single_q], c.q[single_q]), -lb[single_q])
    radius = epsilon * np.abs(z) if epsilon_mode == "relative" else np.full(z.shape, float(epsilon))
    live = blk.live
    lo = np.where(live, np.maximum(lo, z - radius), lo)
    hi = np.where(live, np.minimum(hi, z + radius), hi)
    pairs = (c.p >= 0) & (c.q >= 0)
    if drop_redundant_pairs and pairs.any():
        idx = np.flatnonzero(pairs)
        lo_p, hi_q = lo[c.n[idx], c.p[idx]], hi[c.n[idx], c.q[idx]]
        # The same relative allowance as for later rows: at ε = 0 both sides are points.
        pairs[idx[lo_p - hi_q >= lb[idx] - 1e-12 * (1 + np.abs(lo_p) + np.abs(hi_q))]] = False
    return LayerBounds(lo, hi, c.select(pairs), lb[pairs])


# ------------------------------------------------------------------------------ later rows
@dataclass
class LaterRows:
    """Rows ``Σ_i coef · z̃[n, i] + const >= lb`` on the target layer's outputs.

    COO: ``row``, ``n``, ``pos``, ``coef`` (nnz,); per row: ``const``, ``lb``, ``sample`` (R,).
    ``n_total``: rows before redundant ones were dropped.
    """

    row: np.ndarray
    pos: np.ndarray
    coef: np.ndarray
    sample: np.ndarray
    const: np.ndarray
    lb: np.ndarray
    n_total: int

    @property
    def n_rows(self) -> int:
        return int(self.lb.size)


def later_rows(network: Network, ref: Reference, t: int, bounds: LayerBounds, slack: float, margin: float,
               drop_redundant: bool = True) -> LaterRows:
    """The constraints of segments after ``t`` (ReLU/MaxPool patterns and the argmax), as rows
    on segment t's outputs z̃ (later layers keep their weights, patterns are fixed).

    With ``drop_redundant`` a row is dropped when its minimum over the box
    ``bounds.lo <= z̃ <= bounds.hi`` already meets its right-hand side: then no θ inside the box
    can break it (the box treats repeated selections as independent, which only enlarges it).
    Loops run over chunks of samples, never over constraints.
    """
    segs, blocks = ref.segments, ref.blocks
    N = len(ref.x)
    m_t = blocks[t].z_ref.shape[1]
    later = list(range(t + 1, len(segs)))
    empty = LaterRows(*(np.zeros(0, np.int64),) * 2, np.zeros(0), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), 0)
    if not later:
        return empty
    mats = {s: network.layers[segs[s].affine].matrix() for s in later}
    widest = max(mats[s][0].shape[0] for s in later)
    B = max(1, CHUNK_ENTRIES // max(1, widest * m_t))
    lbs = {s: blocks[s].constraints.lp_lower(slack, margin) for s in later}
    # Index the later constraints by sample once.
    order = {s: np.argsort(blocks[s].constraints.n, kind="stable") for s in later}
    starts = {s: np.searchsorted(blocks[s].constraints.n[order[s]], np.arange(N + 1)) for s in later}
    out_row, out_pos, out_coef, out_sample, out_const, out_lb = [], [], [], [], [], []
    n_rows = 0
    n_total = 0
    lo, hi = bounds.lo, bounds.hi
    for b0 in range(0, N, B):
        b1 = min(N, b0 + B)
        nb = b1 - b0
        # J: d z^s / d z^t (nb, m_s, m_t) and c: z^s at z^t = 0, for the fixed patterns.
        sel = blocks[t].sel[b0:b1]
        W, bias = mats[t + 1]
        Jt = np.zeros((nb, m_t, W.shape[0]))
        bi, ji = np.nonzero(sel >= 0)
        np.add.at(Jt, (bi, sel[bi, ji]), W.T[ji])
        J = Jt.transpose(0, 2, 1)
        c = np.broadcast_to(bias, (nb, W.shape[0])).copy()
        for s in later:
            if s > t + 1:
                W, bias = mats[s]
                selp = blocks[s - 1].sel[b0:b1]
                valid = (selp >= 0)[..., None]
                Jx = np.where(valid, np.take_along_axis(J, np.maximum(selp, 0)[..., None], axis=1), 0.0)
                cx = np.where(selp >= 0, np.take_along_axis(c, np.maximum(selp, 0), axis=1), 0.0)
                J = np.matmul(W, Jx)
                c = cx @ W.T + bias
            cons = blocks[s].constraints
            idx = order[s][starts[s][b0]:starts[s][b1]]
            if idx.size == 0:
                continue
            n_loc = cons.n[idx] - b0
            p, q = cons.p[idx], cons.q[idx]
            g = np.where((p >= 0)[:, None], J[n_loc, np.maximum(p, 0)], 0.0) - \
                np.where((q >= 0)[:, None], J[n_loc, np.maximum(q, 0)], 0.0)
            h = np.where(p >= 0, c[n_loc, np.maximum(p, 0)], 0.0) - np.where(q >= 0, c[n_loc, np.maximum(q, 0)], 0.0)
            lb = lbs[s][idx]
            n_total += idx.size
            if drop_redundant:
                lo_n, hi_n = lo[b0 + n_loc], hi[b0 + n_loc]
                with np.errstate(invalid="ignore"):
                    low = np.where(g > 0, g * lo_n, 0.0) + np.where(g < 0, g * hi_n, 0.0)
                worst = low.sum(axis=1) + h
                scale = 1.0 + np.abs(h) + np.abs(g * np.where(np.isfinite(lo_n), lo_n, 0.0)).sum(axis=1)
                keep = ~(worst >= lb - 1e-12 * scale)
            else:
                keep = np.ones(idx.size, dtype=bool)
            if not keep.any():
                continue
            g, h, lb, n_loc = g[keep], h[keep], lb[keep], n_loc[keep]
            r, i = np.nonzero(g)
            out_row.append(n_rows + r)
            out_pos.append(i)
            out_coef.append(g[r, i])
            out_sample.append(b0 + n_loc)
            out_const.append(h)
            out_lb.append(lb)
            n_rows += g.shape[0]
    if not out_lb:
        empty.n_total = n_total
        return empty
    return LaterRows(np.concatenate(out_row), np.concatenate(out_pos), np.concatenate(out_coef),
                     np.concatenate(out_sample), np.concatenate(out_const), np.concatenate(out_lb), n_total)


# ------------------------------------------------------------------------------ LPs
def group_scales(param: "Parametrisation") -> np.ndarray:
    """(G,) the size of each group's original parameters (max |θ|, 1 for an all-zero group).

    The LP is solved in ``φ = θ / s_g`` with its rows divided by ``s_g``: the same LP (the L1
    objective only changes by a positive factor per group, and groups are separate or joined
    by rows that are scaled consistently), but the solver's absolute feasibility tolerance
    (HiGHS: 1e-7) becomes relative to the group. Without it a dead ERAN conv channel with
    weights of 1e-7 and margins of 1e-10 comes back on the wrong side of 0.
    """
    theta = np.abs(param.theta0)
    w = theta[:param.G * param.K].reshape(param.G, param.K).max(axis=1) if param.K else np.zeros(param.G)
    s = np.maximum(w, theta[param.G * param.K:])
    return np.where(s > 0, s, 1.0)


@dataclass
class LayerLP:
    """An LP over (a subset of) θ. ``columns``: the global θ index of each of the first
    ``len(columns)`` split pairs (x[j] = θ⁺, x[len + j] = θ⁻); parameters not listed multiply
    inputs that are zero on every sample in the LP and are set to 0."""

    problem: LinearProblem
    columns: np.ndarray
    scale: Union[float, np.ndarray] = 1.0

    def theta(self, x: np.ndarray) -> np.ndarray:
        k = self.columns.size
        return self.scale * (x[:k] - x[k:2 * k])


def _split(A: sp.csr_matrix, extra_cols: int = 0) -> sp.csr_matrix:
    """[A, −A, 0] for θ = θ⁺ − θ⁻ (and ``extra_cols`` zero columns after)."""
    parts = [A, -A]
    if extra_cols:
        parts.append(sp.csr_matrix((A.shape[0], extra_cols)))
    return sp.hstack(parts, format="csr")


def group_lp(param: Parametrisation, g: int, bounds: LayerBounds, pair_mask: Optional[np.ndarray] = None) -> LayerLP:
    """The separate LP of group g: rows for every (sample, position of g) with a finite bound,
    plus the pair rows that stay inside g (``pair_mask`` selects them from ``bounds.pairs``)."""
    N = bounds.lo.shape[0]
    positions = g * param.L + np.arange(param.L)
    lo = bounds.lo[:, positions].ravel()
    hi = bounds.hi[:, positions].ravel()
    n_idx = np.repeat(np.arange(N), param.L)
    pos_idx = np.tile(positions, N)
    keep = np.isfinite(lo) | np.isfinite(hi)
    rows = param.group_rows(g, n_idx[keep], pos_idx[keep])
    row_lo, row_hi = lo[keep], hi[keep]
    if pair_mask is not None and pair_mask.any():
        pc = bounds.pairs.select(pair_mask)
        pr = param.group_rows(g, pc.n, pc.p) - param.group_rows(g, pc.n, pc.q)
        rows = np.vstack([rows, pr])
        row_lo = np.r_[row_lo, bounds.pair_lb[pair_mask]]
        row_hi = np.r_[row_hi, np.full(pc.n.size, np.inf)]
    used = np.flatnonzero(np.any(rows != 0, axis=0))
    A = sp.csr_matrix(rows[:, used])
    k = used.size
    s = float(group_scales(param)[g])
    problem = LinearProblem(np.ones(2 * k), _split(A), row_lo / s, row_hi / s, np.zeros(2 * k), np.full(2 * k, np.inf))
    return LayerLP(problem, param.group_params(g)[used], s)


def coupled_lp(param: Parametrisation, bounds: LayerBounds, later: LaterRows) -> LayerLP:
    """One LP over all of θ, with the coupling rows.

    Entries z̃[n, i] that later rows use get a column ``r`` (``A_n θ − r = 0``, r in [lo, hi]),
    so each later row has one coefficient per target neuron instead of one per weight. Scaled
    per group as :func:`group_scales` explains: ``θ = s φ``, ``r = s ρ``, each group's own rows
    divided by its ``s``; the objective stays ``‖θ‖₁ = Σ s |φ|``.
    """
    N, m = bounds.lo.shape
    scales = group_scales(param)
    aux = np.zeros((N, m), dtype=bool)
    aux[later.sample[later.row], later.pos] = True
    finite = np.isfinite(bounds.lo) | np.isfinite(bounds.hi)
    direct = finite & ~aux
    dn, dp = np.nonzero(direct)
    an, ap = np.nonzero(aux)
    n_aux = an.size
    s_dir = scales[param.position_group(dp)]
    s_aux = scales[param.position_group(ap)]
    blocks, lo, hi = [], [], []
    if dn.size:
        blocks.append(sp.diags(1.0 / s_dir) @ param.rows(dn, dp))
        lo.append(bounds.lo[dn, dp] / s_dir)
        hi.append(bounds.hi[dn, dp] / s_dir)
    if bounds.pairs.n.size:
        pc = bounds.pairs
        blocks.append(param.rows(pc.n, pc.p) - param.rows(pc.n, pc.q))
        lo.append(bounds.pair_lb)
        hi.append(np.full(pc.n.size, np.inf))
    theta_rows = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, param.n_params))
    if n_aux:
        aux_rows = sp.diags(1.0 / s_aux) @ param.rows(an, ap)
        all_theta = sp.vstack([theta_rows, aux_rows], format="csr")
    else:
        aux_rows, all_theta = None, theta_rows
    used = np.flatnonzero(np.asarray(abs(all_theta).sum(axis=0)).ravel() > 0)
    k = used.size
    group_of_param = np.r_[np.repeat(np.arange(param.G), param.K), np.arange(param.G)]
    s_theta = scales[group_of_param[used]]
    D = sp.diags(s_theta)
    A_theta = _split(sp.csr_matrix(theta_rows[:, used] @ D), n_aux)
    parts = [A_theta]
    if n_aux:
        aux_index = np.full((N, m), -1, dtype=np.int64)
        aux_index[an, ap] = np.arange(n_aux)
        define = sp.hstack([_split(sp.csr_matrix(aux_rows[:, used] @ D)), -sp.identity(n_aux, format="csr")],
                           format="csr")
        parts.append(define)
        lo.append(np.zeros(n_aux))
        hi.append(np.zeros(n_aux))
        a_idx = aux_index[later.sample[later.row], later.pos]
        cols = 2 * k + a_idx
        L = sp.csr_matrix((later.coef * s_aux[a_idx], (later.row, cols)), shape=(later.n_rows, 2 * k + n_aux))
        parts.append(L)
        lo.append(later.lb - later.const)
        hi.append(np.full(later.n_rows, np.inf))
    A = sp.vstack(parts, format="csr")
    col_lo = np.r_[np.zeros(2 * k), bounds.lo[an, ap] / s_aux]
    col_hi = np.r_[np.full(2 * k, np.inf), bounds.hi[an, ap] / s_aux]
    c = np.r_[s_theta, s_theta, np.zeros(n_aux)]
    return LayerLP(LinearProblem(c, A, np.concatenate(lo) if lo else np.zeros(0),
                                 np.concatenate(hi) if hi else np.zeros(0), col_lo, col_hi), used, s_theta)


def paper_lp(network: Network, ref: Reference, t: int, param: Parametrisation, bounds: LayerBounds,
             slack: float, margin: float) -> LayerLP:
    """The paper's single coupled LP for segment t, built as the paper states it: one
    variable per (sample, neuron) of the target layer and of EVERY later layer, equality rows
    ``z^s = W_s x^{s-1} + b_s`` through the fixed patterns, the patterns as bounds and rows on
    those variables, nothing dropped. It has the same optimum as :func:`coupled_lp` (and as the
    per-group LPs when those apply); it is kept as the timing baseline of the benchmark."""
    segs, blocks = ref.segments, ref.blocks
    N, m_t = bounds.lo.shape
    sizes = [m_t] + [blocks[s].z_ref.shape[1] for s in range(t + 1, len(segs))]
    offsets = np.cumsum([0] + [N * s for s in sizes])
    all_theta = param.rows(np.repeat(np.arange(N), m_t), np.tile(np.arange(m_t), N))
    used = np.flatnonzero(np.asarray(abs(all_theta).sum(axis=0)).ravel() > 0)
    k = used.size
    n_z = int(offsets[-1])
    n_cols = 2 * k + n_z
    col_lo = np.r_[np.zeros(2 * k), np.full(n_z, -np.inf)]
    col_hi = np.r_[np.full(2 * k, np.inf), np.full(n_z, np.inf)]
    col_lo[2 * k:2 * k + N * m_t] = bounds.lo.ravel()
    col_hi[2 * k:2 * k + N * m_t] = bounds.hi.ravel()

    def var(level: int, n: np.ndarray, i: np.ndarray) -> np.ndarray:
        return 2 * k + offsets[level] + n * sizes[level] + i

    parts, lo, hi = [], [], []
    r_ids = var(0, np.repeat(np.arange(N), m_t), np.tile(np.arange(m_t), N))
    parts.append(sp.hstack([_split(all_theta[:, used]), sp.csr_matrix((N * m_t, n_z))], format="csr")
                 - sp.csr_matrix((np.ones(N * m_t), (np.arange(N * m_t), r_ids)), shape=(N * m_t, n_cols)))
    lo.append(np.zeros(N * m_t))
    hi.append(np.zeros(N * m_t))

    def pair_rows(level: int, c: Constraints, lb: np.ndarray) -> None:
        pairs = (c.p >= 0) & (c.q >= 0)
        if not pairs.any():
            return
        n_, p_, q_ = c.n[pairs], c.p[pairs], c.q[pairs]
        rows = np.arange(n_.size)
        parts.append(sp.csr_matrix((np.r_[np.ones(n_.size), -np.ones(n_.size)],
                                    (np.r_[rows, rows], np.r_[var(level, n_, p_), var(level, n_, q_)])),
                                   shape=(n_.size, n_cols)))
        lo.append(lb[pairs])
        hi.append(np.full(n_.size, np.inf))

    pair_rows(0, bounds.pairs, bounds.pair_lb)
    for level, s in enumerate(range(t + 1, len(segs)), start=1):
        W, b = network.layers[segs[s].affine].matrix()
        Wc = sp.coo_matrix(W)
        sel = blocks[s - 1].sel                                    # (N, m'_{s-1})
        m_s = sizes[level]
        # z^s[n, i] − Σ_j W[i, j] z^{s-1}[n, sel[n, j]] = b[i]
        n_rep = np.repeat(np.arange(N), Wc.nnz)
        i_rep = np.tile(Wc.row, N)
        j_rep = np.tile(Wc.col, N)
        w_rep = np.tile(Wc.data, N)
        src = sel[n_rep, j_rep]
        ok = src >= 0
        row_ids = n_rep * m_s + i_rep
        eq = sp.csr_matrix((-w_rep[ok], (row_ids[ok], var(level - 1, n_rep[ok], src[ok]))), shape=(N * m_s, n_cols))
        ident = sp.csr_matrix((np.ones(N * m_s), (np.arange(N * m_s),
                                                  var(level, np.repeat(np.arange(N), m_s), np.tile(np.arange(m_s), N)))),
                              shape=(N * m_s, n_cols))
        parts.append(eq + ident)
        lo.append(np.tile(b, N))
        hi.append(np.tile(b, N))
        c = blocks[s].constraints
        lb = c.lp_lower(slack, margin)
        single_p = (c.p >= 0) & (c.q < 0)
        single_q = (c.p < 0) & (c.q >= 0)
        ids_p = var(level, c.n[single_p], c.p[single_p])
        np.maximum.at(col_lo, ids_p, lb[single_p])
        ids_q = var(level, c.n[single_q], c.q[single_q])
        np.minimum.at(col_hi, ids_q, -lb[single_q])
        pair_rows(level, c, lb)
    A = sp.vstack(parts, format="csr")
    c = np.r_[np.ones(2 * k), np.zeros(n_z)]
    return LayerLP(LinearProblem(c, A, np.concatenate(lo), np.concatenate(hi), col_lo, col_hi), used)
