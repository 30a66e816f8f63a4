"""The one small interface every LP/MILP back end implements.

A :class:`LinearProblem` is ``min/max c @ x + offset`` subject to
``row_lower <= A @ x <= row_upper`` and ``col_lower <= x <= col_upper``, with some columns
integer. A back end turns it into a :class:`Solution`, either once (``solve``) or repeatedly
with changing objectives, column bounds and extra rows (a :class:`Session`, warm-started).

Statuses are data, not exceptions: ``'optimal' | 'infeasible' | 'unbounded' | 'time_limit' |
'error'``, plus ``'stopped'`` which a back end returns only when the caller asked for an early
stop (``target`` / ``cutoff`` of :meth:`Session.solve`).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from vnnx.errors import ShapeMismatchError

STATUSES = ("optimal", "infeasible", "unbounded", "time_limit", "stopped", "error")


@dataclass
class LinearProblem:
    """``min`` (or ``max``) ``c @ x + offset`` s.t. ``row_lower <= A x <= row_upper``,
    ``col_lower <= x <= col_upper``; ``integrality[j]`` True makes column j integer.

    Shapes: ``c``, ``col_lower``, ``col_upper``, ``integrality``: (n,); ``A``: (m, n) sparse;
    ``row_lower``, ``row_upper``: (m,). Infinite bounds are ``±np.inf``.
    """

    c: np.ndarray
    A: sp.csr_matrix
    row_lower: np.ndarray
    row_upper: np.ndarray
    col_lower: np.ndarray
    col_upper: np.ndarray
    integrality: np.ndarray | None = None
    maximize: bool = False
    offset: float = 0.0

    def __post_init__(self) -> None:
        self.c = np.asarray(self.c, dtype=np.float64).ravel()
        n = self.c.size
        self.A = sp.csr_matrix(self.A, dtype=np.float64)
        m = self.A.shape[0]
        self.row_lower = np.asarray(self.row_lower, dtype=np.float64).ravel()
        self.row_upper = np.asarray(self.row_upper, dtype=np.float64).ravel()
        self.col_lower = np.asarray(self.col_lower, dtype=np.float64).ravel()
        self.col_upper = np.asarray(self.col_upper, dtype=np.float64).ravel()
        if self.integrality is not None:
            self.integrality = np.asarray(self.integrality, dtype=bool).ravel()
        checks = [("A columns", self.A.shape[1], n), ("row_lower", self.row_lower.size, m),
                  ("row_upper", self.row_upper.size, m), ("col_lower", self.col_lower.size, n),
                  ("col_upper", self.col_upper.size, n)]
        if self.integrality is not None:
            checks.append(("integrality", self.integrality.size, n))
        for name, got, want in checks:
            if got != want:
                raise ShapeMismatchError(f"LinearProblem: {name} has size {got}, expected {want}")

    @property
    def n_cols(self) -> int:
        return self.c.size

    @property
    def n_rows(self) -> int:
        return self.A.shape[0]

    @property
    def is_mip(self) -> bool:
        return self.integrality is not None and bool(self.integrality.any())

    @property
    def n_integer(self) -> int:
        return 0 if self.integrality is None else int(self.integrality.sum())


@dataclass
class Solution:
    """What a back end found.

    ``objective`` includes ``offset`` and is set whenever a feasible ``x`` (n,) exists (for a
    MILP stopped by a limit: the best feasible point found). ``bound`` is a proven bound on the
    optimum in the objective's direction (a lower bound when minimising): the MILP best bound,
    or for an LP the safe dual bound of :func:`safe_lp_bound` (≤ objective by rounding only).
    ``seconds`` is wall-clock time of the solve.
    """

    status: str
    objective: float | None
    x: np.ndarray | None
    bound: float | None
    seconds: float
    message: str = ""


class Session(abc.ABC):
    """One problem, re-solved with changing objectives, column bounds and added rows.

    Back ends keep their internal state (basis) between solves, so a re-solve after a small
    change starts from the last optimum.
    """

    @abc.abstractmethod
    def set_objective(self, c: np.ndarray, maximize: bool = False, offset: float = 0.0) -> None:
        """Replace the whole objective: ``c``: (n,)."""

    @abc.abstractmethod
    def set_col_bounds(self, idx: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        """Set bounds of columns ``idx`` (k,) to ``lower``/``upper`` (k,)."""

    @abc.abstractmethod
    def add_rows(self, A: sp.csr_matrix, lower: np.ndarray, upper: np.ndarray) -> None:
        """Append rows ``lower <= A x <= upper``; ``A``: (k, n)."""

    @abc.abstractmethod
    def solve(self, time_limit: float | None = None, *, target: float | None = None,
              cutoff: float | None = None, mip_rel_gap: float | None = None) -> Solution:
        """Solve the current problem, warm-started from the last solve.

        ``time_limit`` in seconds (None: no limit). For MILPs only: stop early with status
        ``'stopped'`` once a feasible objective at least as good as ``target`` is found
        (``<= target`` when minimising), or once the proven bound shows nothing better than
        ``cutoff`` exists (bound ``>= cutoff`` when minimising). ``mip_rel_gap`` overrides the
        back end's relative optimality gap (0 = prove the optimum exactly).
        """

    @property
    @abc.abstractmethod
    def backend(self) -> str:
        """Name of the back end that actually solves (after any fallback)."""


class ProblemState:
    """A mutable copy of a :class:`LinearProblem` that tracks a session's edits, so that a
    session can be rebuilt on another back end (the Gurobi → HiGHS fallback)."""

    def __init__(self, problem: LinearProblem) -> None:
        self.c = problem.c.copy()
        self.maximize = problem.maximize
        self.offset = float(problem.offset)
        self.col_lower = problem.col_lower.copy()
        self.col_upper = problem.col_upper.copy()
        self.integrality = None if problem.integrality is None else problem.integrality.copy()
        self._blocks: list[tuple[sp.csr_matrix, np.ndarray, np.ndarray]] = [
            (problem.A, problem.row_lower, problem.row_upper)]

    def set_objective(self, c: np.ndarray, maximize: bool, offset: float) -> None:
        self.c = np.asarray(c, dtype=np.float64).ravel().copy()
        self.maximize, self.offset = bool(maximize), float(offset)

    def set_col_bounds(self, idx: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        self.col_lower[idx] = lower
        self.col_upper[idx] = upper

    def add_rows(self, A: sp.csr_matrix, lower: np.ndarray, upper: np.ndarray) -> None:
        self._blocks.append((sp.csr_matrix(A), np.asarray(lower, np.float64), np.asarray(upper, np.float64)))

    def problem(self) -> LinearProblem:
        A = sp.vstack([b[0] for b in self._blocks], format="csr") if len(self._blocks) > 1 else self._blocks[0][0]
        return LinearProblem(self.c, A, np.concatenate([b[1] for b in self._blocks]),
                             np.concatenate([b[2] for b in self._blocks]), self.col_lower, self.col_upper,
                             self.integrality, self.maximize, self.offset)

    @property
    def n_rows(self) -> int:
        return sum(b[0].shape[0] for b in self._blocks)


def check_rows(A: sp.spmatrix, lower: np.ndarray, upper: np.ndarray, n_cols: int) -> tuple:
    """Validate rows handed to :meth:`Session.add_rows`; return them as (csr, lower, upper)."""
    A = sp.csr_matrix(A, dtype=np.float64)
    lower = np.asarray(lower, dtype=np.float64).ravel()
    upper = np.asarray(upper, dtype=np.float64).ravel()
    if A.shape[1] != n_cols or lower.size != A.shape[0] or upper.size != A.shape[0]:
        raise ShapeMismatchError(
            f"add_rows: A {A.shape}, lower {lower.shape}, upper {upper.shape} do not fit {n_cols} columns")
    return A, lower, upper


def safe_lp_bound(c: np.ndarray, A: sp.csr_matrix, row_lower: np.ndarray, row_upper: np.ndarray,
                  col_lower: np.ndarray, col_upper: np.ndarray, row_dual: np.ndarray,
                  maximize: bool, offset: float = 0.0) -> float:
    """A bound on an LP's optimum that holds for ANY row multipliers ``row_dual`` (m,).

    Weak duality (Neumaier & Shcherbina, 2004, "Safe bounds in linear and mixed-integer
    programming", §2): for every feasible x, ``c x = λ (A x) + (c − Aᵀλ) x``; bounding each term
    over its box gives a valid bound whatever λ is, so solver tolerances only make it looser,
    never wrong. Multipliers on an infinite row side are clipped to 0 (still valid). Returns
    ``-inf`` (``+inf`` when maximising) when a free column keeps it unbounded.
    """
    lam = np.asarray(row_dual, dtype=np.float64).copy()
    sign = -1.0 if maximize else 1.0
    # Work on the minimisation form min (sign*c) x; multipliers flip with it.
    lam *= sign
    cc = sign * np.asarray(c, dtype=np.float64)
    # λ_i > 0 takes row_lower_i, λ_i < 0 takes row_upper_i (minimum of λ_i a over a ∈ [rl, ru]).
    lam[(lam > 0) & ~np.isfinite(row_lower)] = 0.0
    lam[(lam < 0) & ~np.isfinite(row_upper)] = 0.0
    row_term = np.where(lam > 0, lam * np.where(np.isfinite(row_lower), row_lower, 0.0),
                        lam * np.where(np.isfinite(row_upper), row_upper, 0.0))
    reduced = cc - A.T @ lam
    with np.errstate(invalid="ignore"):
        col_term = np.where(reduced > 0, reduced * col_lower, np.where(reduced < 0, reduced * col_upper, 0.0))
    total = float(np.sum(row_term) + np.sum(col_term))
    if np.isnan(total):
        total = -np.inf
    if np.isfinite(total):
        # Float64 rounding of Aᵀλ and of the sums (Higham's γ_k bound on dot products).
        gamma = (A.shape[0] + A.shape[1] + 2) * np.finfo(np.float64).eps
        mag = np.maximum(np.abs(col_lower), np.abs(col_upper))
        mag = np.where(np.isfinite(mag), mag, 0.0)
        err = gamma * (float(np.sum(np.abs(row_term)) + np.sum(np.abs(col_term)))
                       + float((abs(A).T @ np.abs(lam) + np.abs(cc)) @ mag))
        total -= err
    return sign * total + offset
