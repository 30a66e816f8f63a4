"""HiGHS back end (the default), through ``highspy`` directly.

The model goes in as one CSR matrix (``passModel``), rows are appended with ``addRows``, and a
:class:`HighsSession` keeps the ``Highs`` object (and so its simplex basis) alive between solves:
changing costs or bounds and calling ``run`` again warm-starts from the last basis.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any, Mapping

import numpy as np
import scipy.sparse as sp

from vnnx.errors import SolverError
from vnnx.solvers.base import LinearProblem, ProblemState, Session, Solution, check_rows, safe_lp_bound

try:  # highspy is a hard dependency, but a broken install should give a clear message
    import highspy
    _IMPORT_ERROR: str | None = None
except Exception as exc:  # pragma: no cover - depends on the environment
    highspy = None
    _IMPORT_ERROR = f"highspy cannot be imported: {exc}"

_DEFAULT_MIP_REL_GAP = 1e-4  # HiGHS's own default, restored when a solve does not override it


# HiGHS runs every solve of a process on one global thread scheduler, made by the first solve
# that needs it. A later model asking for another thread count fails outright (model status
# 'Not Set'), so the count is fixed here, and the scheduler re-made when a caller changes it.
DEFAULT_THREADS = 1
_scheduler_threads: int | None = None


def _use_threads(h, threads: int | None) -> None:
    global _scheduler_threads
    want = int(threads) if threads is not None else DEFAULT_THREADS
    if _scheduler_threads is not None and want != _scheduler_threads:
        highspy.Highs.resetGlobalScheduler(True)
    _scheduler_threads = want
    h.setOptionValue("threads", want)


def _new_highs():
    """A silent ``Highs`` object. HiGHS prints a two-line banner on stdout when the first one of a
    process is made (before ``silent()`` can act); it goes to stderr here, so that stdout carries
    only vnnx's documented results (a verdict line, JSON) that pipelines parse."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        h = highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    h.silent()
    return h


# LPs with more non-zeros than this also run watched (:func:`_run`); smaller ones finish in
# milliseconds, and the thread would cost them a few per cent.
_WATCH_LP_NNZ = 100_000


# How long past its time limit a watched solve may run before it is abandoned (:func:`_run`).
OVERRUN_GRACE = 1.0
# Solves abandoned past their limit that may still be running (see :func:`abandoned_solves`).
_ABANDONED: list = []


def abandoned_solves() -> int:
    """How many abandoned HiGHS solves are still running in this process. A process that wants
    to exit at once should then leave through ``os._exit`` (the command line does); otherwise
    Python waits for them at exit."""
    _ABANDONED[:] = [t for t in _ABANDONED if t.is_alive()]
    return len(_ABANDONED)


def _run(h, time_limit: float | None = None) -> bool:
    """``h.run()``, stopped within ~0.5 s by SIGINT or SIGTERM, and given up
    :data:`OVERRUN_GRACE` s after ``time_limit``. Returns False when the solve was given up
    (its result must not be read; the ``Highs`` object is still busy).

    HiGHS keeps the calling thread until its own checks, which can be many seconds apart (on a
    5,000-column MNIST MILP it spent 18 s in the root with a limit of 8 s, and Ctrl-C waited for
    all of it). In the main thread the solve runs in a helper thread instead (highspy releases
    the GIL in ``run``); the main thread waits in short steps, so Python's signal handlers run at
    once. A signal is recorded, HiGHS is asked to stop at its next interrupt callback, and the
    signal is re-raised with the original handler (KeyboardInterrupt, or the default exit) after
    at most 0.5 s more. The helper thread is not a daemon: interpreter shutdown under a running
    HiGHS thread aborts, so Python waits for it unless the process leaves through ``os._exit``."""
    if threading.current_thread() is not threading.main_thread():
        h.run()   # Python delivers signals to the main thread only; nothing to watch here
        return True
    stop = threading.Event()
    received: list = []

    def on_signal(signum, frame) -> None:
        received.append(signum)
        stop.set()

    def interrupt(event) -> None:
        if stop.is_set():
            event.interrupt()

    old = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(sig)
        if current in (signal.SIG_IGN, None):
            continue
        old[sig] = current
        signal.signal(sig, on_signal)
    cbs = (h.cbSimplexInterrupt, h.cbIpmInterrupt, h.cbMipInterrupt)
    for cb in cbs:
        cb += interrupt
    done = threading.Event()
    failure: list = []

    def target() -> None:
        try:
            h.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)
        finally:
            done.set()

    give_up = None if time_limit is None or not np.isfinite(time_limit) else \
        time.monotonic() + float(time_limit) + OVERRUN_GRACE
    worker = threading.Thread(target=target, name="highs-run")
    try:
        worker.start()
        while not done.wait(0.05):
            if received or (give_up is not None and time.monotonic() > give_up):
                stop.set()
                done.wait(0.5)   # HiGHS often reaches an interrupt callback by then
                break
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if done.is_set():
            for cb in cbs:
                cb -= interrupt
        else:
            _ABANDONED.append(worker)
    for sig in dict.fromkeys(received):
        signal.raise_signal(sig)
    if failure:
        raise failure[0]
    return done.is_set()


def highs_status() -> str:
    """'ok', or why the HiGHS back end cannot be used."""
    return "ok" if highspy is not None else str(_IMPORT_ERROR)


class HighsSession(Session):
    """A HiGHS model kept alive between solves (see :class:`vnnx.solvers.base.Session`)."""

    def __init__(self, problem: LinearProblem, threads: int | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        if highspy is None:
            raise SolverError(str(_IMPORT_ERROR))
        self._state = ProblemState(problem)
        self._A_cache: sp.csr_matrix | None = problem.A
        self._is_mip = problem.is_mip
        self._nnz = int(problem.A.nnz)
        h = _new_highs()
        _use_threads(h, threads)
        for name, value in (options or {}).items():
            if h.setOptionValue(name, value) != highspy.HighsStatus.kOk:
                raise SolverError(f"HiGHS rejected option {name}={value!r}")
        A = problem.A.tocsr()
        A.sort_indices()
        # Always a full-length array: highspy reads num_col entries whatever its length.
        integrality = (problem.integrality.astype(np.int32) if problem.is_mip
                       else np.zeros(problem.n_cols, dtype=np.int32))
        status = h.passModel(
            problem.n_cols, problem.n_rows, int(A.nnz), int(highspy.MatrixFormat.kRowwise.value),
            int(highspy.ObjSense.kMaximize.value if problem.maximize else highspy.ObjSense.kMinimize.value),
            float(problem.offset), problem.c, problem.col_lower, problem.col_upper,
            problem.row_lower, problem.row_upper, A.indptr[:-1].astype(np.int32),
            A.indices.astype(np.int32), A.data.astype(np.float64), integrality)
        if status == highspy.HighsStatus.kError:
            raise SolverError(f"HiGHS rejected the model ({problem.n_rows} rows, {problem.n_cols} columns): "
                              "check for NaN coefficients or lower > upper bounds")
        self.__h = h

    @property
    def backend(self) -> str:
        return "highs"

    def set_objective(self, c: np.ndarray, maximize: bool = False, offset: float = 0.0) -> None:
        c = np.asarray(c, dtype=np.float64).ravel()
        if c.size != self._state.c.size:
            raise SolverError(f"set_objective: {c.size} costs for {self._state.c.size} columns")
        self._state.set_objective(c, maximize, offset)
        idx = np.arange(c.size, dtype=np.int32)
        self._h.changeColsCost(c.size, idx, c)
        self._h.changeObjectiveSense(highspy.ObjSense.kMaximize if maximize else highspy.ObjSense.kMinimize)
        self._h.changeObjectiveOffset(float(offset))

    def set_col_bounds(self, idx: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> None:
        idx = np.asarray(idx, dtype=np.int32).ravel()
        lower = np.broadcast_to(np.asarray(lower, dtype=np.float64), idx.shape).copy()
        upper = np.broadcast_to(np.asarray(upper, dtype=np.float64), idx.shape).copy()
        self._state.set_col_bounds(idx, lower, upper)
        # HiGHS wants the index set sorted.
        order = np.argsort(idx, kind="stable")
        self._h.changeColsBounds(idx.size, idx[order], lower[order], upper[order])

    def add_rows(self, A: sp.csr_matrix, lower: np.ndarray, upper: np.ndarray) -> None:
        A, lower, upper = check_rows(A, lower, upper, self._state.c.size)
        A.sort_indices()
        self._state.add_rows(A, lower, upper)
        self._nnz += int(A.nnz)
        self._A_cache = None
        self._h.addRows(A.shape[0], lower, upper, int(A.nnz), A.indptr[:-1].astype(np.int32),
                        A.indices.astype(np.int32), A.data)

    def _matrix(self) -> sp.csr_matrix:
        if self._A_cache is None:
            self._A_cache = self._state.problem().A
        return self._A_cache

    def _row_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        p = self._state
        return (np.concatenate([b[1] for b in p._blocks]), np.concatenate([b[2] for b in p._blocks]))

    @property
    def _h(self):
        if self.__h is None:
            raise SolverError("this HiGHS session was abandoned when a solve overran its time limit")
        return self.__h

    @_h.setter
    def _h(self, value) -> None:
        self.__h = value

    def solve(self, time_limit: float | None = None, *, target: float | None = None,
              cutoff: float | None = None, mip_rel_gap: float | None = None) -> Solution:
        h = self._h
        h.setOptionValue("time_limit", float(time_limit) if time_limit is not None else float("inf"))
        h.setOptionValue("mip_rel_gap", float(mip_rel_gap) if mip_rel_gap is not None else _DEFAULT_MIP_REL_GAP)
        maximize = self._state.maximize
        watch = self._is_mip and (target is not None or cutoff is not None)
        if watch:
            h.cbMipInterrupt.subscribe(_early_stop, (maximize, target, cutoff))
        start = time.perf_counter()
        abandoned = False
        try:
            if self._is_mip or self._nnz > _WATCH_LP_NNZ:
                if not _run(h, time_limit):
                    abandoned = True
                    self._h = None   # still busy in its thread: this session is done
                    return Solution("time_limit", None, None, None, time.perf_counter() - start,
                                    f"HiGHS ran {OVERRUN_GRACE:g} s past its time limit and was abandoned")
            else:
                h.run()   # short: Python's own signal check right after it is soon enough
            model_status = h.getModelStatus()
            if model_status == highspy.HighsModelStatus.kUnboundedOrInfeasible:
                # Presolve cannot tell the two apart; the simplex on the original model can.
                h.setOptionValue("presolve", "off")
                try:
                    h.run()
                finally:
                    h.setOptionValue("presolve", "choose")
                model_status = h.getModelStatus()
        finally:
            if watch and not abandoned:
                h.cbMipInterrupt.clear()
        seconds = time.perf_counter() - start
        return self._solution(model_status, seconds)

    def _solution(self, model_status, seconds: float) -> Solution:
        h, S = self._h, highspy.HighsModelStatus
        info = h.getInfo()
        has_x = int(info.primal_solution_status) == int(highspy.kSolutionStatusFeasible)
        x = np.asarray(h.getSolution().col_value, dtype=np.float64) if has_x else None
        objective = float(info.objective_function_value) if has_x else None
        if self._is_mip:
            bound = float(info.mip_dual_bound)
            bound = None if not np.isfinite(bound) and model_status != S.kInfeasible else bound
        else:
            bound = None
        name = h.modelStatusToString(model_status)
        if model_status == S.kOptimal:
            if not has_x:
                return Solution("error", None, None, None, seconds, f"HiGHS: optimal but no primal solution ({name})")
            if not self._is_mip:
                bound = self._lp_bound(objective)
            return Solution("optimal", objective, x, bound, seconds)
        if model_status == S.kInfeasible:
            inf = -np.inf if self._state.maximize else np.inf
            return Solution("infeasible", None, None, inf, seconds)
        if model_status == S.kUnbounded:
            return Solution("unbounded", None, None, None, seconds)
        if model_status in (S.kInterrupt, S.kObjectiveTarget, S.kObjectiveBound):
            return Solution("stopped", objective, x, bound, seconds, name)
        if model_status in (S.kTimeLimit, S.kIterationLimit, S.kSolutionLimit):
            return Solution("time_limit", objective, x, bound, seconds, name)
        return Solution("error", objective, x, bound, seconds, f"HiGHS: {name}")

    def _lp_bound(self, objective: float) -> float:
        """The safe dual bound of the LP just solved; the objective when no finite one exists
        (a free column the objective reaches)."""
        s = self._state
        lo, up = self._row_bounds()
        row_dual = np.asarray(self._h.getSolution().row_dual, dtype=np.float64)
        if row_dual.size != lo.size:
            return objective
        bound = safe_lp_bound(s.c, self._matrix(), lo, up, s.col_lower, s.col_upper, row_dual,
                              s.maximize, s.offset)
        return float(bound) if np.isfinite(bound) else objective


def _early_stop(event) -> None:
    """MIP interrupt callback: stop once ``target`` is reached or ``cutoff`` is proven."""
    maximize, target, cutoff = event.user_data
    primal = event.data_out.mip_primal_bound
    dual = event.data_out.mip_dual_bound
    if maximize:
        hit = (target is not None and primal >= target) or (cutoff is not None and dual <= cutoff)
    else:
        hit = (target is not None and primal <= target) or (cutoff is not None and dual >= cutoff)
    if hit:
        event.interrupt()
