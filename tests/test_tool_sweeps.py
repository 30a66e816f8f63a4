"""The benchmark sweeps of tools/ on vnnx.executor (issue 22): the same results rows in this
process and with ``--jobs 2`` (each task in a subprocess that imports the tool by its name)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.nets import random_cnn, random_mlp
from vnnx.executor import ExecutorSpec

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"
MNIST = REPO.parent / "shared" / "data" / "mnist"
sys.path.insert(0, str(TOOLS))

import _sweep  # noqa: E402

TWO = ExecutorSpec(jobs=2)


@pytest.fixture(autouse=True)
def _keep_pythonpath(monkeypatch):
    """A sweep away from in-process adds tools/ to PYTHONPATH (for its task processes): undone after."""
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))


def _timeless(obj):
    """``obj`` without its timings (the only thing a back end may change)."""
    if isinstance(obj, dict):
        return {k: _timeless(v) for k, v in obj.items() if not (isinstance(k, str) and ("second" in k or k == "date"))}
    if isinstance(obj, (list, tuple)):
        return [_timeless(v) for v in obj]
    return obj


def test_capm_evaluations_same_rows_in_process_and_two_jobs():
    import bench_capm
    from vnnx.io.vnnlib import robustness_property

    rng = np.random.default_rng(3)
    nets = [random_cnn(rng), random_cnn(rng, pool_kernel=(3, 3), pool_stride=(2, 2))]
    units = []
    for k, (net, eps) in enumerate(zip(nets, (0.01, 0.1))):
        xs = rng.uniform(0.2, 0.8, size=(2, 36))
        labels = [int(np.argmax(net.forward(x.reshape(1, 1, 6, 6)))) for x in xs]
        props = [robustness_property(x, eps, lab, 3) for x, lab in zip(xs, labels)]
        units.append((f"net{k}:{eps:g}", bench_capm._eval_task, (f"net{k}", net, props, eps, (), 1)))
    here = list(_sweep.ordered_units(units))
    two = list(_sweep.ordered_units(units, TWO))
    assert len(here) == 2 and all(len(rows) >= 2 * 7 + 1 for rows in here)
    assert {r["method"] for rows in here for r in rows} >= {"ibp", "capm-crown", "graph-crown", "milp"}
    assert _timeless(here) == _timeless(two)
    # the rows come back in the order of the units, not in finishing order
    assert [rows[0]["net"] + f":{rows[0]['eps']:g}" for rows in two] == [u[0] for u in units]


def _tiny_onnx(path: Path) -> str:
    from vnnx.io.onnx import network_to_onnx

    network_to_onnx(random_mlp(np.random.default_rng(0), sizes=(784, 12, 10, 10)), path)
    return str(path)


def test_vnn_lp_records_same_in_process_and_two_jobs(tmp_path):
    import bench_vnn_lp
    from vnnx.data import fit_to_input, mnist_split

    _, ev = mnist_split(MNIST, 14)
    x = fit_to_input(ev.x, 784).astype(np.float64)
    onnx = _tiny_onnx(tmp_path / "tiny.onnx")
    settings = {"workers": 1, "time_limit": 60.0, "paper": "eps0", "paper_time_limit": 60.0}
    records = {}
    for name, spec in (("here", None), ("two", TWO)):
        out = tmp_path / name
        out.mkdir()
        jobs = [("tiny", onnx, eps, x[:8], ev.y[:8], x[8:], ev.y[8:], [0.01], (0.0, 1.0), settings, str(out))
                for eps in (0.0, 0.1)]
        records[name] = list(_sweep.ordered(bench_vnn_lp.net_eps_record, jobs, ["tiny:0", "tiny:0.1"], spec))
        for eps in ("0", "0.1"):
            assert (out / f"tiny_eps{eps}.onnx").is_file()
    assert [r["epsilon"] for r in records["here"]] == [0.0, 0.1]
    assert all(r["guarantee_passed"] for r in records["here"])
    assert "paper_l1_after" in records["here"][0] and "paper_l1_after" not in records["here"][1]
    assert _timeless(records["here"]) == _timeless(records["two"])
    assert (tmp_path / "here" / "tiny_eps0.1.onnx").read_bytes() == (tmp_path / "two" / "tiny_eps0.1.onnx").read_bytes()


def test_vnn_lp_script_with_two_jobs_matches_in_process(tmp_path):
    """Run as a script (``__main__``), its task function still reaches the task processes."""
    import bench_vnn_lp

    flags = ["--nets", "mnist_relu_3_50", "--eps", "0", "--n-val", "6", "--n-test", "4", "--deltas", "0.01",
             "--paper", "none", "--workers", "1"]
    assert bench_vnn_lp.main(flags + ["--out", str(tmp_path / "here")]) == 0
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(TOOLS / "bench_vnn_lp.py"), *flags, "--out", str(tmp_path / "two"),
                          "--jobs", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    here, two = (json.loads((tmp_path / d / "results.json").read_text()) for d in ("here", "two"))
    assert len(here) == 1 and here[0]["network"] == "mnist_relu_3_50"
    assert _timeless(here) == _timeless(two)


def test_failed_task_and_bad_flags_are_one_line_errors(capsys):
    import bench_vnn_lp

    with pytest.raises(_sweep.TaskFailed, match=r"sweep: bad: error: ValueError"):
        list(_sweep.ordered(int, [("1",), ("x",)], ["good", "bad"], desc="sweep"))
    assert _sweep.cli(bench_vnn_lp.main, "bench_vnn_lp", ["--jobs", "2", "--local-cluster", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bench_vnn_lp: error: --jobs is for local processes") and "\n" not in err
