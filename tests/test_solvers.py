"""LP/MILP back ends: statuses, bounds, warm-started sessions and the Gurobi fallback."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import vnnx  # noqa: F401  (applies the compat patches first)
from vnnx.errors import SolverError
from vnnx.solvers import LinearProblem, available_backends, open_session, safe_lp_bound, solve
from vnnx.solvers.base import ProblemState

INF = np.inf


def small_lp(**kw) -> LinearProblem:
    # min x0 + x1  s.t.  x0 + 2 x1 >= 1,  0 <= x <= 10: optimum 0.5 at (0, 0.5).
    d = dict(c=[1.0, 1.0], A=sp.csr_matrix([[1.0, 2.0]]), row_lower=[1.0], row_upper=[INF],
             col_lower=[0.0, 0.0], col_upper=[10.0, 10.0])
    d.update(kw)
    return LinearProblem(**d)


def random_lp(seed: int, n: int = 40, m: int = 30) -> LinearProblem:
    """A feasible, bounded LP: random rows around a known interior point."""
    rng = np.random.default_rng(seed)
    A = sp.random(m, n, density=0.3, random_state=seed, format="csr") * 4 - sp.random(
        m, n, density=0.2, random_state=seed + 1, format="csr") * 2
    x0 = rng.uniform(-1, 1, n)
    ax = A @ x0
    return LinearProblem(rng.normal(size=n), A, ax - rng.uniform(0.1, 1, m), ax + rng.uniform(0.1, 1, m),
                         np.full(n, -2.0), np.full(n, 2.0))


def knapsack(maximize: bool = False, n: int = 60, m: int = 30) -> LinearProblem:
    """A multi-dimensional 0/1 knapsack; the default size is one HiGHS does not close in a
    fraction of a second."""
    rng = np.random.default_rng(0)
    A = rng.integers(1, 100, (m, n)).astype(float)
    value = rng.integers(1, 100, n).astype(float)
    return LinearProblem(value if maximize else -value, sp.csr_matrix(A), np.full(m, -INF), A.sum(1) / 2,
                         np.zeros(n), np.ones(n), np.ones(n, bool), maximize=maximize)


def feasible(p: LinearProblem, x: np.ndarray, tol: float = 1e-6) -> bool:
    ax = p.A @ x
    ok = np.all(ax >= p.row_lower - tol) and np.all(ax <= p.row_upper + tol)
    ok = ok and np.all(x >= p.col_lower - tol) and np.all(x <= p.col_upper + tol)
    if p.integrality is not None:
        ok = ok and np.allclose(x[p.integrality], np.round(x[p.integrality]), atol=1e-6)
    return bool(ok)


def test_lp_optimal_with_safe_bound():
    p = small_lp()
    sol = solve(p)
    assert sol.status == "optimal"
    assert sol.objective == pytest.approx(0.5)
    np.testing.assert_allclose(sol.x, [0.0, 0.5], atol=1e-9)
    assert sol.bound <= 0.5 and sol.bound == pytest.approx(0.5, abs=1e-9)


def test_lp_maximise_with_offset():
    sol = solve(small_lp(c=[1.0, -1.0], maximize=True, offset=2.0))
    assert sol.status == "optimal"
    assert sol.objective == pytest.approx(12.0)   # x = (10, 0)
    assert sol.bound >= 12.0 and sol.bound == pytest.approx(12.0, abs=1e-9)


def test_milp_optimal():
    # x1 integer: min x0 + x1 with x0 + 2 x1 >= 1 -> (0, 1) with value 1 beats (1, 0)... both 1;
    # with cost 1.2 on x0 only (0, 1) is optimal.
    p = small_lp(c=[1.2, 1.0], integrality=[False, True])
    sol = solve(p)
    assert sol.status == "optimal"
    assert sol.objective == pytest.approx(1.0)
    np.testing.assert_allclose(sol.x, [0.0, 1.0], atol=1e-9)
    assert sol.bound == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("integer", [False, True])
def test_infeasible(integer):
    p = small_lp(row_upper=[0.5], row_lower=[0.6], integrality=[integer, integer])
    sol = solve(p)
    assert sol.status == "infeasible"
    assert sol.x is None and sol.objective is None


@pytest.mark.parametrize("integer", [False, True])
def test_unbounded(integer):
    sol = solve(small_lp(col_upper=[INF, INF], maximize=True, integrality=[integer, integer]))
    assert sol.status == "unbounded"


@pytest.mark.parametrize("maximize", [False, True])
def test_time_limit_keeps_best_solution_and_bound(maximize):
    p = knapsack(maximize)
    sol = solve(p, time_limit=0.2)
    assert sol.status == "time_limit"
    assert sol.seconds < 2.0
    assert sol.x is not None and feasible(p, sol.x)
    assert sol.objective == pytest.approx(p.c @ sol.x)
    # the best bound is on the far side of the incumbent
    assert (sol.bound >= sol.objective) if maximize else (sol.bound <= sol.objective)


def test_early_stops():
    p = knapsack()
    hit = solve(p, time_limit=10, target=-1000.0)
    assert hit.status == "stopped" and hit.objective <= -1000.0 and feasible(p, hit.x)
    cut = solve(p, time_limit=10, cutoff=-3000.0)      # the root LP bound is already above -3000
    assert cut.status == "stopped" and cut.bound >= -3000.0
    maxi = solve(knapsack(True), time_limit=10, target=1000.0)
    assert maxi.status == "stopped" and maxi.objective >= 1000.0


def test_session_resolve_matches_fresh_solves_and_warm_starts():
    p = random_lp(1)
    rng = np.random.default_rng(2)
    session = open_session(p)
    first = session.solve()
    cold_iterations = session._h.getInfo().simplex_iteration_count
    assert first.status == "optimal"
    assert first.objective == pytest.approx(solve(p).objective, abs=1e-7)
    again = session.solve()
    assert again.objective == pytest.approx(first.objective, abs=1e-9)
    assert session._h.getInfo().simplex_iteration_count == 0          # warm: nothing to do
    state = ProblemState(p)
    for step in range(6):
        c = rng.normal(size=p.n_cols)
        maximize = bool(step % 2)
        session.set_objective(c, maximize=maximize, offset=0.5)
        state.set_objective(c, maximize, 0.5)
        if step == 3:
            idx = np.array([5, 1, 3])
            session.set_col_bounds(idx, [-0.5, -0.1, 0.0], [0.5, 0.1, 0.0])
            state.set_col_bounds(idx, np.array([-0.5, -0.1, 0.0]), np.array([0.5, 0.1, 0.0]))
        if step == 4:
            rows = sp.csr_matrix(rng.normal(size=(2, p.n_cols)))
            session.add_rows(rows, [-1.0, -INF], [1.0, 0.5])
            state.add_rows(rows, np.array([-1.0, -INF]), np.array([1.0, 0.5]))
        warm = session.solve()
        fresh = solve(state.problem())
        assert warm.status == fresh.status == "optimal"
        assert warm.objective == pytest.approx(fresh.objective, abs=1e-7)
        assert feasible(state.problem(), warm.x)
        assert (warm.bound >= warm.objective - 1e-12) if maximize else (warm.bound <= warm.objective + 1e-12)
        assert warm.bound == pytest.approx(warm.objective, abs=1e-7)
    # a bound change that makes the LP infeasible is a status, not an exception
    session.set_col_bounds(np.arange(p.n_cols), np.zeros(p.n_cols), np.zeros(p.n_cols))
    session.add_rows(sp.csr_matrix(np.ones((1, p.n_cols))), [1.0], [INF])
    assert session.solve().status == "infeasible"
    assert cold_iterations > 0


def test_safe_lp_bound_is_valid_for_any_multipliers():
    p = random_lp(3)
    opt = solve(p).objective
    rng = np.random.default_rng(4)
    for scale in (0.01, 0.3, 3.0):
        lam = rng.normal(size=p.n_rows) * scale
        b = safe_lp_bound(p.c, p.A, p.row_lower, p.row_upper, p.col_lower, p.col_upper, lam, False)
        assert b <= opt + 1e-12
        bmax = safe_lp_bound(p.c, p.A, p.row_lower, p.row_upper, p.col_lower, p.col_upper, lam, True)
        assert bmax >= solve(LinearProblem(p.c, p.A, p.row_lower, p.row_upper, p.col_lower, p.col_upper,
                                           maximize=True)).objective - 1e-12


def test_backends_and_errors():
    backends = available_backends()
    assert backends["highs"] == "ok"
    assert isinstance(backends["gurobi"], str) and backends["gurobi"]
    with pytest.raises(SolverError, match="unknown solver backend"):
        solve(small_lp(), backend="cplex")
    sol = solve(small_lp(), backend="auto")
    assert sol.status == "optimal" and sol.objective == pytest.approx(0.5)


def _big_lp(n: int) -> LinearProblem:
    # min sum x  s.t. x_i + x_{i+1} >= 1: optimum ceil(n/2) on a path (LP: n/2 for even n).
    rows = sp.diags([np.ones(n - 1), np.ones(n - 1)], [0, 1], shape=(n - 1, n), format="csr")
    return LinearProblem(np.ones(n), rows, np.ones(n - 1), np.full(n - 1, INF), np.zeros(n), np.ones(n))


def test_gurobi_matches_highs_or_falls_back():
    pytest.importorskip("gurobipy")
    status = available_backends()["gurobi"]
    if status != "ok" and not status.startswith("size-limited"):
        pytest.skip(f"gurobi unusable here: {status}")
    for p in (small_lp(), small_lp(c=[1.2, 1.0], integrality=[False, True]), knapsack(True, 12, 5)):
        g, h = solve(p, backend="gurobi", mip_rel_gap=0.0), solve(p, backend="highs", mip_rel_gap=0.0)
        assert g.status == h.status == "optimal"
        assert g.objective == pytest.approx(h.objective, abs=1e-6)
    big = _big_lp(2400)
    if status.startswith("size-limited"):
        with pytest.warns(RuntimeWarning, match="Gurobi not used"):
            sol = solve(big, backend="gurobi")
        # a session that grows past the limit moves itself to HiGHS
        small = _big_lp(1500)
        session = open_session(small, backend="gurobi")
        assert session.backend == "gurobi"
        assert session.solve().objective == pytest.approx(750.0)
        session.add_rows(sp.csr_matrix(np.eye(1500)[:600]), np.full(600, 0.25), np.full(600, INF))
        with pytest.warns(RuntimeWarning, match="size-limited"):
            grown = session.solve()
        assert session.backend == "highs"
        assert grown.status == "optimal"
        assert grown.objective == pytest.approx(solve(_grown(small)).objective, abs=1e-7)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert solve(big, backend="auto").status == "optimal"     # auto never warns
    else:
        sol = solve(big, backend="gurobi")
    assert sol.status == "optimal" and sol.objective == pytest.approx(1200.0)


def _grown(small: LinearProblem) -> LinearProblem:
    state = ProblemState(small)
    state.add_rows(sp.csr_matrix(np.eye(1500)[:600]), np.full(600, 0.25), np.full(600, INF))
    return state.problem()


def test_changing_thread_counts_between_solves():
    """HiGHS's process-wide thread scheduler is made by the first solve; a later solve asking
    for another thread count used to fail ('Not Set'), so a plugin's threads=1 LPs after a
    verification in the same process all failed silently."""
    rng = np.random.default_rng(3)
    n = 40
    w, v = rng.uniform(1, 10, n), rng.uniform(1, 10, n)
    knap = LinearProblem(-v, sp.csr_matrix(w[None]), np.array([-np.inf]), np.array([w.sum() / 3]),
                         np.zeros(n), np.ones(n), np.ones(n, dtype=bool))
    lp = LinearProblem(-v, sp.csr_matrix(w[None]), np.array([-np.inf]), np.array([w.sum() / 3]),
                       np.zeros(n), np.ones(n))
    first = solve(knap)
    assert first.status == "optimal"
    for threads in (2, 1, None):
        assert solve(knap, threads=threads).status == "optimal"
        assert solve(lp, threads=threads).status == "optimal"


def test_highs_options_pass_through():
    rng = np.random.default_rng(4)
    A = sp.csr_matrix(rng.uniform(-1, 1, (30, 12)))
    p = LinearProblem(rng.uniform(-1, 1, 12), A, np.full(30, -np.inf), np.ones(30), -np.ones(12), np.ones(12))
    a, b = solve(p), solve(p, highs_options={"presolve": "off"})
    assert a.status == b.status == "optimal"
    assert abs(a.objective - b.objective) < 1e-7
    with pytest.raises(SolverError, match="no_such_option"):
        solve(p, highs_options={"no_such_option": 1})
