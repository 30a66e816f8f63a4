"""CROWN and α-CROWN that refine every neuron, on sparse matrices: a cost that does not depend on ε.

auto_LiRPA's CROWN refines only the neurons that IBP leaves unstable, so its time grows with ε.
This engine computes the bounds of every neuron in one fixed pass, on the plain view of a
network (``Dense``/``Conv``, ``ReLU`` and, with a relaxation supplied by a subclass,
``MaxPool``, in any order):

* every affine layer's output bounds come from a CROWN backward pass (Zhang et al. 2018)
  through all the layers before it, with the whole layer as the specification (coefficients
  ``[W; −W]``: lower and upper bound in one pass). Each ReLU gets the triangle upper line and
  the adaptive lower line; each MaxPool window gets the linear bounds
  ``w_lower·x ≤ max x ≤ w_upper·x + b_upper`` of :meth:`SparseCrown.relax_pool` (the CAPM
  plugin supplies its chain-of-ReLUs relaxation). The coefficient matrices are
  ``scipy.sparse`` (a convolution's receptive field is small) until they fill in, then dense;
* a ReLU's output interval is its input interval clamped; a MaxPool's is ``[max l, max u]``;
* the final specification ``C y`` is bounded by the same backward pass (CROWN) or, with
  ``alpha_iterations > 0``, with optimised lower slopes of every unstable ReLU and the pool
  relaxation's own parameters (α-CROWN on the last pass, the CROWN intermediate bounds kept;
  Adam, projected to [0, 1]; the best bound per row is kept, so it is never looser than CROWN).

* ``linear`` (of :meth:`SparseCrown.layer_bounds`) puts chosen ReLU neurons on fixed lines
  ``slope·z + intercept``: the bounds of a network with those ReLUs made affine (a local
  substitute, plugin ``substitute``) without building it; those neurons get interval bounds
  only, and the backward passes run on the other rows.

Without MaxPool the layer bounds equal :func:`vnnx.bab.crown_layer_bounds` (a test checks it),
at a fraction of the cost on convolutions. Every relaxation is sound for any parameter in
[0, 1], so the result is a sound lower bound whatever the optimiser does. Float64 throughout.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch

from vnnx.errors import UnsupportedOpError
from vnnx.network import Conv, Dense, MatrixCache, MaxPool, Network, Relu, layer_matrix

# A coefficient matrix denser than this is handled as a dense array, if it has at most
# DENSE_MAX_ENTRIES entries; one with more than MAX_NNZ non-zeros is refused (memory).
DENSE_FILL = 0.2
DENSE_MAX_ENTRIES = 40_000_000
MAX_NNZ = 150_000_000


@dataclass
class _Affine:
    W: sp.csr_matrix
    b: np.ndarray


@dataclass
class _Relu:
    pass


@dataclass
class PoolRelaxation:
    """Linear bounds of every window's max of one MaxPool: ``Σ_j w_lower[p, j] x[index[p, j]] ≤
    max_p ≤ Σ_j w_upper[p, j] x[index[p, j]] + b_upper[p]`` (padding slots have zero weight).

    ``index`` (P, K) int64; ``w_lower``, ``w_upper`` (R, P, K) and ``b_upper`` (R, P), R = 1 or
    one per specification row; ``params``: the tensors in [0, 1] that α-CROWN may optimise,
    each (1, ...) at their CROWN value (passed back to :meth:`SparseCrown.relax_pool` with the
    leading dimension R)."""

    index: torch.Tensor
    w_lower: torch.Tensor
    w_upper: torch.Tensor
    b_upper: torch.Tensor
    params: tuple = ()


@dataclass
class _Pool:
    index: np.ndarray   # (P, K) flat input index of each window slot (0 where padding)
    valid: np.ndarray   # (P, K) bool
    n_in: int


def _relu_lines(lo: np.ndarray, up: np.ndarray):
    """CROWN lines of ReLU on [lo, up]: lower slope (adaptive), upper slope and upper intercept."""
    active, inactive = lo >= 0, up <= 0
    unstable = ~active & ~inactive
    s = np.where(unstable, up / np.where(unstable, up - lo, 1.0), active.astype(np.float64))
    low = np.where(unstable, (up > -lo).astype(np.float64), active.astype(np.float64))
    icpt = np.where(unstable, -s * lo, 0.0)
    return low, s, icpt, unstable


@dataclass
class _Lines:
    """The linear bounds ``low·z + low_icpt ≤ relu'(z) ≤ s·z + icpt`` of one ReLU op's neurons,
    where relu' is ReLU or, for neurons given to :meth:`SparseCrown.layer_bounds` in
    ``linear``, the exact line ``slope·z + intercept`` (``low = s``, ``low_icpt = icpt``)."""

    low: np.ndarray
    low_icpt: Optional[np.ndarray]   # None: all zero (plain ReLU lines)
    s: np.ndarray
    icpt: np.ndarray
    unstable: np.ndarray


class SparseCrown:
    """CROWN / α-CROWN with every neuron refined.

    ``network``: a plain :class:`vnnx.network.Network` of Dense/Conv and ReLU layers, and
    MaxPool where a subclass implements :meth:`relax_pool` (consecutive affine layers are
    merged); anything else raises :class:`UnsupportedOpError`. ``matrices``: a
    :class:`vnnx.network.MatrixCache` for the layers' sparse matrices, kept by the caller."""

    def __init__(self, network: Network, matrices: Optional[MatrixCache] = None) -> None:
        self.ops: list = []
        # layer_of_op[k]: the index in network.layers whose output is ops[k]'s output
        self.layer_of_op: list[int] = []
        pending = None
        for li, layer in enumerate(network.layers):
            if isinstance(layer, (Dense, Conv)):
                W, b = layer_matrix(layer, matrices, sparse=True)
                pending = (W, b) if pending is None else ((W @ pending[0]).tocsr(), W @ pending[1] + b)
                continue
            if pending is not None:
                self.ops.append(_Affine(*pending))
                self.layer_of_op.append(li - 1)
                pending = None
            self.layer_of_op.append(li)
            if isinstance(layer, Relu):
                self.ops.append(_Relu())
            elif isinstance(layer, MaxPool):
                if type(self).relax_pool is SparseCrown.relax_pool:
                    raise UnsupportedOpError("MaxPool needs a pool relaxation (the capm plugin's SparseCapmCrown)")
                self.ops.append(_Pool(*layer.window_table(), int(np.prod(layer.in_shape))))
            else:
                raise UnsupportedOpError(f"the sparse CROWN engine does not handle {type(layer).__name__} layers")
        if pending is not None:
            self.ops.append(_Affine(*pending))
            self.layer_of_op.append(len(network.layers) - 1)
        if not self.ops or not isinstance(self.ops[-1], _Affine):
            raise UnsupportedOpError("the sparse CROWN engine needs a network that ends in an affine layer")
        self.n_inputs = network.n_inputs
        self._torch_wt: dict[int, torch.Tensor] = {}
        self._out: list[tuple[np.ndarray, np.ndarray]] = []
        self._linear: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # relu_of_layer[k]: the ReLU op fed by the affine op whose last layer is network.layers[k]
        self.relu_of_layer = {self.layer_of_op[r - 1]: r for r, op in enumerate(self.ops)
                              if isinstance(op, _Relu) and r and isinstance(self.ops[r - 1], _Affine)}

    def pre_activation_bounds(self, x_lower: np.ndarray, x_upper: np.ndarray,
                              linear: Optional[dict] = None) -> dict:
        """CROWN bounds ``{layer index: (lower, upper)}`` of every affine output that feeds a
        ReLU, keyed like :class:`vnnx.bounds.BoundsResult.pre_activation` (the index in
        ``network.layers`` of the last affine layer of a merged run). ``linear``: as in
        :meth:`layer_bounds`."""
        self.layer_bounds(x_lower, x_upper, linear)
        return self.last_pre_activation

    @property
    def last_pre_activation(self) -> dict:
        """:meth:`pre_activation_bounds` of the last box bounded (by :meth:`bound` too)."""
        return {self.layer_of_op[k]: self._out[k] for k in range(len(self._out))
                if isinstance(self.ops[k], _Affine) and isinstance(self.ops[k + 1], _Relu)}

    # ------------------------------------------------------------------ bounds
    def layer_bounds(self, x_lower: np.ndarray, x_upper: np.ndarray,
                     linear: Optional[dict] = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(lower, upper)`` of the output of every op but the last (``ops[k]``'s output at
        index k), for the input box; the last affine layer is the caller's specification.

        ``linear``: ``{layer index: (mask, slope, intercept)}``, keyed like
        :meth:`pre_activation_bounds`: the ReLU after that layer is replaced, on the neurons of
        ``mask``, by the line ``slope·z + intercept`` (a network with some ReLUs made affine,
        e.g. a local substitute, bounded without rebuilding it). It stays in force for
        :meth:`bound` on the same box."""
        x_lo = np.asarray(x_lower, dtype=np.float64).ravel()
        x_up = np.asarray(x_upper, dtype=np.float64).ravel()
        if x_lo.size != self.n_inputs or x_up.size != self.n_inputs:
            raise ValueError(f"input box has {x_lo.size} entries, the network takes {self.n_inputs}")
        self._linear = self._linear_ops(linear or {})
        self._box = (x_lo, x_up)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        self._out = out
        for k, op in enumerate(self.ops[:-1]):
            lo, up = out[k - 1] if k else (x_lo, x_up)
            if isinstance(op, _Relu):
                o_lo, o_up = np.maximum(lo, 0), np.maximum(up, 0)
                if k in self._linear:
                    mask, a, c = self._linear[k]
                    o_lo = np.where(mask, np.minimum(a * lo, a * up) + c, o_lo)
                    o_up = np.where(mask, np.maximum(a * lo, a * up) + c, o_up)
                out.append((o_lo, o_up))
            elif isinstance(op, _Pool):
                lw = np.where(op.valid, lo[op.index], -np.inf).max(axis=1)
                uw = np.where(op.valid, up[op.index], -np.inf).max(axis=1)
                out.append((lw, uw))
            else:
                fixed = self._linear.get(k + 1)
                if fixed is None:
                    out.append(self._crown_rows(op, k, None))
                    continue
                # Neurons on fixed lines need no CROWN bound (their lines do not depend on it):
                # they get interval bounds, and the backward pass runs on the others only.
                rows = np.flatnonzero(~fixed[0])
                mid, rad = (lo + up) / 2, (up - lo) / 2
                centre, spread = op.W @ mid + op.b, abs(op.W) @ rad
                lo_k, up_k = centre - spread, centre + spread
                if rows.size:
                    lo_k[rows], up_k[rows] = self._crown_rows(op, k, rows)
                out.append((lo_k, up_k))
        return out

    def _crown_rows(self, op: _Affine, k: int, rows: Optional[np.ndarray]):
        """CROWN bounds of affine op k's outputs (only ``rows`` when given)."""
        W = op.W if rows is None else op.W[rows]
        b = op.b if rows is None else op.b[rows]
        m = W.shape[0]
        value = self._lower(sp.vstack([W, -W]).tocsr(), np.concatenate([b, -b]), k)
        lo_k, hi_k = value[:m], -value[m:]
        return lo_k, np.maximum(hi_k, lo_k)

    def _in_bounds(self, k: int):
        return self._out[k - 1] if k else self._box

    def _linear_ops(self, linear: dict) -> dict:
        ops = {}
        for key, (mask, slope, icpt) in linear.items():
            if key not in self.relu_of_layer:
                raise ValueError(f"layer {key} does not feed a ReLU of this network")
            r = self.relu_of_layer[key]
            n = self.ops[r - 1].W.shape[0]
            mask = np.asarray(mask, dtype=bool).ravel()
            slope = np.broadcast_to(np.asarray(slope, dtype=np.float64).ravel(), (n,))
            icpt = np.broadcast_to(np.asarray(icpt, dtype=np.float64).ravel(), (n,))
            if mask.size != n:
                raise ValueError(f"layer {key}: mask has {mask.size} entries, the layer has {n} neurons")
            if mask.any():
                ops[r] = (mask, np.where(mask, slope, 0.0), np.where(mask, icpt, 0.0))
        return ops

    def _lines(self, k: int) -> _Lines:
        """The linear bounds of ReLU op k's neurons (CROWN's, or the fixed lines)."""
        lo, up = self._in_bounds(k)
        low, s, icpt, unstable = _relu_lines(lo, up)
        if k not in self._linear:
            return _Lines(low, None, s, icpt, unstable)
        mask, a, c = self._linear[k]
        return _Lines(np.where(mask, a, low), np.where(mask, c, 0.0), np.where(mask, a, s),
                      np.where(mask, c, icpt), unstable & ~mask)

    def relax_pool(self, op: "_Pool", lower: torch.Tensor, upper: torch.Tensor,
                   params: Optional[tuple] = None) -> PoolRelaxation:
        """Linear bounds of the windows of ``op`` given its input bounds (flat tensors);
        ``params``: α-CROWN's values of :attr:`PoolRelaxation.params` with a leading dimension
        of one per specification row, or None for the CROWN choice. Supplied by a subclass."""
        raise UnsupportedOpError("MaxPool needs a pool relaxation (the capm plugin's SparseCapmCrown)")

    def _pool_relaxation(self, k: int, params: Optional[tuple] = None) -> PoolRelaxation:
        lo, up = self._in_bounds(k)
        return self.relax_pool(self.ops[k], torch.as_tensor(lo), torch.as_tensor(up), params)

    def _lower(self, lam, const: np.ndarray, upto: int) -> np.ndarray:
        """Lower bound over the box of ``lam · h + const``, ``h`` the output of op ``upto − 1``
        (sparse or dense ``lam``, one row per bound)."""
        for k in reversed(range(upto)):
            op = self.ops[k]
            if sp.issparse(lam):
                size = lam.shape[0] * lam.shape[1]
                if lam.nnz > MAX_NNZ:
                    raise UnsupportedOpError(f"network too large for the sparse CROWN engine "
                                             f"({lam.nnz:,} coefficients at op {k})")
                if lam.nnz > DENSE_FILL * size and size <= DENSE_MAX_ENTRIES:
                    lam = lam.toarray()
            if isinstance(op, _Affine):
                const = const + lam @ op.b
                lam = (lam @ op.W).tocsr() if sp.issparse(lam) else np.asarray((op.W.T @ lam.T).T)
            elif isinstance(op, _Relu):
                ln = self._lines(k)
                low, s, icpt = ln.low, ln.s, ln.icpt
                if sp.issparse(lam):
                    lam = lam.tocsr(copy=True)
                    cols, data = lam.indices, lam.data
                    neg = data < 0
                    add = np.where(neg, data * icpt[cols], 0.0 if ln.low_icpt is None else data * ln.low_icpt[cols])
                    part = sp.csr_matrix((add, cols, lam.indptr), shape=lam.shape)
                    const = const + np.asarray(part.sum(axis=1)).ravel()
                    lam.data = np.where(neg, data * s[cols], data * low[cols])
                    lam.eliminate_zeros()
                else:
                    neg, pos = np.minimum(lam, 0), np.maximum(lam, 0)
                    const = const + neg @ icpt
                    if ln.low_icpt is not None:
                        const = const + pos @ ln.low_icpt
                    lam = pos * low + neg * s
            else:
                rel = self._pool_relaxation(k)
                P, K = rel.index.shape
                rows = np.repeat(np.arange(P), K)
                cols = rel.index.numpy().ravel()
                L = sp.csr_matrix((rel.w_lower.reshape(-1).numpy(), (rows, cols)), shape=(P, op.n_in))
                U = sp.csr_matrix((rel.w_upper.reshape(-1).numpy(), (rows, cols)), shape=(P, op.n_in))
                L.eliminate_zeros()
                U.eliminate_zeros()
                b_up = rel.b_upper.reshape(-1).numpy()
                if sp.issparse(lam):
                    pos, neg = lam.maximum(0).tocsr(), lam.minimum(0).tocsr()
                    const = const + neg @ b_up
                    lam = (pos @ L + neg @ U).tocsr()
                    lam.eliminate_zeros()
                else:
                    pos, neg = np.maximum(lam, 0), np.minimum(lam, 0)
                    const = const + neg @ b_up
                    lam = np.asarray((L.T @ pos.T).T + (U.T @ neg.T).T)
        x_lo, x_up = self._box
        mid, rad = (x_lo + x_up) / 2, (x_up - x_lo) / 2
        if sp.issparse(lam):
            return const + lam @ mid - abs(lam) @ rad
        return const + lam @ mid - np.abs(lam) @ rad

    def bound(self, x_lower: np.ndarray, x_upper: np.ndarray, C: Optional[np.ndarray] = None,
              alpha_iterations: int = 0, lr: float = 0.1, linear: Optional[dict] = None,
              deadline: Optional[float] = None) -> np.ndarray:
        """Lower bounds of ``C y`` over the box (``C``: (k, n_out), identity when None); CROWN,
        or α-CROWN on the last pass with ``alpha_iterations > 0``, whose steps stop at
        ``deadline`` (a ``time.monotonic()`` value; every step's bound is sound); ``linear`` as
        in :meth:`layer_bounds`."""
        self.layer_bounds(x_lower, x_upper, linear)
        last = self.ops[-1]
        C = np.eye(last.W.shape[0]) if C is None else np.atleast_2d(np.asarray(C, dtype=np.float64))
        lam = C @ last.W.toarray() if last.W.shape[1] * C.shape[0] <= DENSE_MAX_ENTRIES else sp.csr_matrix(C) @ last.W
        const = C @ last.b
        crown = self._lower(lam, const, len(self.ops) - 1)
        if alpha_iterations <= 0:
            return crown
        return np.maximum(crown, self._alpha(np.asarray(lam.toarray() if sp.issparse(lam) else lam), const,
                                             alpha_iterations, lr, deadline))

    # ---------------------------------------------------------------- α-CROWN
    def _sparse_t(self, k: int) -> torch.Tensor:
        if k not in self._torch_wt:
            wt = self.ops[k].W.T.tocoo()
            idx = torch.as_tensor(np.vstack([wt.row, wt.col]), dtype=torch.int64)
            self._torch_wt[k] = torch.sparse_coo_tensor(idx, torch.as_tensor(wt.data), wt.shape, check_invariants=False).coalesce()
        return self._torch_wt[k]

    def _alpha(self, lam0: np.ndarray, const0: np.ndarray, iterations: int, lr: float,
               deadline: Optional[float] = None) -> np.ndarray:
        n_ops = len(self.ops) - 1
        rows = lam0.shape[0]
        params, fixed = {}, {}
        for k in range(n_ops):
            op = self.ops[k]
            if isinstance(op, _Relu):
                ln = self._lines(k)
                low_icpt = np.zeros_like(ln.low) if ln.low_icpt is None else ln.low_icpt
                fixed[k] = tuple(torch.as_tensor(a) for a in (ln.low, low_icpt, ln.s, ln.icpt, ln.unstable))
                params[k] = torch.as_tensor(ln.low).expand(rows, -1).clone()
            elif isinstance(op, _Pool):
                rel = self._pool_relaxation(k)
                params[k] = tuple(p.expand(rows, *p.shape[1:]).clone() for p in rel.params)
        leaves = []
        for v in params.values():
            leaves += list(v) if isinstance(v, tuple) else [v]
        for t in leaves:
            t.requires_grad_(True)
        opt = torch.optim.Adam(leaves, lr=lr, maximize=True)
        x_lo, x_up = (torch.as_tensor(t) for t in self._box)
        mid, rad = (x_lo + x_up) / 2, (x_up - x_lo) / 2
        best = torch.full((rows,), -np.inf, dtype=torch.float64)
        for it in range(iterations + 1):
            with torch.enable_grad():
                lam = torch.as_tensor(lam0)
                const = torch.as_tensor(const0)
                for k in reversed(range(n_ops)):
                    op = self.ops[k]
                    if isinstance(op, _Affine):
                        const = const + lam @ torch.as_tensor(op.b)
                        lam = torch.sparse.mm(self._sparse_t(k), lam.T).T
                    elif isinstance(op, _Relu):
                        low, low_icpt, s, icpt, unstable = fixed[k]
                        slope = torch.where(unstable, params[k], low)
                        neg, pos = lam.clamp(max=0), lam.clamp(min=0)
                        const = const + neg @ icpt + pos @ low_icpt
                        lam = pos * slope + neg * s
                    else:
                        rel = self._pool_relaxation(k, params[k])
                        P, K = rel.index.shape
                        w_lo = rel.w_lower.expand(rows, P, K)
                        w_up = rel.w_upper.expand(rows, P, K)
                        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
                        const = const + (neg * rel.b_upper.expand(rows, P)).sum(-1)
                        contrib = pos.unsqueeze(-1) * w_lo + neg.unsqueeze(-1) * w_up
                        lam = torch.zeros(rows, op.n_in, dtype=contrib.dtype).scatter_add(
                            1, rel.index.reshape(1, -1).expand(rows, -1), contrib.reshape(rows, -1))
                value = const + lam @ mid - lam.abs() @ rad
                best = torch.maximum(best, value.detach())
                if it == iterations or (deadline is not None and time.monotonic() > deadline):
                    break
                opt.zero_grad()
                value.sum().backward()
                opt.step()
            with torch.no_grad():
                for t in leaves:
                    t.clamp_(0, 1)
        return best.numpy()
