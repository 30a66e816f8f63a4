"""The MILP encoding of a piecewise-linear network (Tjeng, Xiao & Tedrake, ICLR 2019).

The network is a bound graph (:mod:`vnnx.graph`; a layer chain :class:`vnnx.network.Network`
is encoded through its ``to_graph()``, with bounds and columns keyed by layer). Every node gets
continuous columns bounded by the engine's CROWN bounds (:mod:`vnnx.graph_milp` assembles them
from each operator's ``milp``). Linear operators are equality rows. A ReLU ``y = max(x, 0)`` whose
pre-activation bounds ``[l, u]`` straddle 0 gets one binary ``a`` (Tjeng et al., eq. 5)::

    y >= x,  y >= 0,  y <= x - l (1 - a),  y <= u a

while stable ReLUs need none (``l >= 0``: ``y`` is ``x``; ``u <= 0``: ``y`` is 0). A MaxPool
window ``y = max_i x_i`` (Tjeng et al., eq. 6, with an exact M for inputs of any sign) keeps
only the inputs that can win (``u_i >= max_j l_j``), one binary ``a_i`` each::

    y >= x_i,  y <= x_i + (u_max - l_i)(1 - a_i),  sum_i a_i = 1

and a window with one possible winner is the identity.

:func:`verify_milp` decides a VNN-LIB property and :func:`output_range` gives the exact range
of ``c @ y``; :func:`vnnx.graph_lp.tighten_bounds_lp` tightens the bounds with LP relaxations of
this same encoding (Tjeng et al., §4.1), which shrinks the big-M constants and the number of
unstable ReLUs (``verify_milp(tighten=True)``).

Float tolerances, and why the answers stay sound:

* 'unsat' needs, for every clause, a proven lower bound on the violation margin
  ``t = max_i (A y - b)_i`` above ``unsat_tol * max(1, |t|-scale)``: either interval arithmetic
  on the output bounds, or the MILP solver's dual bound (status optimal or early-stopped on
  that bound). Solver tolerances (integrality 1e-6, feasibility 1e-7) relax the encoding,
  which can only lower the dual bound; the margin absorbs round-off in the bound itself.
* 'sat' needs a point ``x`` in the box whose float64 forward pass really violates the clause
  (``t <= 0``). The solver's point is clipped to the box, re-evaluated, and polished by an LP
  with the binaries fixed (the network is linear on that activation pattern), so that a
  violation produced only by solver tolerances is not reported. The caller still re-checks
  the point on the original float32 model.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import scipy.sparse as sp

from vnnx.errors import ShapeMismatchError, SolverError, VnnxError
from vnnx.solvers import LinearProblem, Solution, open_session, solve

Bounds = tuple[np.ndarray, np.ndarray]

# Externally supplied bounds (e.g. CROWN run in float32) are widened by this relative amount
# before use, so that float32 round-off in them cannot cut off true float64 values.
GIVEN_BOUND_SLACK = 1e-6


@dataclass
class MilpEncoding:
    """The network as a :class:`LinearProblem` with a zero objective.

    ``layer_cols[k]``: the column index of each (flattened) output of node ``k + 1`` of a graph,
    or of ``layers[k]`` of a layer chain (a column can be shared: an active ReLU reuses its input column, inactive ones share a
    column fixed at 0). ``input_cols``: (n_inputs,). ``binary_cols``: the integer columns
    (continuous in [0, 1] when encoded with ``relax=True``). ``layer_bounds``: the bounds used.
    """

    problem: LinearProblem
    input_cols: np.ndarray
    layer_cols: list[np.ndarray]
    binary_cols: np.ndarray
    layer_bounds: list[Bounds]
    relaxed: bool = False

    @property
    def output_cols(self) -> np.ndarray:
        return self.layer_cols[-1] if self.layer_cols else self.input_cols

    @property
    def n_binaries(self) -> int:
        return int(self.binary_cols.size)

    def objective(self, c: np.ndarray) -> np.ndarray:
        """Full-length cost vector for ``c @ y`` on the last encoded layer; ``c``: (n_out,)."""
        cost = np.zeros(self.problem.n_cols)
        np.add.at(cost, self.output_cols, np.asarray(c, dtype=np.float64))
        return cost


@dataclass
class MilpResult:
    """Outcome of :func:`verify_milp`.

    ``status``: 'sat' (``x`` (n_inputs,) is a counterexample in float64, ``y`` (n_outputs,)
    its float64 output; re-check on the real model), 'unsat' (proven), 'timeout', 'unknown'.
    ``seconds``: wall-clock time. ``n_binaries``: binaries in the encoding.
    """

    status: str
    x: np.ndarray | None
    y: np.ndarray | None
    seconds: float
    n_binaries: int
    message: str = ""


class _Builder:
    """Accumulates columns and row blocks as arrays; one sparse matrix at the end."""

    def __init__(self) -> None:
        self.n = 0
        self.m = 0
        self._col_lo: list[np.ndarray] = []
        self._col_hi: list[np.ndarray] = []
        self._col_int: list[np.ndarray] = []
        self._r: list[np.ndarray] = []
        self._c: list[np.ndarray] = []
        self._v: list[np.ndarray] = []
        self._row_lo: list[np.ndarray] = []
        self._row_hi: list[np.ndarray] = []
        self._zero: int | None = None

    def cols(self, lower: np.ndarray, upper: np.ndarray, integer: bool = False) -> np.ndarray:
        lower = np.asarray(lower, dtype=np.float64).ravel()
        upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), lower.shape).ravel()
        idx = np.arange(self.n, self.n + lower.size)
        self.n += lower.size
        self._col_lo.append(lower)
        self._col_hi.append(upper.copy())
        self._col_int.append(np.full(lower.size, integer))
        return idx

    def zero_col(self) -> int:
        if self._zero is None:
            self._zero = int(self.cols(np.zeros(1), np.zeros(1))[0])
        return self._zero

    def rows(self, r: np.ndarray, c: np.ndarray, v: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Rows ``lower <= sum v x[c] <= upper``; ``r`` numbers the new rows from 0."""
        k = np.asarray(lower).size
        self._r.append(np.asarray(r, dtype=np.int64) + self.m)
        self._c.append(np.asarray(c, dtype=np.int64))
        self._v.append(np.asarray(v, dtype=np.float64))
        self._row_lo.append(np.asarray(lower, dtype=np.float64).ravel())
        self._row_hi.append(np.broadcast_to(np.asarray(upper, dtype=np.float64), (k,)).ravel())
        self.m += k

    def problem(self) -> LinearProblem:
        cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))
        A = sp.csr_matrix((cat(self._v, np.float64), (cat(self._r, np.int64), cat(self._c, np.int64))),
                          shape=(self.m, self.n))
        A.sum_duplicates()
        A.eliminate_zeros()
        return LinearProblem(np.zeros(self.n), A, cat(self._row_lo, np.float64), cat(self._row_hi, np.float64),
                             cat(self._col_lo, np.float64), cat(self._col_hi, np.float64), cat(self._col_int, bool))


def _relu(b: _Builder, cols: np.ndarray, lo: np.ndarray, up: np.ndarray, relax: bool) -> tuple[np.ndarray, np.ndarray]:
    out = cols.copy()
    if np.any(up <= 0):
        out[up <= 0] = b.zero_col()
    unstable = np.flatnonzero((lo < 0) & (up > 0))
    if unstable.size == 0:
        return out, np.zeros(0, dtype=np.int64)
    l, u, x = lo[unstable], up[unstable], cols[unstable]
    k = unstable.size
    y = b.cols(np.zeros(k), u)
    a = b.cols(np.zeros(k), np.ones(k), integer=not relax)
    rr = np.arange(k)
    # y - x >= 0
    b.rows(np.concatenate([rr, rr]), np.concatenate([y, x]), np.concatenate([np.ones(k), -np.ones(k)]),
           np.zeros(k), np.inf)
    # y - x - l a <= -l   (y <= x - l (1 - a))
    b.rows(np.concatenate([rr, rr, rr]), np.concatenate([y, x, a]),
           np.concatenate([np.ones(k), -np.ones(k), -l]), np.full(k, -np.inf), -l)
    # y - u a <= 0
    b.rows(np.concatenate([rr, rr]), np.concatenate([y, a]), np.concatenate([np.ones(k), -u]),
           np.full(k, -np.inf), np.zeros(k))
    out[unstable] = y
    return out, a


def maxpool_windows(b: _Builder, idx: np.ndarray, cols: np.ndarray, lo: np.ndarray, up: np.ndarray,
                    out_lo: np.ndarray, out_up: np.ndarray, relax: bool) -> tuple[np.ndarray, np.ndarray]:
    """The MaxPool encoding over windows ``idx`` (n_out, k) of input indices, ``lo.size`` in
    the slots of short (padded) windows."""
    n_in = lo.size
    lo_p, up_p = np.append(lo, -np.inf), np.append(up, -np.inf)
    l_max = lo_p[idx].max(axis=1)
    # Input i can be the max only if u_i >= max_j l_j; the others are dominated.
    can_win = (idx < n_in) & (up_p[idx] >= l_max[:, None])
    n_cand = can_win.sum(axis=1)
    out = np.empty(idx.shape[0], dtype=np.int64)
    single = np.flatnonzero(n_cand == 1)
    out[single] = cols[idx[single, np.argmax(can_win[single], axis=1)]]
    multi = np.flatnonzero(n_cand > 1)
    if multi.size == 0:
        return out, np.zeros(0, dtype=np.int64)
    y = b.cols(out_lo[multi], out_up[multi])
    out[multi] = y
    rs, cs, vs, rhs_ge, rs2, cs2, vs2, rhs_le, sum_r, sum_c = [], [], [], [], [], [], [], [], [], []
    a_all = []
    n_ge = n_sum = 0
    for w, yw in zip(multi, y):
        cand = idx[w, can_win[w]]
        k = cand.size
        a = b.cols(np.zeros(k), np.ones(k), integer=not relax)
        a_all.append(a)
        u_max = up[cand].max()
        m_big = u_max - lo[cand]
        x = cols[cand]
        rr = np.arange(n_ge, n_ge + k)
        # y - x_i >= 0
        rs.append(np.concatenate([rr, rr])); cs.append(np.concatenate([np.full(k, yw), x]))
        vs.append(np.concatenate([np.ones(k), -np.ones(k)]))
        # y - x_i + M_i a_i <= M_i
        rs2.append(np.concatenate([rr, rr, rr])); cs2.append(np.concatenate([np.full(k, yw), x, a]))
        vs2.append(np.concatenate([np.ones(k), -np.ones(k), m_big])); rhs_le.append(m_big)
        sum_r.append(np.full(k, n_sum)); sum_c.append(a)
        n_ge += k
        n_sum += 1
    b.rows(np.concatenate(rs), np.concatenate(cs), np.concatenate(vs), np.zeros(n_ge), np.inf)
    b.rows(np.concatenate(rs2), np.concatenate(cs2), np.concatenate(vs2), np.full(n_ge, -np.inf),
           np.concatenate(rhs_le))
    sum_c_all = np.concatenate(sum_c)
    b.rows(np.concatenate(sum_r), sum_c_all, np.ones(sum_c_all.size), np.ones(n_sum), np.ones(n_sum))
    return out, np.concatenate(a_all)


# --------------------------------------------------------------------------------------------
# Encoding and queries


def check_box(model, x_lower: np.ndarray, x_upper: np.ndarray) -> Bounds:
    """Validate an input box for ``model`` (anything with ``n_inputs``); return it flattened
    as float64 arrays."""
    lower = np.asarray(x_lower, dtype=np.float64).ravel()
    upper = np.asarray(x_upper, dtype=np.float64).ravel()
    if lower.size != model.n_inputs or upper.size != model.n_inputs:
        raise ShapeMismatchError(f"input box has {lower.size}/{upper.size} entries, network expects {model.n_inputs}")
    if not (np.all(np.isfinite(lower)) and np.all(np.isfinite(upper))):
        raise VnnxError("input box has non-finite bounds")
    bad = np.flatnonzero(lower > upper)
    if bad.size:
        i = int(bad[0])
        raise VnnxError(f"empty input box: lower[{i}] = {lower[i]} > upper[{i}] = {upper[i]}")
    return lower, upper


def as_graph(model, layer_bounds=None):
    """``(graph, node bounds, layer nodes)``: ``model`` as a bound graph and ``layer_bounds`` keyed
    by its nodes. A graph passes through (its bounds are node-keyed already, layer nodes None); a
    layer chain becomes ``model.to_graph()``, its ``layer_bounds`` (a list with one ``(lower,
    upper)`` or None per layer, or a dict ``{layer: (lower, upper)}`` as
    ``BoundsResult.pre_activation``) re-keyed by the layers' nodes."""
    if not hasattr(model, "to_graph"):
        return model, layer_bounds, None
    graph = model.to_graph()
    nodes = graph.layer_nodes
    if layer_bounds is None:
        return graph, None, nodes
    if isinstance(layer_bounds, Mapping):
        items = [(int(k), v) for k, v in layer_bounds.items()]
    else:
        items = list(enumerate(layer_bounds))
        if len(items) != len(nodes):
            raise ShapeMismatchError(f"layer_bounds has {len(items)} entries for {len(nodes)} layers")
    bad = [k for k, _ in items if not 0 <= k < len(nodes)]
    if bad:
        raise ShapeMismatchError(f"layer_bounds names layer {bad[0]}; the network has {len(nodes)} layers")
    return graph, {nodes[k]: v for k, v in items if v is not None}, nodes


def encode(model, x_lower: np.ndarray, x_upper: np.ndarray, layer_bounds=None, *,
           relax: bool = False, bound_slack: float = GIVEN_BOUND_SLACK) -> MilpEncoding:
    """Encode ``model`` (a graph or a layer chain, :func:`as_graph`) over the input box.

    ``layer_bounds``: sound bounds to intersect with CROWN's (keyed by node for a graph, by layer
    for a chain), widened by ``bound_slack`` (relative, :data:`GIVEN_BOUND_SLACK`; 0 for bounds
    vnnx computed itself). ``relax``: binaries become continuous in [0, 1] (the LP relaxation).
    For a chain, ``layer_cols`` / ``layer_bounds`` of the result are per layer. Raises
    :class:`UnsupportedOpError` for operators that are not piecewise linear (Sigmoid, Tanh)."""
    from vnnx.graph_milp import encode_graph

    graph, given, nodes = as_graph(model, layer_bounds)
    x_lower, x_upper = check_box(graph, x_lower, x_upper)
    enc = encode_graph(graph, x_lower, x_upper, given, relax=relax, bound_slack=bound_slack)
    if nodes is not None:
        enc.layer_cols = [enc.layer_cols[k - 1] for k in nodes]
        enc.layer_bounds = [enc.layer_bounds[k - 1] for k in nodes]
    return enc


def output_range(network, x_lower: np.ndarray, x_upper: np.ndarray, c: np.ndarray,
                 layer_bounds=None, time_limit: float | None = None,
                 backend: str = "highs") -> tuple[float, float]:
    """Exact ``(min, max)`` of ``c @ y`` over the input box, ``c``: (n_outputs,).

    Both MILPs are solved to a zero relative gap; the returned numbers are the solver's proven
    bounds (min: lower bound, max: upper bound), so they enclose the true range up to solver
    tolerances (absolute gap 1e-6). ``time_limit`` (s) is shared by the two solves. Raises
    :class:`SolverError` when either is not solved to optimality.
    """
    start = time.perf_counter()
    network, layer_bounds, _ = as_graph(network, layer_bounds)
    c = np.asarray(c, dtype=np.float64).ravel()
    if c.size != network.n_outputs:
        raise ShapeMismatchError(f"output_range: c has {c.size} entries, network has {network.n_outputs} outputs")
    enc = encode(network, x_lower, x_upper, layer_bounds)
    session = open_session(enc.problem, backend=backend)
    cost = enc.objective(c)
    result = []
    for maximize in (False, True):
        remaining = None if time_limit is None else max(0.0, float(time_limit) - (time.perf_counter() - start))
        session.set_objective(cost, maximize=maximize)
        sol = session.solve(remaining, mip_rel_gap=0.0)
        if sol.status != "optimal" or sol.bound is None:
            raise SolverError(f"output_range: {'max' if maximize else 'min'} of c @ y not solved to optimality "
                              f"({sol.status}{': ' + sol.message if sol.message else ''}; "
                              f"{enc.n_binaries} binaries)")
        result.append(float(sol.bound))
    return result[0], result[1]


def verify_milp(network, prop, layer_bounds=None, time_limit: float | None = None,
                backend: str = "highs", *, tighten: bool = False, unsat_tol: float = 1e-6) -> MilpResult:
    """Decide one property with the MILP (Tjeng et al. 2019).

    ``prop`` has ``x_lower``, ``x_upper`` (n_inputs,) and ``clauses``: a list of ``(A, b)``,
    ``A``: (k, n_outputs); the property is violated iff some clause has ``A y <= b`` for some
    ``x`` in the box. For each clause the MILP minimises ``t`` s.t. ``A y - b <= t``, stopping
    early as soon as ``t <= 0`` is found or ``t > 0`` is proven; ``time_limit`` (s) is shared by
    all clauses (and the optional LP tightening, ``tighten=True``).

    Returns 'sat' with a float64-verified counterexample, 'unsat' when every clause is proven
    (see the module notes on tolerances; ``unsat_tol`` is relative to the clause's scale),
    'timeout' when the time ran out first, else 'unknown'.
    """
    start = time.perf_counter()
    deadline = None if time_limit is None else start + float(time_limit)
    network, layer_bounds, _ = as_graph(network, layer_bounds)
    x_lower, x_upper = check_box(network, prop.x_lower, prop.x_upper)
    clauses = [(np.atleast_2d(np.asarray(A, dtype=np.float64)), np.asarray(b_, dtype=np.float64).ravel())
               for A, b_ in prop.clauses]
    for j, (A, b_) in enumerate(clauses):
        if A.shape[1] != network.n_outputs or A.shape[0] != b_.size:
            raise ShapeMismatchError(f"clause {j}: A {A.shape} and b {b_.shape} do not fit {network.n_outputs} outputs")

    def elapsed() -> float:
        return time.perf_counter() - start

    def result(status: str, x=None, y=None, n_bin: int = 0, message: str = "") -> MilpResult:
        return MilpResult(status, x, y, elapsed(), n_bin, message)

    # A free check of the box centre: a real counterexample needs no solver.
    centre = (x_lower + x_upper) / 2
    y_centre = network.forward(centre[None])[0]
    margins = [_margin(A, b_, y_centre) for A, b_ in clauses]
    for j in np.argsort(margins, kind="stable"):
        if margins[j] <= 0:
            return result("sat", centre, y_centre, 0, f"box centre violates clause {j}")

    slack = GIVEN_BOUND_SLACK
    if tighten:
        from vnnx.graph_lp import tighten_bounds_lp

        tight = tighten_bounds_lp(network, x_lower, x_upper, layer_bounds,
                                  None if deadline is None else max(0.0, deadline - time.perf_counter()), backend)
        layer_bounds = dict(enumerate(tight[1:], 1))
        slack = 0.0
    enc = encode(network, x_lower, x_upper, layer_bounds, bound_slack=slack)
    # The capped clause MILPs below read 'infeasible' as 'proven'. That is only sound when the
    # uncapped encoding is feasible, which holds when the box centre's activations lie inside
    # every layer's bounds (then the centre, with its activations, is a feasible point).
    encoding_ok = _inside_bounds(network, centre, enc.layer_bounds)
    out_lo, out_up = enc.layer_bounds[-1] if enc.layer_bounds else (x_lower, x_upper)
    notes: list[str] = []
    proven, timed_out = 0, False
    # Most nearly violated clauses first (at the centre): the likeliest to give 'sat' fast.
    for j in np.argsort(margins, kind="stable"):
        A, b_ = clauses[j]
        t_lo, t_hi = _margin_bounds(A, b_, out_lo, out_up)
        tol = unsat_tol * max(1.0, abs(t_lo), abs(t_hi))
        if t_lo > tol:
            proven += 1
            continue
        remaining = None if deadline is None else deadline - time.perf_counter()
        if remaining is not None and remaining <= 0:
            timed_out = True
            notes.append(f"clause {j}: no time left")
            continue
        # t is capped at tol: the MILP then only has to find a violation or prove there is
        # none ('infeasible'), which prunes every node whose bound exceeds tol (on MNIST MLPs
        # this is 10x faster than minimising t to optimality).
        problem = _clause_problem(enc, A, b_, t_cap=tol)
        sol = solve(problem, remaining, backend=backend, target=0.0)
        if sol.x is not None and sol.objective is not None and sol.objective <= 0:
            x, y, t = _counterexample(network, problem, enc, sol, A, b_, x_lower, x_upper, backend)
            if t <= 0:
                return result("sat", x, y, enc.n_binaries, f"clause {j} violated by {-t:.3g} (float64)")
            notes.append(f"clause {j}: solver point has t = {sol.objective:.3g} but float64 re-evaluation "
                         f"gives {t:.3g}")
            continue
        if sol.status in ("optimal", "stopped", "time_limit") and sol.bound is not None and sol.bound > tol:
            proven += 1
            continue
        if sol.status == "infeasible" and encoding_ok:
            proven += 1                          # no point with t <= tol (the encoding itself is feasible)
            continue
        if sol.status == "time_limit":
            timed_out = True
            notes.append(f"clause {j}: time limit (bound {sol.bound})")
        elif sol.status == "infeasible":
            notes.append(f"clause {j}: infeasible, but the box centre lies outside the layer bounds "
                         "(unsound layer_bounds?), so this proves nothing")
        else:
            notes.append(f"clause {j}: {sol.status}, t in [{sol.bound}, {sol.objective}] {sol.message}".rstrip())
    if proven == len(clauses):
        return result("unsat", n_bin=enc.n_binaries, message=f"{proven} clause(s) proven")
    return result("timeout" if timed_out else "unknown", n_bin=enc.n_binaries, message="; ".join(notes))


def _margin(A: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """``t = max_i (A y - b)_i``: <= 0 iff ``y`` satisfies the clause (−inf for no rows)."""
    return float(np.max(A @ y - b)) if A.shape[0] else -np.inf


def _margin_bounds(A: np.ndarray, b: np.ndarray, lo: np.ndarray, up: np.ndarray) -> tuple[float, float]:
    """Interval bounds of ``t = max_i (A y - b)_i`` for ``y`` in ``[lo, up]``."""
    if A.shape[0] == 0:
        return -np.inf, -np.inf
    Ap, An = np.maximum(A, 0.0), np.minimum(A, 0.0)
    row_lo = Ap @ lo + An @ up - b
    row_hi = Ap @ up + An @ lo - b
    err = (A.shape[1] + 2) * np.finfo(np.float64).eps * (np.abs(A) @ np.maximum(np.abs(lo), np.abs(up)) + np.abs(b))
    return float(np.max(row_lo - err)), float(np.max(row_hi + err))


def _inside_bounds(network, x: np.ndarray, layer_bounds: list[Bounds], tol: float = 1e-9) -> bool:
    """Whether every layer output of ``network`` at ``x`` lies within ``layer_bounds``."""
    outs = network.forward(x[None], return_all=True)
    for (lo, up), out in zip(layer_bounds, outs):
        v = np.asarray(out, dtype=np.float64).ravel()
        scale = tol * np.maximum(1.0, np.abs(v))
        if np.any(v < lo - scale) or np.any(v > up + scale):
            return False
    return True


def _clause_problem(enc: MilpEncoding, A: np.ndarray, b: np.ndarray, t_cap: float = np.inf) -> LinearProblem:
    """``enc`` plus a column ``t <= t_cap`` and rows ``A y - t <= b``, minimising ``t``."""
    p = enc.problem
    n, k = p.n_cols, A.shape[0]
    t_col = n
    Ac = sp.coo_matrix(A)
    rows = sp.csr_matrix((np.concatenate([Ac.data, -np.ones(k)]),
                          (np.concatenate([Ac.row, np.arange(k)]),
                           np.concatenate([enc.output_cols[Ac.col], np.full(k, t_col)]))), shape=(k, n + 1))
    A_full = sp.vstack([sp.hstack([p.A, sp.csr_matrix((p.n_rows, 1))]), rows], format="csr")
    c = np.zeros(n + 1)
    c[t_col] = 1.0
    integrality = None if p.integrality is None else np.append(p.integrality, False)
    # t is left free: rows bound it below, and it is minimised.
    return LinearProblem(c, A_full, np.concatenate([p.row_lower, np.full(k, -np.inf)]),
                            np.concatenate([p.row_upper, b]), np.append(p.col_lower, -np.inf),
                            np.append(p.col_upper, t_cap), integrality)


def _counterexample(network, problem: LinearProblem, enc: MilpEncoding, sol: Solution,
                    A: np.ndarray, b: np.ndarray, x_lower: np.ndarray, x_upper: np.ndarray,
                    backend: str) -> tuple[np.ndarray, np.ndarray, float]:
    """The best float64-checked point from a MILP solution: the solver's input clipped to the
    box, or the optimum of the LP with the binaries fixed to the solution's activation pattern
    (exactly linear there), whichever violates the clause more. Returns ``(x, y, t)``."""
    best = None
    candidates = [sol.x[enc.input_cols]]
    if enc.n_binaries:
        fixed = np.round(sol.x[enc.binary_cols])
        lo, up = problem.col_lower.copy(), problem.col_upper.copy()
        lo[enc.binary_cols] = fixed
        up[enc.binary_cols] = fixed
        lp = LinearProblem(problem.c, problem.A, problem.row_lower, problem.row_upper, lo, up)
        polished = solve(lp, backend=backend)
        if polished.status == "optimal" and polished.x is not None:
            candidates.append(polished.x[enc.input_cols])
    for x in candidates:
        x = np.clip(x, x_lower, x_upper)
        y = network.forward(x[None])[0]
        t = _margin(A, b, y)
        if best is None or t < best[2]:
            best = (x, y, t)
    return best
