"""Run independent tasks in this process, in local processes, or on a Dask cluster.

Every embarrassingly parallel loop of vnnx (``vnnx bench`` over instances, ``vnnx radius`` over
anchors, VNN LP's per-neuron LPs, certification sweeps) goes through :func:`open_executor`;
this is the one module that knows about Dask.

Back ends (:class:`ExecutorSpec`):

- in-process (the default): the tasks run one after another in this process;
- local processes (``jobs > 1``): ``jobs`` tasks at once on this machine;
- Dask: ``scheduler='tcp://HOST:PORT'`` (a running cluster) or ``local_cluster=N`` (a
  ``LocalCluster`` of N single-threaded worker processes on 127.0.0.1).

A task is isolated (``isolate=True``, the default away from in-process) when it runs in its own
subprocess on the worker, in its own process group, under a hard timeout: a hung solver or a
crash costs that task (its outcome is ``timeout`` or ``error`` with the reason), never the
worker. Its seed derives from its key (:func:`task_seed`), so every back end gives the same
answers. Outcomes stream back in finishing order.

Example (a certification sweep)::

    from vnnx.executor import ExecutorSpec, Task, run_tasks
    tasks = [Task(key=f"sample-{i}", fn=certify_one, args=(i,), timeout=60) for i in range(100)]
    for outcome in run_tasks(tasks, ExecutorSpec(local_cluster=2)):
        print(outcome.task.key, outcome.status, outcome.value or outcome.reason)

``fn`` must be a module-level function and ``args`` picklable (they travel to other processes).
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from vnnx.errors import ConfigError, VnnxError

#: Seconds to wait for a Dask scheduler before giving up (one-line error, exit 2).
CONNECT_TIMEOUT = 5.0
#: Times a task is tried again after its worker died under it, before it becomes an ``error``.
RETRIES = 2
#: Bytes of an isolated task's stdout that come back with its outcome.
OUTPUT_KEEP = 1 << 16


@dataclass(frozen=True)
class Task:
    """One unit of work: ``fn(*args)``. ``key`` names it (a results row's key) and fixes its
    seed; ``timeout`` is the hard limit in seconds of an isolated run (None: none)."""

    key: str
    fn: Callable
    args: tuple = ()
    timeout: Optional[float] = None
    #: ``(fn, args)``: set-up that an isolated task's zygote runs once, before forking the task
    #: (e.g. loading its network into a module-level cache that ``fn`` then finds), so that
    #: tasks sharing it do not each pay for it. Must be deterministic and side-effect free
    #: beyond that cache; a failing one is ignored (the task then does the work itself).
    #: Not run in-process: ``fn`` must work without it.
    warm: Optional[tuple] = None


@dataclass
class Outcome:
    """How a task ended: ``status`` 'ok' (``value`` is what ``fn`` returned), 'timeout' (killed
    at its hard limit) or 'error' (``fn`` raised, its process died, or its worker died more
    than :data:`RETRIES` times); ``reason`` says which. ``seconds``: wall time of the run."""

    task: Task
    status: str
    value: Any = None
    reason: str = ""
    seconds: float = 0.0
    #: What an isolated task printed on stdout (its last :data:`OUTPUT_KEEP` bytes); in-process
    #: tasks print directly, and this stays empty.
    output: str = ""


@dataclass(frozen=True)
class ExecutorSpec:
    """Which back end: ``jobs`` local processes, or a Dask ``scheduler`` address, or a
    ``local_cluster`` of that many single-threaded workers. At most one of the Dask two."""

    jobs: int = 1
    scheduler: Optional[str] = None
    local_cluster: Optional[int] = None
    retries: int = RETRIES
    connect_timeout: float = CONNECT_TIMEOUT

    def validate(self) -> "ExecutorSpec":
        if self.jobs < 1:
            raise ConfigError(f"--jobs must be at least 1, got {self.jobs}")
        if self.scheduler and self.local_cluster:
            raise ConfigError("--scheduler and --local-cluster exclude each other")
        if self.jobs > 1 and (self.scheduler or self.local_cluster):
            raise ConfigError("--jobs is for local processes; with --scheduler or --local-cluster the "
                              "cluster's workers set how many tasks run at once")
        if self.local_cluster is not None and self.local_cluster < 1:
            raise ConfigError(f"--local-cluster must be at least 1, got {self.local_cluster}")
        if self.scheduler is not None and "://" not in self.scheduler:
            raise ConfigError(f"--scheduler wants an address like tcp://HOST:PORT, got {self.scheduler!r}")
        if self.retries < 0:
            raise ConfigError(f"retries must be >= 0, got {self.retries}")
        return self

    @property
    def kind(self) -> str:
        if self.scheduler or self.local_cluster:
            return "dask"
        return "processes" if self.jobs > 1 else "in-process"


def task_seed(key: str) -> int:
    """A seed in [0, 2**31) derived from a task's key: the same on every back end and run."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little") & 0x7FFFFFFF


def _seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    with contextlib.suppress(ImportError):
        import numpy as np

        np.random.seed(seed)
    if "torch" in sys.modules:   # only where the task imported it: no torch import for an LP
        sys.modules["torch"].manual_seed(seed)


def run_direct(task: Task) -> Outcome:
    """Run ``task`` here (no subprocess); an exception is its ``error`` outcome."""
    t0 = time.monotonic()
    _seed_everything(task_seed(task.key))
    try:
        value = task.fn(*task.args)
    except VnnxError as exc:
        return Outcome(task, "error", reason=str(exc)[:300], seconds=time.monotonic() - t0)
    except Exception as exc:  # noqa: BLE001 - a bug in one task is that task's error, not the run's
        return Outcome(task, "error", reason=f"{type(exc).__name__}: {exc}"[:300], seconds=time.monotonic() - t0)
    return Outcome(task, "ok", value=value, seconds=time.monotonic() - t0)


# ---- isolation: one subprocess per task ------------------------------------------------------
#
# A task's subprocess is forked from a "zygote": a Python process of this worker that imported
# the task's module (torch, the verifier) once. A fresh interpreter per task would import torch
# again each time (2-4 s, more than many instances take); a fork costs milliseconds. The zygote
# runs no task and no solve; it runs only the tasks' ``warm`` set-up (loading networks), with
# one torch and one onnxruntime thread (its environment), so no thread pool is forked with it.

# Process groups of the task subprocesses this process runs (each task is its group's leader).
_LIVE: set[int] = set()
_LIVE_LOCK = threading.Lock()


def kill_live_tasks() -> None:
    """SIGKILL every task subprocess group this process still runs (client interrupted)."""
    with _LIVE_LOCK:
        groups = list(_LIVE)
    for pgid in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the thread that started it ends (its parent died)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


class _Zygote:
    """The zygote process and its protocol: ``RUN id dir`` in; ``PID id pid`` and ``EXIT id
    status`` (``os.waitpid``'s) out. It exits, killing its tasks, when its stdin closes: when
    this process ends, however it ends."""

    def __init__(self, preload: Sequence[str], sample: str) -> None:
        self.preload = tuple(preload)
        env = dict(os.environ, OMP_NUM_THREADS="1", VNNX_THREADS="1")
        # A Dask nanny sets a 64 KiB malloc trim threshold for its workers: a task process,
        # which frees and reallocates tensors all the time, would give memory back to the OS
        # and map it again on every large free. Tasks are short-lived; glibc's default is right.
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "vnnx.executor", "--zygote", sample, *self.preload],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, text=True, bufsize=1)
        self.lock = threading.Lock()
        self.pids: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.events: dict[str, tuple[threading.Event, threading.Event]] = {}
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            kind, tid, value = line.split()
            with self.lock:
                started, ended = self.events.get(tid, (None, None))
                if kind == "PID":
                    self.pids[tid] = int(value)
                    if started:
                        started.set()
                elif kind == "EXIT":
                    self.status[tid] = int(value)
                    if ended:
                        ended.set()
        with self.lock:   # the zygote died: nothing more will come
            for started, ended in self.events.values():
                started.set()
                ended.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def start(self, tid: str, task_dir: str) -> tuple[Optional[int], threading.Event]:
        started, ended = threading.Event(), threading.Event()
        with self.lock:
            self.events[tid] = (started, ended)
            self.proc.stdin.write(f"RUN {tid} {task_dir}\n")
            self.proc.stdin.flush()
        started.wait()
        return self.pids.get(tid), ended

    def finish(self, tid: str) -> Optional[int]:
        with self.lock:
            self.events.pop(tid, None)
            self.pids.pop(tid, None)
            return self.status.pop(tid, None)


# This process's zygotes, one per task function module.
_ZYGOTES: dict[str, _Zygote] = {}
_ZYGOTE_LOCK = threading.Lock()


def _zygote(module: str, sample: Path) -> _Zygote:
    """The zygote for tasks of ``module``; a new one imports that module and unpickles
    ``sample`` (a task's pickle: the modules of its arguments) without running it."""
    with _ZYGOTE_LOCK:
        z = _ZYGOTES.get(module)
        if z is None or not z.alive():
            z = _ZYGOTES[module] = _Zygote([module] if module and module != "__main__" else [], str(sample))
        return z


def run_isolated(task: Task, stop: Optional[threading.Event] = None) -> Outcome:
    """Run ``task`` in its own subprocess (forked from this process's zygote, in its own process
    group, killed with the zygote) and wait at most ``task.timeout`` seconds; then SIGKILL the
    group. ``stop`` set: kill it now."""
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vnnx-task-") as tmp:
        (Path(tmp) / "task.pkl").write_bytes(pickle.dumps((task.fn, task.args, task_seed(task.key))))
        if task.warm is not None:
            (Path(tmp) / "warm.pkl").write_bytes(pickle.dumps(tuple(task.warm)))
        zygote = _zygote(getattr(task.fn, "__module__", "") or "", Path(tmp) / "task.pkl")
        tid = Path(tmp).name
        pid, ended = zygote.start(tid, tmp)
        if pid is None:
            zygote.finish(tid)
            return Outcome(task, "error", reason="the task process could not be started", seconds=time.monotonic() - t0)
        with _LIVE_LOCK:
            _LIVE.add(pid)
        try:
            killed = _wait(pid, ended, task.timeout, stop)
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)   # whatever the task started goes with it
            with _LIVE_LOCK:
                _LIVE.discard(pid)
        status = zygote.finish(tid)
        seconds = time.monotonic() - t0
        if killed == "timeout":
            return Outcome(task, "timeout", reason=f"hard timeout: killed after {seconds:.0f} s", seconds=seconds)
        if killed == "stopped":
            return Outcome(task, "error", reason="stopped: the run was interrupted", seconds=seconds)
        dst = Path(tmp) / "outcome.pkl"
        if status is not None and os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and dst.is_file():
            kind, value = pickle.loads(dst.read_bytes())
            output = _tail(Path(tmp) / "stdout")
            if kind == "ok":
                return Outcome(task, "ok", value=value, seconds=seconds, output=output)
            return Outcome(task, "error", reason=value, seconds=seconds, output=output)
        return Outcome(task, "error", reason=_death_reason(status, Path(tmp) / "stderr"), seconds=seconds)


def _wait(pid: int, ended: threading.Event, timeout: Optional[float], stop: Optional[threading.Event]) -> str:
    """Wait for the task process ``pid``: '' when it ended, 'timeout' or 'stopped' when killed."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        step = 0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
        if ended.wait(step):
            return ""
        why = "stopped" if stop is not None and stop.is_set() else \
            "timeout" if deadline is not None and time.monotonic() >= deadline else ""
        if why:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            ended.wait(5.0)
            return why


def _tail(path: Path) -> str:
    """The last :data:`OUTPUT_KEEP` bytes of a task's output file, as text ('' when none)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - OUTPUT_KEEP))
            return fh.read().decode(errors="replace")
    except OSError:
        return ""


def _death_reason(status: Optional[int], err: Path) -> str:
    tail = ""
    with contextlib.suppress(OSError):
        lines = [ln for ln in err.read_text(errors="replace").splitlines() if ln.strip()]
        tail = lines[-1].strip() if lines else ""
    if status is None:
        what = "the task process was lost (its zygote died)"
    elif os.WIFSIGNALED(status):
        what = f"task process killed by {signal.Signals(os.WTERMSIG(status)).name}"
    else:
        what = f"task process exited with code {os.WEXITSTATUS(status)}"
    return (f"{what}: {tail}" if tail else what)[:300]


def _zygote_main(sample: str, preload: Sequence[str]) -> int:
    """The zygote: import ``preload`` and what unpickling the task ``sample`` imports (not run),
    then fork a task process per ``RUN`` line, report its pid and, once reaped, its status.
    Stdin closed (its parent ended): kill every task, exit."""
    import importlib
    import select

    for module in preload:
        with contextlib.suppress(Exception):   # the task itself will report a module that fails
            importlib.import_module(module)
    with contextlib.suppress(Exception):
        pickle.loads(Path(sample).read_bytes())
    # The protocol gets its own descriptor; whatever the warm-ups print goes to stderr.
    global _PROTOCOL_FD
    _PROTOCOL_FD = os.dup(1)
    out = os.fdopen(_PROTOCOL_FD, "w", buffering=1)
    os.dup2(2, 1)
    warmed: list[bytes] = []
    children: dict[int, str] = {}
    stdin = sys.stdin.fileno()
    buffer = b""
    while True:
        ready, _, _ = select.select([stdin], [], [], 0.05)
        if ready:
            chunk = os.read(stdin, 65536)
            if not chunk:
                for pid in children:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(pid, signal.SIGKILL)
                return 0
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                _, tid, task_dir = line.decode().split(" ", 2)
                _warm_up(Path(task_dir) / "warm.pkl", warmed)
                pid = os.fork()
                if pid == 0:
                    _task_child(task_dir)   # never returns
                children[pid] = tid
                out.write(f"PID {tid} {pid}\n")
                out.flush()
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            tid = children.pop(pid, None)
            if tid is not None:
                out.write(f"EXIT {tid} {status}\n")
                out.flush()


# The zygote's protocol descriptor (closed in its task processes).
_PROTOCOL_FD: Optional[int] = None
#: Distinct warm-ups a zygote keeps track of (it runs one again once it has been forgotten).
WARM_KEEP = 64
#: Seconds a warm-up may take in the zygote before it is abandoned (the task then does that work
#: itself, under its own hard timeout): the zygote forks no task while it warms up.
WARM_LIMIT = float(os.environ.get("VNNX_WARM_LIMIT", "120"))


class _WarmTimeout(Exception):
    pass


def _warm_up(path: Path, warmed: list) -> None:
    """In the zygote: run a task's ``warm`` set-up unless the same one (byte-equal pickle) ran
    already, for at most :data:`WARM_LIMIT` seconds. Its failure is ignored: the task does that
    work itself."""
    with contextlib.suppress(OSError):
        blob = path.read_bytes()
        if blob in warmed:
            return
        warmed.append(blob)
        del warmed[:-WARM_KEEP]

        def late(*_):
            raise _WarmTimeout

        old = signal.signal(signal.SIGALRM, late)
        signal.setitimer(signal.ITIMER_REAL, WARM_LIMIT)
        try:
            fn, args = pickle.loads(blob)
            fn(*args)
        except Exception:  # noqa: BLE001 - ignored: the task does the work itself
            pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)


def _task_child(task_dir: str) -> None:
    """A forked task process: its own session, dies with the zygote, runs the task, writes
    ('ok', value) or ('error', reason) atomically. A crash writes nothing; the parent reports
    the exit status and the last line of stderr."""
    code = 1
    try:
        os.setsid()
        _die_with_parent()
        if _PROTOCOL_FD is not None:
            with contextlib.suppress(OSError):
                os.close(_PROTOCOL_FD)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        d = Path(task_dir)
        devnull = os.open(os.devnull, os.O_RDWR)
        err = os.open(d / "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        out = os.open(d / "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(devnull, 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        fn, args, seed = pickle.loads((d / "task.pkl").read_bytes())
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(1)
        _seed_everything(seed)
        try:
            result = ("ok", fn(*args))
        except VnnxError as exc:
            result = ("error", str(exc)[:300])
        except Exception as exc:  # noqa: BLE001 - reported as the task's error
            result = ("error", f"{type(exc).__name__}: {exc}"[:300])
        tmp = d / "outcome.pkl.tmp"
        tmp.write_bytes(pickle.dumps(result))
        os.replace(tmp, d / "outcome.pkl")
        code = 0
    except BaseException:  # noqa: BLE001 - the traceback goes to the task's stderr
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)   # never back into the zygote's loop; a solver thread must not hold it


# ---- back ends -------------------------------------------------------------------------------

class Executor:
    """An open back end. :meth:`run` yields each task's :class:`Outcome` as it finishes; leaving
    the loop early (an exception, Ctrl-C) stops the tasks still running."""

    slots = 1
    name = "in-process"

    def run(self, tasks: Sequence[Task], *, isolate: bool = True, progress: bool = False, desc: str = "tasks",
            initializer: Optional[Callable[[], None]] = None) -> Iterator[Outcome]:
        """``isolate``: each task in its own subprocess with its hard timeout (not in-process).
        ``initializer``: run once in each local worker process of non-isolated tasks."""
        bar = _Bar(len(tasks), f"{desc} ({self.name})", progress, self.slots)
        try:
            for outcome in self._outcomes(list(tasks), isolate, initializer):
                bar.done(outcome)
                yield outcome
        finally:
            bar.close()

    def _outcomes(self, tasks, isolate, initializer) -> Iterator[Outcome]:
        for task in tasks:
            yield run_direct(task)

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Bar:
    """tqdm bar: done, with running and failed (timeout or error) beside it."""

    def __init__(self, total: int, desc: str, enabled: bool, slots: int) -> None:
        from tqdm.auto import tqdm

        self.total, self.slots, self.failed, self.n = total, slots, 0, 0
        self.bar = tqdm(total=total, desc=desc, disable=not enabled, unit="task")
        self._post()

    def _post(self) -> None:
        self.bar.set_postfix_str(f"running {min(self.slots, self.total - self.n)}, failed {self.failed}",
                                 refresh=False)

    def done(self, outcome: Outcome) -> None:
        self.n += 1
        self.failed += outcome.status != "ok"
        self._post()
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


class LocalExecutor(Executor):
    """``jobs`` tasks at once on this machine: isolated tasks each in a subprocess (started by
    one thread per slot), others in a pool of forked worker processes."""

    def __init__(self, jobs: int) -> None:
        self.slots, self.name = jobs, f"{jobs} processes"

    def _outcomes(self, tasks, isolate, initializer) -> Iterator[Outcome]:
        from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed

        if not tasks:
            return
        stop = threading.Event()
        if isolate:
            pool = ThreadPoolExecutor(max_workers=self.slots)
            futures = [pool.submit(run_isolated, t, stop) for t in tasks]
        else:
            import multiprocessing as mp

            # fork: non-isolated tasks (LPs) need numpy and a solver only; a spawn re-imports torch.
            pool = ProcessPoolExecutor(max_workers=self.slots, mp_context=mp.get_context("fork"),
                                       initializer=_local_init, initargs=(initializer,))
            futures = [pool.submit(run_direct, t) for t in tasks]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        except BaseException:
            stop.set()
            kill_live_tasks()
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                with contextlib.suppress(Exception):
                    proc.kill()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()


def _local_init(initializer: Optional[Callable[[], None]]) -> None:
    """In each forked worker: die with the parent, leave Ctrl-C to it (it stops the workers)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    if os.getppid() == 1:
        os._exit(1)
    if initializer is not None:
        initializer()


def _dask_task(task: Task, isolate: bool) -> Outcome:
    """What a Dask worker runs for one task: an isolated task's subprocess is killed as soon as
    the client cancels it (an interrupted client leaves nothing running on the cluster)."""
    if not isolate:
        return run_direct(task)
    stop, done = threading.Event(), threading.Event()
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()   # thread-local: asked here, in the task's thread
        threading.Thread(target=_watch_cancel, args=(worker, key, stop, done), daemon=True).start()
    except Exception:  # noqa: BLE001 - not on a worker, or another distributed: no early stop
        pass
    try:
        return run_isolated(task, stop)
    finally:
        done.set()


def _watch_cancel(worker, key, stop: threading.Event, done: threading.Event) -> None:
    """On a Dask worker: set ``stop`` when the scheduler forgets or cancels the running task."""
    while not done.wait(0.5):
        ts = worker.state.tasks.get(key)
        if ts is None or ts.state in ("cancelled", "released", "forgotten"):
            stop.set()
            return


class DaskExecutor(Executor):
    """Tasks on a Dask cluster: a running one at ``scheduler``, or a ``LocalCluster`` of
    ``local_cluster`` single-threaded worker processes on 127.0.0.1 started here (and stopped on
    close). A task whose worker dies is tried again on another worker by the scheduler, at most
    ``retries`` times (its ``allowed-failures``); then it is an ``error`` naming the cause."""

    def __init__(self, spec: ExecutorSpec) -> None:
        import logging

        import dask
        from distributed import Client, LocalCluster

        self.spec, self.cluster = spec, None
        # Dask's INFO lines (cluster start, "State start", ...) are not for vnnx's users, whose
        # stdout a pipeline may parse: warnings and errors only.
        for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.worker",
                     "distributed.core", "distributed.http.proxy"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # allowed-failures is the scheduler's: it holds for a LocalCluster (scheduler in this
        # process); a running scheduler has its own (docs/cluster.md).
        config = {"distributed.scheduler.allowed-failures": spec.retries,
                  "distributed.comm.timeouts.connect": f"{spec.connect_timeout}s"}
        with dask.config.set(config):
            try:
                if spec.local_cluster:
                    self.cluster = LocalCluster(n_workers=spec.local_cluster, threads_per_worker=1, processes=True,
                                                host="127.0.0.1", dashboard_address=None,
                                                silence_logs=logging.ERROR)
                    self.client = Client(self.cluster, timeout=spec.connect_timeout)
                else:
                    self.client = Client(spec.scheduler, timeout=spec.connect_timeout)
            except (OSError, TimeoutError) as exc:
                if self.cluster is not None:
                    self.cluster.close()
                where = spec.scheduler or "a local cluster"
                raise VnnxError(f"cannot reach the Dask scheduler at {where}: "
                                f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}") from None
        n = len(self.client.scheduler_info().get("workers", {}))
        self.slots = max(1, sum(w.get("nthreads", 1) for w in self.client.scheduler_info()["workers"].values())) \
            if n else 1
        self.name = f"dask, {n} workers" if spec.scheduler else f"local cluster, {n} workers"

    def _outcomes(self, tasks, isolate, initializer) -> Iterator[Outcome]:
        from distributed import as_completed

        if not tasks:
            return
        by_key = {}
        futures = []
        for i, task in enumerate(tasks):
            fut = self.client.submit(_dask_task, task, isolate, pure=False,
                                     key=f"vnnx-{i}-{task_seed(task.key + str(time.time_ns()))}")
            by_key[fut.key] = task
            futures.append(fut)
        try:
            for fut in as_completed(futures):
                task = by_key[fut.key]
                if fut.status == "finished":
                    yield fut.result()
                else:
                    yield Outcome(task, "error", reason=self._failure(fut))
                fut.release()
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.cancel(futures, force=True)
            raise

    def _failure(self, fut) -> str:
        try:
            exc = fut.exception(timeout=self.spec.connect_timeout)
        except Exception as err:  # noqa: BLE001 - the reason is all we need
            exc = err
        name = type(exc).__name__
        if name == "KilledWorker":
            return f"its worker died {self.spec.retries + 1} times while running it (KilledWorker)"
        return f"{name}: {exc}"[:300]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close(timeout=self.spec.connect_timeout)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=self.spec.connect_timeout)


def open_executor(spec: Optional[ExecutorSpec] = None) -> Executor:
    """The back end ``spec`` names, opened (a Dask client connected, a local cluster started).
    Use it as a context manager. Raises :class:`VnnxError` (one line) when the scheduler
    cannot be reached within ``spec.connect_timeout`` seconds."""
    spec = (spec or ExecutorSpec()).validate()
    if spec.kind == "dask":
        return DaskExecutor(spec)
    if spec.kind == "processes":
        return LocalExecutor(spec.jobs)
    return Executor()


def run_tasks(tasks: Sequence[Task], spec: Optional[ExecutorSpec] = None, *, isolate: Optional[bool] = None,
              progress: bool = False, desc: str = "tasks") -> Iterator[Outcome]:
    """Open ``spec``'s back end, yield every task's :class:`Outcome` as it finishes, close it.
    ``isolate`` None: isolated on every back end but in-process."""
    spec = (spec or ExecutorSpec()).validate()
    with open_executor(spec) as ex:
        yield from ex.run(tasks, isolate=spec.kind != "in-process" if isolate is None else isolate,
                          progress=progress, desc=desc)


def map_tasks(fn: Callable, arg_tuples: Iterable[tuple], keys: Optional[Sequence[str]] = None,
              spec: Optional[ExecutorSpec] = None, *, timeout: Optional[float] = None,
              isolate: Optional[bool] = None, progress: bool = False, desc: str = "tasks") -> list[Outcome]:
    """``fn(*args)`` for every tuple of ``arg_tuples``, outcomes in the input order (keys default
    to the tuples' reprs, which fix the seeds)."""
    arg_tuples = [tuple(a) for a in arg_tuples]
    keys = list(keys) if keys is not None else [repr(a) for a in arg_tuples]
    if len(keys) != len(arg_tuples) or len(set(keys)) != len(keys):
        raise ConfigError("map_tasks: keys must be unique, one per argument tuple")
    tasks = [Task(k, fn, a, timeout) for k, a in zip(keys, arg_tuples)]
    done = {o.task.key: o for o in run_tasks(tasks, spec, isolate=isolate, progress=progress, desc=desc)}
    return [done[k] for k in keys]


# ---- command-line flags ----------------------------------------------------------------------

def add_executor_flags(p, jobs: bool = True) -> None:
    """``--jobs`` (unless the command has its own), ``--scheduler``, ``--local-cluster``."""
    if jobs:
        p.add_argument("--jobs", type=int, default=1,
                       help="tasks at once in local processes, one thread each, each task in its own "
                            "subprocess (default 1: in this process)")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                   help="run the tasks on this running Dask cluster (docs/cluster.md)")
    p.add_argument("--local-cluster", type=int, default=None, metavar="N",
                   help="start a Dask LocalCluster of N single-threaded worker processes on 127.0.0.1")


def executor_spec(args, jobs_attr: str = "jobs") -> ExecutorSpec:
    """The :class:`ExecutorSpec` of a command's parsed flags (see :func:`add_executor_flags`)."""
    jobs = getattr(args, jobs_attr, 1)
    return ExecutorSpec(jobs=1 if jobs is None else int(jobs), scheduler=getattr(args, "scheduler", None),
                        local_cluster=getattr(args, "local_cluster", None)).validate()


if __name__ == "__main__" and sys.argv[1:2] == ["--zygote"]:  # run_isolated's zygote
    sys.exit(_zygote_main(sys.argv[2], sys.argv[3:]))
