"""The benchmark sweeps of ``tools/`` on :mod:`vnnx.executor` (issue 22).

A sweep's independent units of work (one training config, one (network, ε) evaluation, one
anchor) become :class:`vnnx.executor.Task` s with stable keys (a key fixes its seed:
:func:`vnnx.executor.task_seed`), and :func:`ordered` hands their values back in the order of
the sequential loop, as soon as every earlier one is in, so that what a tool prints and writes
is the same on every back end (timings aside).

A task function must be importable by its module name in another process (a task's zygote, a
Dask worker). A tool run as a script is ``__main__`` there; :func:`task_fn` swaps such a function
for the same one of the tool imported by its file name, and :func:`importable` puts ``tools/``
and the repository root on ``sys.path`` and on ``PYTHONPATH`` (inherited by the processes the
executor starts). On a Dask cluster started elsewhere, the workers need the same ``PYTHONPATH``
(``docs/cluster.md``).
"""
from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence

from vnnx.errors import VnnxError

TOOLS = Path(__file__).resolve().parent
ROOT = TOOLS.parent


class TaskFailed(VnnxError):
    """A sweep's task ended in ``error`` or ``timeout``."""


def cli(main: Callable, tool: str, argv=None) -> int:
    """``main(argv)`` as a tool's entry point: a failed task is a one-line error and exit code 1;
    bad flags or an unreachable Dask scheduler (:class:`VnnxError`) a one-line error and exit 2."""
    try:
        return int(main(argv) or 0)
    except TaskFailed as exc:
        print(f"{tool}: error: {exc}", file=sys.stderr)
        return 1
    except VnnxError as exc:
        print(f"{tool}: error: {exc}", file=sys.stderr)
        return 2


def importable() -> None:
    """``tools/`` and the repository root on ``sys.path`` here and on ``PYTHONPATH`` for the
    processes started from here."""
    for p in (str(ROOT), str(TOOLS)):
        if p not in sys.path:
            sys.path.insert(0, p)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    for p in (str(ROOT), str(TOOLS)):
        if p not in parts:
            parts.append(p)
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)


def task_fn(fn: Callable) -> Callable:
    """``fn``, or, where it is defined in a tool run as a script (``__main__``), the same
    function of that tool imported by its module name (which other processes can import)."""
    if getattr(fn, "__module__", None) != "__main__":
        return fn
    importable()
    main_file = getattr(sys.modules["__main__"], "__file__", None)
    if not main_file:
        return fn
    module = importlib.import_module(Path(main_file).stem)
    return getattr(module, fn.__qualname__)


def ordered(fn: Callable, arg_tuples: Iterable[tuple], keys: Sequence[str], spec=None, *, desc: str = "tasks",
            timeout: Optional[float] = None) -> Iterator[Any]:
    """``fn(*args)`` for every tuple, as tasks of the executor ``spec`` (None: in this process);
    the values come back in the input order (see :func:`ordered_units`)."""
    arg_tuples = [tuple(a) for a in arg_tuples]
    if len(keys) != len(arg_tuples):
        from vnnx.errors import ConfigError

        raise ConfigError(f"{desc}: one task key per unit of work")
    return ordered_units([(k, fn, a) for k, a in zip(keys, arg_tuples)], spec, desc=desc, timeout=timeout)


def ordered_units(units: Sequence[tuple[str, Callable, tuple]], spec=None, *, desc: str = "tasks",
                  timeout: Optional[float] = None) -> Iterator[Any]:
    """Each ``(key, fn, args)`` of ``units`` as a task of the executor ``spec`` (None: in this
    process, one after another); the values come back in the order of ``units``, each as soon as
    it and every earlier one are done. A task that failed ends the sweep:
    :class:`TaskFailed` naming its key and reason (the tasks still running are stopped)."""
    from vnnx.errors import ConfigError
    from vnnx.executor import ExecutorSpec, Task, run_tasks

    spec = spec or ExecutorSpec()
    keys = [k for k, _, _ in units]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"{desc}: task keys must be unique")
    if spec.kind != "in-process":
        importable()
    tasks = [Task(k, task_fn(fn), tuple(a), timeout) for k, fn, a in units]
    return _in_order(run_tasks(tasks, spec, progress=spec.kind != "in-process", desc=desc), keys, desc, TaskFailed)


def _in_order(outcomes, keys: list, desc: str, error) -> Iterator[Any]:
    done: dict[str, Any] = {}
    nxt = 0
    try:
        for outcome in outcomes:
            done[outcome.task.key] = outcome
            while nxt < len(keys) and keys[nxt] in done:
                o = done.pop(keys[nxt])
                nxt += 1
                if o.output:        # what an isolated task printed, in the sequential order
                    sys.stdout.write(o.output)
                    sys.stdout.flush()
                if o.status != "ok":
                    raise error(f"{desc}: {o.task.key}: {o.status}: {o.reason}")
                yield o.value
    finally:
        outcomes.close()
