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

Without MaxPool the layer bounds equal :func:`vnnx.bab.crown_layer_bounds` (a test checks it),
at a fraction of the cost on convolutions. Every relaxation is sound for any parameter in
[0, 1], so the result is a sound lower bound whatever the optimiser does. Float64 throughout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import scipy.sparse as sp
import torch

from vnnx.errors import UnsupportedOpError
from vnnx.network import Conv, Dense, MaxPool, Network, Relu

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


class SparseCrown:
    """CROWN / α-CROWN with every neuron refined.

    ``network``: a plain :class:`vnnx.network.Network` of Dense/Conv and ReLU layers, and
    MaxPool where a subclass implements :meth:`relax_pool` (consecutive affine layers are
    merged); anything else raises :class:`UnsupportedOpError`."""

    def __init__(self, network: Network) -> None:
        self.ops: list = []
        # layer_of_op[k]: the index in network.layers whose output is ops[k]'s output
        self.layer_of_op: list[int] = []
        pending = None
        for li, layer in enumerate(network.layers):
            if isinstance(layer, (Dense, Conv)):
                W, b = layer.sparse_matrix()
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

    def pre_activation_bounds(self, x_lower: np.ndarray, x_upper: np.ndarray) -> dict:
        """CROWN bounds ``{layer index: (lower, upper)}`` of every affine output that feeds a
        ReLU, keyed like :class:`vnnx.bounds.BoundsResult.pre_activation` (the index in
        ``network.layers`` of the last affine layer of a merged run)."""
        self.layer_bounds(x_lower, x_upper)
        return self.last_pre_activation

    @property
    def last_pre_activation(self) -> dict:
        """:meth:`pre_activation_bounds` of the last box bounded (by :meth:`bound` too)."""
        return {self.layer_of_op[k]: self._out[k] for k in range(len(self._out))
                if isinstance(self.ops[k], _Affine) and isinstance(self.ops[k + 1], _Relu)}

    # ------------------------------------------------------------------ bounds
    def layer_bounds(self, x_lower: np.ndarray, x_upper: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(lower, upper)`` of the output of every op but the last (``ops[k]``'s output at
        index k), for the input box; the last affine layer is the caller's specification."""
        x_lo = np.asarray(x_lower, dtype=np.float64).ravel()
        x_up = np.asarray(x_upper, dtype=np.float64).ravel()
        if x_lo.size != self.n_inputs or x_up.size != self.n_inputs:
            raise ValueError(f"input box has {x_lo.size} entries, the network takes {self.n_inputs}")
        self._box = (x_lo, x_up)
        out: list[tuple[np.ndarray, np.ndarray]] = []
        self._out = out
        for k, op in enumerate(self.ops[:-1]):
            lo, up = out[k - 1] if k else (x_lo, x_up)
            if isinstance(op, _Relu):
                out.append((np.maximum(lo, 0), np.maximum(up, 0)))
            elif isinstance(op, _Pool):
                lw = np.where(op.valid, lo[op.index], -np.inf).max(axis=1)
                uw = np.where(op.valid, up[op.index], -np.inf).max(axis=1)
                out.append((lw, uw))
            else:
                m = op.W.shape[0]
                lam = sp.vstack([op.W, -op.W]).tocsr()
                const = np.concatenate([op.b, -op.b])
                value = self._lower(lam, const, k)
                lo_k, hi_k = value[:m], -value[m:]
                out.append((lo_k, np.maximum(hi_k, lo_k)))
        return out

    def _in_bounds(self, k: int):
        return self._out[k - 1] if k else self._box

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
                lo, up = self._in_bounds(k)
                low, s, icpt, _ = _relu_lines(lo, up)
                if sp.issparse(lam):
                    lam = lam.tocsr(copy=True)
                    cols, data = lam.indices, lam.data
                    neg = data < 0
                    part = sp.csr_matrix((np.where(neg, data * icpt[cols], 0.0), cols, lam.indptr), shape=lam.shape)
                    const = const + np.asarray(part.sum(axis=1)).ravel()
                    lam.data = np.where(neg, data * s[cols], data * low[cols])
                    lam.eliminate_zeros()
                else:
                    neg = np.minimum(lam, 0)
                    const = const + neg @ icpt
                    lam = np.maximum(lam, 0) * low + neg * s
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
              alpha_iterations: int = 0, lr: float = 0.1) -> np.ndarray:
        """Lower bounds of ``C y`` over the box (``C``: (k, n_out), identity when None); CROWN,
        or α-CROWN on the last pass with ``alpha_iterations > 0``."""
        self.layer_bounds(x_lower, x_upper)
        last = self.ops[-1]
        C = np.eye(last.W.shape[0]) if C is None else np.atleast_2d(np.asarray(C, dtype=np.float64))
        lam = C @ last.W.toarray() if last.W.shape[1] * C.shape[0] <= DENSE_MAX_ENTRIES else sp.csr_matrix(C) @ last.W
        const = C @ last.b
        crown = self._lower(lam, const, len(self.ops) - 1)
        if alpha_iterations <= 0:
            return crown
        return np.maximum(crown, self._alpha(np.asarray(lam.toarray() if sp.issparse(lam) else lam), const,
                                             alpha_iterations, lr))

    # ---------------------------------------------------------------- α-CROWN
    def _sparse_t(self, k: int) -> torch.Tensor:
        if k not in self._torch_wt:
            wt = self.ops[k].W.T.tocoo()
            idx = torch.as_tensor(np.vstack([wt.row, wt.col]), dtype=torch.int64)
            self._torch_wt[k] = torch.sparse_coo_tensor(idx, torch.as_tensor(wt.data), wt.shape, check_invariants=False).coalesce()
        return self._torch_wt[k]

    def _alpha(self, lam0: np.ndarray, const0: np.ndarray, iterations: int, lr: float) -> np.ndarray:
        n_ops = len(self.ops) - 1
        rows = lam0.shape[0]
        params, fixed = {}, {}
        for k in range(n_ops):
            op = self.ops[k]
            if isinstance(op, _Relu):
                lo, up = self._in_bounds(k)
                low, s, icpt, unstable = _relu_lines(lo, up)
                fixed[k] = tuple(torch.as_tensor(a) for a in (low, s, icpt, unstable))
                params[k] = torch.as_tensor(low).expand(rows, -1).clone()
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
                        low, s, icpt, unstable = fixed[k]
                        slope = torch.where(unstable, params[k], low)
                        neg = lam.clamp(max=0)
                        const = const + neg @ icpt
                        lam = lam.clamp(min=0) * slope + neg * s
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
                if it == iterations:
                    break
                opt.zero_grad()
                value.sum().backward()
                opt.step()
            with torch.no_grad():
                for t in leaves:
                    t.clamp_(0, 1)
        return best.numpy()
