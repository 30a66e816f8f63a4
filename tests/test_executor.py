"""vnnx.executor (issue 22): the back ends agree, isolated tasks fail alone, a real Dask cluster
survives a worker killed mid-run, --resume after a killed run, an unreachable scheduler, and the
documented SLURM config's job script. Network: 127.0.0.1 only."""
import csv
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vnnx.executor import ExecutorSpec, Task, map_tasks, open_executor, run_tasks

REPO = Path(__file__).resolve().parents[1]
VNNX = [sys.executable, "-m", "vnnx.cli"]
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


def draw(n):
    """Numbers from the global generators: equal on every back end only if seeding is."""
    import torch

    return torch.rand(n).tolist() + np.random.random(n).tolist()


# Set by warm_set in the zygote that forks the task processes (Task.warm).
_WARM: dict = {}


def warm_set(key, value):
    print("warm-up output must not reach the zygote's protocol")
    _WARM[key] = (value, os.getpid(), _WARM.get(key, (None, None, 0))[2] + 1)


def warm_forever(key):
    _WARM[key] = "started"
    while True:
        time.sleep(0.05)


def shout(text):
    print(text)
    return len(text)


def read_warm(key):
    return _WARM.get(key), os.getpid()


def _tasks():
    return ([Task(f"draw-{i}", draw, (2,)) for i in range(4)]
            + [Task("fact", math.factorial, (20,)), Task("bad", math.sqrt, (-1.0,))])


def _values(outcomes):
    return {o.task.key: (o.status, o.value, o.reason.split(":")[0]) for o in outcomes}


@pytest.fixture
def importable_tests(monkeypatch):
    """Task processes and Dask workers import this module by name (``draw``)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(REPO / "tests")]))


@pytest.fixture(scope="module")
def scheduler():
    """A Dask LocalCluster of two single-threaded workers on 127.0.0.1 for this module's tests,
    which reach it as a running cluster (--scheduler); its workers import this module by name."""
    import logging

    from distributed import LocalCluster

    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "tests")])
    try:
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                               silence_logs=logging.ERROR)
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    yield cluster.scheduler_address
    cluster.close()


def test_back_ends_give_the_same_outcomes(importable_tests, scheduler):
    base = _values(run_tasks(_tasks()))
    assert base["fact"] == ("ok", math.factorial(20), "") and base["bad"][:2] == ("error", None)
    assert base["draw-0"] != base["draw-1"]
    assert _values(run_tasks(_tasks(), ExecutorSpec(jobs=2))) == base
    assert _values(run_tasks(_tasks(), ExecutorSpec(scheduler=scheduler))) == base
    # map_tasks: input order, whatever the finishing order.
    out = map_tasks(math.factorial, [(5,), (3,), (4,)], spec=ExecutorSpec(jobs=2))
    assert [o.value for o in out] == [120, 6, 24]


def test_an_isolated_tasks_stdout_comes_back_with_its_outcome(importable_tests):
    out = {o.task.key: o for o in run_tasks([Task("a", shout, ("hello",)), Task("b", shout, ("world",))],
                                             ExecutorSpec(jobs=2))}
    assert out["a"].output == "hello\n" and out["b"].output == "world\n" and out["a"].value == 5


def test_a_hanging_warm_step_is_abandoned(importable_tests, monkeypatch):
    """The zygote forks no task while it warms up: a warm-up past VNNX_WARM_LIMIT seconds is
    abandoned and the task runs without it. (operator.mul: a module no other test's tasks use,
    so this test's zygote starts with the short limit.)"""
    import operator

    monkeypatch.setenv("VNNX_WARM_LIMIT", "1")
    t0 = time.monotonic()
    out = list(run_tasks([Task("mul", operator.mul, (6, 7), timeout=30, warm=(warm_forever, ("x",)))],
                         ExecutorSpec(jobs=2)))
    assert out[0].status == "ok" and out[0].value == 42
    assert time.monotonic() - t0 < 20


def test_warm_step_runs_once_in_the_zygote_and_its_failure_is_ignored(importable_tests):
    tasks = [Task(f"t{i}", read_warm, ("net",), warm=(warm_set, ("net", 42))) for i in range(3)]
    tasks.append(Task("failing-warm", read_warm, ("other",), warm=(math.sqrt, (-1.0,))))
    out = {o.task.key: o for o in run_tasks(tasks, ExecutorSpec(jobs=2))}
    assert all(o.status == "ok" for o in out.values()), [o.reason for o in out.values()]
    seen = [out[f"t{i}"].value for i in range(3)]
    for (value, warm_pid, runs), task_pid in seen:
        assert value == 42 and warm_pid != task_pid        # set before the fork, in the zygote
        assert runs == 1                                   # once for the three tasks
    assert len({task_pid for _, task_pid in seen}) == 3    # each task its own process
    assert out["failing-warm"].value[0] is None
    # In-process the warm step is not run: the task must do without it.
    direct = next(iter(run_tasks([Task("d", read_warm, ("direct",), warm=(warm_set, ("direct", 1)))])))
    assert direct.value[0] is None


@pytest.mark.parametrize("back_end", ["processes", "dask"])
def test_a_crash_or_a_hang_costs_one_task(back_end, scheduler):
    spec = ExecutorSpec(jobs=2) if back_end == "processes" else ExecutorSpec(scheduler=scheduler)
    tasks = [Task("crash", os.abort), Task("hang", time.sleep, (600,), timeout=2.0),
             Task("fine", math.factorial, (6,))]
    t0 = time.monotonic()
    out = {o.task.key: o for o in run_tasks(tasks, spec)}
    assert time.monotonic() - t0 < 60
    assert out["crash"].status == "error" and "SIGABRT" in out["crash"].reason
    assert out["hang"].status == "timeout" and "hard timeout" in out["hang"].reason
    assert out["fine"].status == "ok" and out["fine"].value == 720


def _rows(path):
    return {(r["onnx"], r["vnnlib"]): r["verdict"] for r in csv.DictReader(open(path))}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The 5 instances of ../shared/benchmarks/test, sequentially in this process."""
    from vnnx.bench import run_benchmark

    shared = REPO.parent / "shared" / "benchmarks" / "test"
    if not shared.is_dir():
        pytest.skip("../shared is not available")
    d = tmp_path_factory.mktemp("ref")
    inst = d / "instances.csv"
    inst.write_text("".join(f"{shared / o},{shared / v},60\n" for o, v in
                            [("test_nano.onnx", "test_nano.vnnlib"), ("test_tiny.onnx", "test_tiny.vnnlib"),
                             ("test_small.onnx", "test_small.vnnlib"), ("test_sat.onnx", "test_prop.vnnlib"),
                             ("test_unsat.onnx", "test_prop.vnnlib")]))
    run_benchmark(str(inst), out_csv=str(d / "seq.csv"), progress=False)
    rows = _rows(d / "seq.csv")
    assert sorted(rows.values()) == ["sat", "unsat", "unsat", "unsat", "unsat"]
    return inst, rows


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid):
    """(pid, start time) of every live descendant of ``pid``."""
    import psutil

    try:
        return {(c.pid, c.create_time()) for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return set()


def _left(procs, limit=10.0):
    """Those of ``procs`` still alive after up to ``limit`` seconds (exiting takes a moment)."""
    deadline = time.monotonic() + limit
    while _alive(procs) and time.monotonic() < deadline:
        time.sleep(0.2)
    return _alive(procs)


def _alive(procs):
    import psutil

    out = []
    for pid, started in procs:
        try:
            p = psutil.Process(pid)
            if p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.Error:
            pass
    return out


def test_real_dask_cluster_survives_a_killed_worker(reference, tmp_path):
    """A scheduler and two workers started here on 127.0.0.1; one worker is killed while it runs
    a task: every row still completes (the task ran again on the other worker), with the
    sequential verdicts, and no process is left behind."""
    inst, rows = reference
    port = _free_port()
    env = ENV
    started = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                 "--port", str(port), "--no-dashboard"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            started.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                                             f"tcp://127.0.0.1:{port}", "--nthreads", "1", "--no-nanny",
                                             "--host", "127.0.0.1", "--no-dashboard"], env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        workers = started[1:]
        out = tmp_path / "r.csv"
        result = {}

        def client():   # the client in this process, beside the test's watch on the workers
            from vnnx.bench import run_benchmark

            try:
                result["summary"] = run_benchmark(str(inst), out_csv=str(out), progress=False,
                                                  executor=ExecutorSpec(scheduler=f"tcp://127.0.0.1:{port}"))
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                result["error"] = exc

        thread = threading.Thread(target=client)
        thread.start()
        seen, victim, deadline = set(), None, time.monotonic() + 120
        while victim is None and time.monotonic() < deadline and thread.is_alive():
            for w in workers:   # a worker busy with a task process
                below = _descendants(w.pid)
                seen |= below
                if len(below) >= 2:   # its zygote and a task forked from it
                    victim = w
            time.sleep(0.05)
        assert victim is not None, f"no worker ever started a task {result}"
        victims = _descendants(victim.pid)
        victim.kill()
        while thread.is_alive():
            for w in workers:
                seen |= _descendants(w.pid)
            time.sleep(0.2)
        assert "error" not in result, result
        assert _rows(out) == rows
        assert not _left(victims), "the killed worker's zygote or task outlived it"
    finally:
        for p in reversed(started):
            p.terminate()
        for p in started:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    assert not _left(seen), "a task process outlived its cluster"


def test_resume_after_a_killed_run_gives_the_same_rows(reference, tmp_path):
    inst, rows = reference
    out = tmp_path / "r.csv"
    proc = subprocess.Popen([*VNNX, "bench", str(inst), "--out", str(out), "--jobs", "2"], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (out.exists() and len(out.read_text().splitlines()) >= 3):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    below = _descendants(proc.pid)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 143
    half = _rows(out)
    assert 2 <= len(half) < len(rows) and all(half[k] == rows[k] for k in half)
    assert below and not _left(below), "orphaned task processes"
    from vnnx.bench import run_benchmark

    run_benchmark(str(inst), out_csv=str(out), jobs=2, resume=True, progress=False)
    assert _rows(out) == rows


def test_a_task_that_keeps_killing_its_worker_ends_as_an_error_after_its_retries():
    """Not isolated, os.abort kills the Dask worker itself: the scheduler retries the task on a
    restarted worker, and after ``retries`` + 1 deaths it is an ``error`` naming the cause; the
    cluster goes on with the next tasks."""
    with open_executor(ExecutorSpec(local_cluster=1, retries=1)) as ex:
        out = list(ex.run([Task("abort", os.abort)], isolate=False))
        assert out[0].status == "error"
        assert "died 2 times" in out[0].reason and "KilledWorker" in out[0].reason
        again = list(ex.run([Task("fine", math.factorial, (5,))], isolate=False))
        assert again[0].status == "ok" and again[0].value == 120


def test_longest_first_orders_by_a_prior_run(reference, tmp_path):
    from vnnx.bench import FIELDS, run_benchmark
    from vnnx.errors import VnnxError
    from vnnx.io.vnnlib import read_instances_csv

    inst, rows = reference
    keys = [(str(o), str(v)) for o, v, _ in read_instances_csv(inst)]
    prior = tmp_path / "prior.csv"
    with open(prior, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        for (o, v), sec in zip(keys[1:], [3.0, 9.0, 1.0, 5.0]):     # keys[0] is not in the prior run
            w.writerow({"onnx": o, "vnnlib": v, "verdict": "unsat", "seconds": sec, "decided_by": "", "timeout": 60})
    out = tmp_path / "ordered.csv"
    run_benchmark(str(inst), out_csv=str(out), progress=False, longest_first=str(prior))
    got = [(r["onnx"], r["vnnlib"]) for r in csv.DictReader(open(out))]
    assert got == [keys[0], keys[2], keys[4], keys[1], keys[3]]
    assert _rows(out) == rows
    with pytest.raises(VnnxError, match="no such results CSV"):
        run_benchmark(str(inst), out_csv=str(tmp_path / "x.csv"), progress=False, longest_first=str(tmp_path / "none.csv"))
    assert not (tmp_path / "x.csv").exists()


def test_jobs_zero_is_refused_in_one_line(tmp_path, capsys):
    from vnnx.cli import main

    inst = tmp_path / "i.csv"
    inst.write_text("a.onnx,b.vnnlib,10\n")
    assert main(["bench", str(inst), "--jobs", "0", "--out", str(tmp_path / "r.csv")]) == 2
    assert "--jobs must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "r.csv").exists()


def test_unreachable_scheduler_is_one_line_and_exit_2(tmp_path, capsys):
    from vnnx.cli import main

    out = tmp_path / "r.csv"
    out.write_text("kept\n")
    inst = tmp_path / "i.csv"
    inst.write_text("a.onnx,a.vnnlib,60\n")
    t0 = time.monotonic()
    assert main(["bench", str(inst), "--out", str(out), "--scheduler", f"tcp://127.0.0.1:{_free_port()}"]) == 2
    assert time.monotonic() - t0 < 20
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vnnx: error: cannot reach the Dask scheduler at tcp://127.0.0.1:")
    assert out.read_text() == "kept\n"   # the earlier results are untouched
    assert main(["bench", str(inst), "--out", str(out), "--scheduler", "localhost:8786"]) == 2
    assert "tcp://HOST:PORT" in capsys.readouterr().err
    assert main(["bench", str(inst), "--out", str(out), "--jobs", "2", "--local-cluster", "2"]) == 2


def test_vnn_lp_per_neuron_lps_on_a_local_cluster_same_optimum(rng):
    from vnnx.network import Dense
    from vnnx_plugins.vnn_lp import SparsifyOptions, sparsify

    from nets import random_mlp

    net = random_mlp(rng, (5, 16, 12, 3))
    x = rng.uniform(-1, 1, size=(30, 5))
    y = net.forward(x).argmax(1)
    a, ra = sparsify(net, x, y, SparsifyOptions(check_onnx=False, progress=False))
    b, rb = sparsify(net, x, y, SparsifyOptions(check_onnx=False, progress=False, local_cluster=2))
    assert [r.formulation for r in ra.layers][:2] == ["per-neuron", "per-neuron"]
    assert [r.l1_after for r in ra.layers] == pytest.approx([r.l1_after for r in rb.layers], rel=1e-9)
    for la, lb in zip(a.layers, b.layers):
        if isinstance(la, Dense):
            assert np.allclose(la.weight, lb.weight, atol=1e-9)


def test_radius_over_anchors_in_processes_matches_in_process(tmp_path, capsys):
    import json

    from vnnx.cli import main
    from vnnx.data import save_npz
    from vnnx.io.onnx import network_to_onnx

    from nets import random_mlp

    net = random_mlp(np.random.default_rng(3), (4, 10, 3))
    x = np.random.default_rng(4).uniform(0.2, 0.8, size=(3, 4))
    network_to_onnx(net, tmp_path / "m.onnx")
    save_npz(tmp_path / "d.npz", x, net.forward(x).argmax(1))
    argv = ["radius", "--onnx", str(tmp_path / "m.onnx"), "--data", str(tmp_path / "d.npz"), "--index", "0:3",
            "--timeout", "10", "--rel-tol", "0.05"]
    results = []
    for extra in ([], ["--jobs", "2"]):
        assert main(argv + extra) == 0
        doc = json.loads(capsys.readouterr().out)
        results.append([(a["index"], a.get("status"), a.get("d_bnd"), a.get("verified_radius"))
                        for a in doc["anchors"]])
    assert results[0] == results[1] and len(results[0]) == 3


def test_slurm_job_script_from_the_documented_config():
    """docs/cluster.md's dask-jobqueue config renders a SLURM job script (no SLURM here)."""
    import dask
    import yaml
    from dask_jobqueue import SLURMCluster

    path = REPO / "specs" / "configs" / "dask_slurm.yaml"
    assert path.read_text() in (REPO / "docs" / "cluster.md").read_text()
    config = yaml.safe_load(path.read_text())["jobqueue"]["slurm"]
    with dask.config.set({f"jobqueue.slurm.{k}": v for k, v in config.items()}):
        cluster = SLURMCluster(scheduler_options={"host": "127.0.0.1", "dashboard_address": ":0"})
        try:
            script = cluster.job_script()
        finally:
            cluster.close()
    assert script.startswith("#!/usr/bin/env bash")
    for line in ("#SBATCH -J vnnx-worker", "#SBATCH -p cpu", "#SBATCH --cpus-per-task=16", "#SBATCH -t 04:00:00",
                 "source /path/to/vnnx/.venv/bin/activate"):
        assert line in script, line
    worker = next(ln for ln in script.splitlines() if "dask_worker" in ln)
    assert worker.startswith("python -m distributed.cli.dask_worker tcp://127.0.0.1:")
    assert "--nthreads 1" in worker and "--nworkers 16" in worker and "--lifetime=230m" in worker
