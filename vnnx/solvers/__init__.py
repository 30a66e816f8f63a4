"""LP/MILP back ends behind one small interface (see :mod:`vnnx.solvers.base`).

``backend`` is ``'highs'`` (default, always installed), ``'gurobi'`` (optional gurobipy; when it
is missing, unlicensed, or only size-limited and the problem is too big, a one-line
RuntimeWarning says so and HiGHS solves instead) or ``'auto'`` (Gurobi when fully licensed,
else HiGHS, silently).

Example::

    from vnnx.solvers import LinearProblem, solve
    p = LinearProblem(c=[1, 1], A=sp.csr_matrix([[1, 2]]), row_lower=[1], row_upper=[np.inf],
                      col_lower=[0, 0], col_upper=[10, 10], integrality=[False, True])
    sol = solve(p, time_limit=5)   # sol.status == 'optimal', sol.objective == 0.5
"""
from __future__ import annotations

from typing import Any, Mapping

from vnnx.errors import SolverError
from vnnx.solvers.base import STATUSES, LinearProblem, Session, Solution, safe_lp_bound
from vnnx.solvers.gurobi import FULL, GurobiSession, fits_size_limit, gurobi_status, warn_fallback
from vnnx.solvers.highs import HighsSession, highs_status

BACKENDS = ("highs", "gurobi", "auto")

__all__ = ["LinearProblem", "Solution", "Session", "STATUSES", "solve", "open_session",
           "available_backends", "resolve_backend", "safe_lp_bound"]


def available_backends() -> dict[str, str]:
    """``{'highs': ..., 'gurobi': ...}``, each ``'ok'`` or the reason it cannot be (fully) used."""
    return {"highs": highs_status(), "gurobi": gurobi_status()}


def resolve_backend(backend: str, problem: LinearProblem | None = None) -> str:
    """The back end that will actually run ``problem`` for a requested ``backend`` name.

    Warns (one line, RuntimeWarning) when ``'gurobi'`` was asked for but cannot be used.
    Raises :class:`SolverError` for an unknown name.
    """
    if backend not in BACKENDS:
        raise SolverError(f"unknown solver backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "highs":
        return "highs"
    status = gurobi_status()
    if backend == "auto":
        return "gurobi" if status == FULL else "highs"
    if status == FULL:
        return "gurobi"
    if status.startswith("size-limited") and (problem is None or fits_size_limit(problem)):
        return "gurobi"
    warn_fallback(status)
    return "highs"


def open_session(problem: LinearProblem, backend: str = "highs", threads: int | None = None,
                 highs_options: Mapping[str, Any] | None = None) -> Session:
    """A :class:`Session` on ``problem`` for re-solving with changing objectives and bounds.
    ``highs_options``: HiGHS option values (e.g. ``{"presolve": "off"}``), used by HiGHS only."""
    if resolve_backend(backend, problem) == "gurobi":
        return GurobiSession(problem, threads=threads)
    return HighsSession(problem, threads=threads, options=highs_options)


def solve(problem: LinearProblem, time_limit: float | None = None, backend: str = "highs",
          threads: int | None = None, *, target: float | None = None, cutoff: float | None = None,
          mip_rel_gap: float | None = None, highs_options: Mapping[str, Any] | None = None) -> Solution:
    """Solve ``problem`` once. ``time_limit`` in seconds; the keyword-only early stops are
    those of :meth:`Session.solve`. Infeasible, unbounded and time-limited runs are statuses;
    :class:`SolverError` means the back end itself failed (or the problem is malformed)."""
    session = open_session(problem, backend=backend, threads=threads, highs_options=highs_options)
    return session.solve(time_limit, target=target, cutoff=cutoff, mip_rel_gap=mip_rel_gap)
