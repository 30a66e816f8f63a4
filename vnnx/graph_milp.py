"""The MILP of a :class:`vnnx.graph.Graph`, assembled from each operator's ``milp`` encoding.

Every node gets the columns of its flattened output; linear operators add equality rows (or,
for reshapes and transposes, reuse their input's columns), ReLU and MaxPool the encodings of
:mod:`vnnx.milp` (Tjeng et al. 2019). Node bounds come from :class:`vnnx.engine.GraphEngine`'s
CROWN, intersected with any given (sound) bounds. The result is a :class:`vnnx.milp.MilpEncoding`
whose ``layer_cols[k]`` / ``layer_bounds[k]`` belong to node ``k + 1``, so
:func:`vnnx.milp.verify_milp` decides properties of graphs as it does of chains.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from vnnx.errors import ShapeMismatchError, UnsupportedOpError, VnnxError
from vnnx.milp import GIVEN_BOUND_SLACK, MilpEncoding, _Builder, _relu, maxpool_windows


class Builder(_Builder):
    """:class:`vnnx.milp._Builder` plus the encodings operators call (``relax``: binaries
    continuous in [0, 1])."""

    def __init__(self, relax: bool = False) -> None:
        super().__init__()
        self.relax = relax
        self.binaries: list[np.ndarray] = []
        self._consts: dict[float, int] = {}

    def const_col(self, value: float) -> int:
        value = float(value)
        if value not in self._consts:
            self._consts[value] = int(self.cols(np.array([value]), np.array([value]))[0])
        return self._consts[value]

    def linear(self, op, cols, out_bounds) -> np.ndarray:
        index = op.index_map() if hasattr(op, "index_map") else None
        if index is not None:
            return cols[0][index]
        mats, const = op.sparse_matrices()
        lo, up = out_bounds
        out = self.cols(lo, up)
        n = out.size
        r, c, v = [np.arange(n)], [out], [np.ones(n)]
        for W, ci in zip(mats, cols):
            W = sp.coo_matrix(W)
            r.append(W.row)
            c.append(ci[W.col])
            v.append(-W.data)
        self.rows(np.concatenate(r), np.concatenate(c), np.concatenate(v), const, const)
        return out

    def relu(self, x, bounds, slope: float = 0.0) -> np.ndarray:
        """``max(x, slope x)`` of the columns ``x`` (ReLU: slope 0), with ``bounds`` of x."""
        lo, up = bounds
        z, bins = _relu(self, x, lo, up, self.relax)
        self.binaries.append(bins)
        if slope == 0.0:
            return z
        # max(x, s x) = s x + (1 - s) max(x, 0) for 0 <= s <= 1.
        lo_y = np.minimum(lo, slope * lo)
        up_y = np.maximum(up, slope * up)
        y = self.cols(lo_y, up_y)
        n = y.size
        rr = np.arange(n)
        self.rows(np.concatenate([rr, rr, rr]), np.concatenate([y, x, z]),
                  np.concatenate([np.ones(n), np.full(n, -slope), np.full(n, -(1 - slope))]), np.zeros(n), np.zeros(n))
        return y

    def maxpool(self, op, cols, bounds, out_bounds) -> np.ndarray:
        index, valid = op.window_table()
        lo, up = bounds
        idx = np.where(valid, index, lo.size)
        out, bins = maxpool_windows(self, idx, cols, lo, up, out_bounds[0], out_bounds[1], self.relax)
        self.binaries.append(bins)
        return out


def _engine(graph):
    """The CPU bound engine of ``graph`` for big-M bounds, built once per graph (a branch and
    bound encodes many leaves of one graph)."""
    from vnnx.engine import GraphEngine

    engine = graph.__dict__.get("_milp_engine")
    if engine is None:
        engine = graph.__dict__["_milp_engine"] = GraphEngine(graph)
    return engine


def node_bounds(graph, x_lower: np.ndarray, x_upper: np.ndarray, layer_bounds=None,
                slack: float = GIVEN_BOUND_SLACK) -> list[tuple[np.ndarray, np.ndarray]]:
    """float64 numpy bounds of every node (index = node), CROWN's intersected with the given
    ``{node: (lower, upper)}`` (widened by ``slack``, relative)."""
    lo = torch.as_tensor(np.asarray(x_lower, dtype=np.float64).reshape(1, -1))
    hi = torch.as_tensor(np.asarray(x_upper, dtype=np.float64).reshape(1, -1))
    bounds = _engine(graph).intermediate(lo, hi, "crown")
    out = [(b[0].reshape(-1).numpy().copy(), b[1].reshape(-1).numpy().copy()) for b in bounds]
    for k, given in dict(layer_bounds or {}).items():
        if given is None:
            continue
        k = int(k)
        gl, gu = (np.asarray(v, dtype=np.float64).ravel() for v in given)
        if not 0 < k < len(out) or gl.size != out[k][0].size:
            raise ShapeMismatchError(f"given bounds for node {k} do not fit the graph")
        gl = gl - slack * (1.0 + np.abs(gl))
        gu = gu + slack * (1.0 + np.abs(gu))
        lo_k, up_k = np.maximum(out[k][0], gl), np.minimum(out[k][1], gu)
        if np.any(lo_k > up_k):
            raise VnnxError(f"given bounds of node {k} contradict CROWN's; they are unsound")
        out[k] = (lo_k, up_k)
    return out


def encode_graph(graph, x_lower, x_upper, layer_bounds=None, *, relax: bool = False,
                 bound_slack: float = GIVEN_BOUND_SLACK) -> MilpEncoding:
    """The MILP of ``graph`` over the box (see the module docstring)."""
    if not graph.is_piecewise_linear:
        bad = next(n for n in graph.nodes[1:] if not n.op.piecewise_linear)
        raise UnsupportedOpError(f"node '{bad.name}' ({bad.op.kind}) is not piecewise linear; the MILP "
                                 "encodes piecewise-linear operators only")
    bounds = node_bounds(graph, x_lower, x_upper, layer_bounds, bound_slack)
    b = Builder(relax)
    cols = [b.cols(*bounds[0])]
    for k, node in enumerate(graph.nodes[1:], 1):
        cols.append(np.asarray(node.op.milp(b, [cols[i] for i in node.inputs], [bounds[i] for i in node.inputs],
                                            bounds[k]), dtype=np.int64))
    binaries = np.concatenate(b.binaries) if b.binaries else np.zeros(0, dtype=np.int64)
    problem = b.problem()
    if relax:
        problem.integrality = None
    return MilpEncoding(problem, cols[0], cols[1:], binaries, bounds[1:], relax)
