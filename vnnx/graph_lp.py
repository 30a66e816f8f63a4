"""LP bound tightening on a :class:`vnnx.graph.Graph` (Tjeng, Xiao & Tedrake, ICLR 2019, §4.1).

Every node read by a ReLU or MaxPool gets its entries that the relaxation depends on (the
operator's ``needs_tight_input``: unstable ReLU inputs, the cells of undecided MaxPool windows)
minimised and maximised over the LP relaxation of the MILP of :mod:`vnnx.graph_milp` (each
operator's ``milp`` encoding with binaries relaxed to [0, 1]), in topological order, so that
each LP uses the already-tightened bounds of the nodes before it.

Why the bounds stay sound:

* only the node's ancestors are encoded; every true execution satisfies their constraints (each
  node's column bounds are sound bounds of it), so the LP's feasible set contains every value
  the node takes over the input box;
* the new bound is the solver's safe dual bound (:func:`vnnx.solvers.base.safe_lp_bound`),
  valid whatever the solver's tolerances, and it is intersected with the old one;
* the nodes after a tightened one are re-derived by each operator's ``interval`` rule from the
  tightened bounds, intersected with what they had (never looser);
* past ``time_limit`` the loop stops and returns the bounds as they are (sound, only partly
  tightened).
"""
from __future__ import annotations

import time
from typing import Mapping, Optional

import numpy as np
import torch

from vnnx.errors import UnsupportedOpError
from vnnx.graph import Graph
from vnnx.graph_milp import Builder, node_bounds as crown_node_bounds
from vnnx.solvers import open_session

Bounds = tuple[np.ndarray, np.ndarray]


def tighten_bounds_lp(graph: Graph, x_lower: np.ndarray, x_upper: np.ndarray,
                      node_bounds: Optional[Mapping[int, Bounds]] = None, time_limit: Optional[float] = None,
                      backend: str = "highs") -> list[Bounds]:
    """LP-tightened float64 bounds of every node of ``graph`` over the box ``x_lower <= x <=
    x_upper`` (each (n_inputs,)).

    Starts from the engine's CROWN bounds intersected with the sound ``node_bounds`` ``{node:
    (lower, upper)}`` (flattened; widened by :data:`vnnx.milp.GIVEN_BOUND_SLACK` for the LPs,
    as :func:`vnnx.graph_milp.node_bounds` does), so the result is never looser than CROWN nor
    than ``node_bounds``. ``time_limit`` (s): when it runs out the remaining bounds are returned
    as they are (still sound). Returns one flattened ``(lower, upper)`` per node (index =
    node, 0 the input box). Raises :class:`UnsupportedOpError` for graphs that are not
    piecewise linear.

    Example: ``bounds = tighten_bounds_lp(net.to_graph(), lo, hi, time_limit=10)``.
    """
    if not graph.is_piecewise_linear:
        bad = next(n for n in graph.nodes[1:] if not n.op.piecewise_linear)
        raise UnsupportedOpError(f"node '{bad.name}' ({bad.op.kind}) is not piecewise linear; LP tightening "
                                 "encodes piecewise-linear operators only")
    from vnnx.engine import exact_interval_nodes

    deadline = None if time_limit is None else time.perf_counter() + float(time_limit)
    bounds = [(lo.copy(), up.copy()) for lo, up in crown_node_bounds(graph, x_lower, x_upper, node_bounds)]
    exact = exact_interval_nodes(graph)
    for k in graph.nonlinear_inputs():
        if k in exact:
            continue    # the interval bounds are already the exact range of each entry
        entries = _entries_to_tighten(graph, k, bounds[k])
        if entries.size == 0:
            continue
        timed_out = _tighten_node(graph, k, entries, bounds, deadline, backend)
        _reinterval(graph, bounds, k)
        if timed_out:
            break
    # The given bounds were widened for the LPs; the contract is "never looser than given".
    for k, given in dict(node_bounds or {}).items():
        if given is not None:
            gl, gu = (np.asarray(v, dtype=np.float64).ravel() for v in given)
            lo, up = np.maximum(bounds[int(k)][0], gl), np.minimum(bounds[int(k)][1], gu)
            bounds[int(k)] = (lo, np.maximum(up, lo))
    return bounds


def _entries_to_tighten(graph: Graph, k: int, bounds: Bounds) -> np.ndarray:
    """Flat indices of node ``k``'s entries whose bounds shape a consumer's relaxation."""
    lo, hi = (torch.as_tensor(b).reshape((1,) + graph.nodes[k].shape) for b in bounds)
    need = None
    for j in graph.consumers(k):
        m = graph.nodes[j].op.needs_tight_input(lo, hi)
        if m is not None:
            need = m if need is None else need | m
    if need is None:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(need.reshape(-1).numpy())


def _encode_ancestors(graph: Graph, k: int, bounds: list[Bounds]):
    """The LP relaxation of node ``k`` and its ancestors; returns (problem, columns of node k)."""
    b = Builder(relax=True)
    cols: dict[int, np.ndarray] = {0: b.cols(*bounds[0])}
    for j in sorted(graph.ancestors(k) - {0}):
        node = graph.nodes[j]
        cols[j] = np.asarray(node.op.milp(b, [cols[i] for i in node.inputs], [bounds[i] for i in node.inputs],
                                          bounds[j]), dtype=np.int64)
    problem = b.problem()
    problem.integrality = None
    return problem, cols[k]


def _tighten_node(graph: Graph, k: int, entries: np.ndarray, bounds: list[Bounds],
                  deadline: Optional[float], backend: str) -> bool:
    """Minimise and maximise each of ``entries`` of node ``k`` over one warm-started LP session;
    updates ``bounds[k]`` in place. Returns whether the deadline passed."""
    problem, cols = _encode_ancestors(graph, k, bounds)
    session = open_session(problem, backend=backend)
    lo, up = bounds[k]
    cost = np.zeros(problem.n_cols)
    timed_out = False
    for i in entries:
        for maximize in (False, True):
            remaining = None if deadline is None else deadline - time.perf_counter()
            if remaining is not None and remaining <= 0:
                timed_out = True
                break
            cost[cols[i]] = 1.0
            session.set_objective(cost, maximize=maximize)
            cost[cols[i]] = 0.0
            sol = session.solve(remaining)
            if sol.status != "optimal" or sol.bound is None or not np.isfinite(sol.bound):
                continue
            if maximize:
                up[i] = min(up[i], sol.bound)
            else:
                lo[i] = max(lo[i], sol.bound)
        if timed_out:
            break
    # Both bounds are sound, so they cross only by round-off when the range is a single point.
    up[:] = np.maximum(up, lo)
    return timed_out


def _reinterval(graph: Graph, bounds: list[Bounds], k: int) -> None:
    """Every node after ``k`` by its operator's interval rule, intersected with its current
    bounds (never looser)."""
    def tensor(i: int):
        shape = (1,) + graph.nodes[i].shape
        return tuple(torch.as_tensor(b).reshape(shape) for b in bounds[i])

    with torch.no_grad():
        for j in range(k + 1, len(graph.nodes)):
            node = graph.nodes[j]
            plo, pup = node.op.interval(*(tensor(i) for i in node.inputs))
            lo = np.maximum(bounds[j][0], plo.reshape(-1).numpy())
            up = np.minimum(bounds[j][1], pup.reshape(-1).numpy())
            bounds[j] = (lo, np.maximum(up, lo))
