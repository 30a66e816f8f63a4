"""Optional Gurobi back end (``pip install vnnx[gurobi]`` plus a licence).

The pip wheel of gurobipy ships a size-limited licence: any model over 2000 variables or 2000
linear constraints fails with error 10010. :func:`gurobi_status` finds out which licence is
present with a one-off probe (a 2001-variable model), and a :class:`GurobiSession` that hits
error 10010 anyway (rows added later) warns once and moves itself onto HiGHS.
"""
from __future__ import annotations

import functools
import time
import warnings

import numpy as np
import scipy.sparse as sp

from vnnx.errors import SolverError
from vnnx.solvers.base import LinearProblem, ProblemState, Session, Solution, check_rows, safe_lp_bound

SIZE_LIMIT = 2000           # variables and linear constraints allowed by the pip licence
_SIZE_LIMIT_ERRNO = 10010   # "Model too large for size-limited license"
FULL = "ok"
SIZE_LIMITED = (f"size-limited licence (gurobipy's pip licence: at most {SIZE_LIMIT} variables and "
                f"{SIZE_LIMIT} constraints; larger problems fall back to highs)")


def _import():
    import gurobipy  # noqa: F401  (optional dependency, imported only here)
    return gurobipy


@functools.lru_cache(maxsize=1)
def gurobi_status() -> str:
    """:data:`FULL` ('ok'), :data:`SIZE_LIMITED`, or why gurobipy cannot be used. Cached."""
    try:
        gp = _import()
    except Exception as exc:
        return f"gurobipy not installed ({type(exc).__name__}: {exc}); pip install 'vnnx[gurobi]'"
    try:
        env = _env()
    except Exception as exc:
        return f"no usable Gurobi licence: {exc}"
    try:
        with gp.Model(env=env) as m:
            m.addMVar(SIZE_LIMIT + 1, lb=0.0, ub=1.0)
            m.optimize()
    except gp.GurobiError as exc:
        if getattr(exc, "errno", None) == _SIZE_LIMIT_ERRNO:
            return SIZE_LIMITED
        return f"Gurobi licence probe failed: {exc}"
    return FULL


@functools.lru_cache(maxsize=1)
def _env():
    gp = _import()
    # An empty env with OutputFlag 0 keeps the licence banner off stdout.
    env = gp.Env(empty=True)
    env.setParam("OutputFlag", 0)
    env.start()
    return env


def fits_size_limit(problem: LinearProblem) -> bool:
    """Whether ``problem`` is small enough for the size-limited licence (rows counted after
    splitting two-sided ranges, as :class:`GurobiSession` does)."""
    ranged = np.isfinite(problem.row_lower) & np.isfinite(problem.row_upper) & (problem.row_lower != problem.row_upper)
    return problem.n_cols <= SIZE_LIMIT and problem.n_rows + int(ranged.sum()) <= SIZE_LIMIT


def warn_fallback(reason: str) -> None:
    """The one-line message shown whenever a Gurobi request runs on HiGHS instead."""
    warnings.warn(f"vnnx: Gurobi not used ({reason}); solving with HiGHS instead", RuntimeWarning, stacklevel=3)


class GurobiSession(Session):
    """A Gurobi model kept between solves. On error 10010 it warns and hands itself over to a
    :class:`~vnnx.solvers.highs.HighsSession` built from the same (edited) problem."""

    def __init__(self, problem: LinearProblem, threads: int | None = None) -> None:
        gp = _import()
        self._gp = gp
        self._threads = threads
        self._state = ProblemState(problem)
        self._fallback: Session | None = None
        self._is_mip = problem.is_mip
        m = gp.Model(env=_env())
        if threads is not None:
            m.Params.Threads = int(threads)
        vtype = np.where(problem.integrality, gp.GRB.INTEGER, gp.GRB.CONTINUOUS) if problem.is_mip else gp.GRB.CONTINUOUS
        self._x = m.addMVar(problem.n_cols, lb=problem.col_lower, ub=problem.col_upper, vtype=vtype)
        self._m = m
        self._rows: list = []   # (constraint MVar, sign) per block, for the row duals
        self._add(problem.A, problem.row_lower, problem.row_upper, first=0)
        self.set_objective(problem.c, problem.maximize, problem.offset)

    @property
    def backend(self) -> str:
        return "highs" if self._fallback is not None else "gurobi"

    def _add(self, A: sp.csr_matrix, lower: np.ndarray, upper: np.ndarray, first: int) -> None:
        eq = lower == upper
        le = np.isfinite(upper) & ~eq
        ge = np.isfinite(lower) & ~eq
        # One Gurobi constraint block per sense; `rows` maps them back for the duals.
        for mask, sense, rhs in ((eq, "=", upper), (le, "<", upper), (ge, ">", lower)):
            idx = np.flatnonzero(mask)
            if idx.size:
                con = self._m.addMConstr(A[idx], self._x, sense, rhs[idx])
                self._rows.append((first, idx, con))
        self._m.update()

    def set_objective(self, c: np.ndarray, maximize: bool = False, offset: float = 0.0) -> None:
        if self._fallback is not None:
            return self._fallback.set_objective(c, maximize, offset)
        self._state.set_objective(c, maximize, offset)
        gp = self._gp
        self._m.setMObjective(None, self._state.c, float(offset),
                              sense=gp.GRB.MAXIMIZE if maximize else gp.GRB.MINIMIZE)

    def set_col_bounds(self, idx: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        if self._fallback is not None:
            return self._fallback.set_col_bounds(idx, lower, upper)
        idx = np.asarray(idx, dtype=np.int64).ravel()
        self._state.set_col_bounds(idx, lower, upper)
        self._x[idx].lb = self._state.col_lower[idx]
        self._x[idx].ub = self._state.col_upper[idx]

    def add_rows(self, A: sp.csr_matrix, lower: np.ndarray, upper: np.ndarray) -> None:
        if self._fallback is not None:
            return self._fallback.add_rows(A, lower, upper)
        A, lower, upper = check_rows(A, lower, upper, self._state.c.size)
        first = self._state.n_rows
        self._state.add_rows(A, lower, upper)
        self._add(A, lower, upper, first)

    def solve(self, time_limit: float | None = None, *, target: float | None = None,
              cutoff: float | None = None, mip_rel_gap: float | None = None) -> Solution:
        if self._fallback is not None:
            return self._fallback.solve(time_limit, target=target, cutoff=cutoff, mip_rel_gap=mip_rel_gap)
        gp, m = self._gp, self._m
        GRB = gp.GRB
        inf = GRB.INFINITY
        m.Params.TimeLimit = float(time_limit) if time_limit is not None else inf
        m.Params.MIPGap = float(mip_rel_gap) if mip_rel_gap is not None else 1e-4
        use_target = self._is_mip and target is not None
        use_cutoff = self._is_mip and cutoff is not None
        # Gurobi reads both stops in the model's own sense; ∓inf are its "never" defaults.
        m.Params.BestObjStop = float(target) if use_target else -inf
        m.Params.BestBdStop = float(cutoff) if use_cutoff else inf
        start = time.perf_counter()
        try:
            m.optimize()
            if m.Status == GRB.INF_OR_UNBD:
                m.Params.DualReductions = 0
                try:
                    m.optimize()
                finally:
                    m.Params.DualReductions = 1
        except gp.GurobiError as exc:
            if getattr(exc, "errno", None) == _SIZE_LIMIT_ERRNO:
                return self._fall_back(time_limit, target, cutoff, mip_rel_gap)
            raise SolverError(f"Gurobi failed on a {m.NumVars}x{m.NumConstrs} model: {exc}") from exc
        seconds = time.perf_counter() - start
        return self._solution(seconds)

    def _fall_back(self, time_limit, target, cutoff, mip_rel_gap) -> Solution:
        from vnnx.solvers.highs import HighsSession

        warn_fallback(SIZE_LIMITED)
        self._fallback = HighsSession(self._state.problem(), threads=self._threads)
        self._m.dispose()
        return self._fallback.solve(time_limit, target=target, cutoff=cutoff, mip_rel_gap=mip_rel_gap)

    def _solution(self, seconds: float) -> Solution:
        GRB, m = self._gp.GRB, self._m
        status = m.Status
        has_x = m.SolCount > 0
        x = np.asarray(self._x.X, dtype=np.float64) if has_x else None
        objective = float(m.ObjVal) if has_x else None
        bound = float(m.ObjBound) if self._is_mip and status not in (GRB.INFEASIBLE, GRB.UNBOUNDED) else None
        if status == GRB.OPTIMAL:
            if not self._is_mip:
                bound = self._lp_bound(objective)
            return Solution("optimal", objective, x, bound, seconds)
        if status == GRB.INFEASIBLE:
            return Solution("infeasible", None, None, -np.inf if self._state.maximize else np.inf, seconds)
        if status == GRB.UNBOUNDED:
            return Solution("unbounded", None, None, None, seconds)
        if status in (GRB.USER_OBJ_LIMIT, GRB.INTERRUPTED):
            return Solution("stopped", objective, x, bound, seconds, f"Gurobi status {status}")
        if status in (GRB.TIME_LIMIT, GRB.ITERATION_LIMIT, GRB.NODE_LIMIT, GRB.SOLUTION_LIMIT):
            return Solution("time_limit", objective, x, bound, seconds, f"Gurobi status {status}")
        return Solution("error", objective, x, bound, seconds, f"Gurobi status {status}")

    def _lp_bound(self, objective: float) -> float:
        s = self._state
        p = s.problem()
        row_dual = np.zeros(p.n_rows)
        for first, idx, con in self._rows:
            row_dual[first + idx] = np.asarray(con.Pi, dtype=np.float64)
        bound = safe_lp_bound(p.c, p.A, p.row_lower, p.row_upper, p.col_lower, p.col_upper, row_dual,
                              p.maximize, p.offset)
        return float(bound) if np.isfinite(bound) else objective
