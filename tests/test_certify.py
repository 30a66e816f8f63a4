"""``vnnx certify`` (vnnx.certify): a transformed network against its original on L∞ balls.
Identical networks are certified, a heavily perturbed copy is refuted with witnesses that
onnxruntime confirms on both files, verdicts agree with brute force on a 2-input net, the written
2.0 queries re-parse and re-verify to the same answer, and bad input gets one-line errors."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from nets import random_mlp
from vnnx.certify import certify
from vnnx.cli import main
from vnnx.io.onnx import load_onnx, network_to_onnx, run_onnxruntime
from vnnx.io.vnnlib import read_instances_csv
from vnnx.io.vnnlib2 import read_query
from vnnx.product import assign_networks, load_networks, parse_onnx_args, verify_query


def _pair(tmp_path: Path, sizes, seed: int, perturb: float, steep: float = 8.0):
    """F = a seeded MLP whose first layer is ``steep`` times steeper and centred on the unit
    cube (so that its class changes inside it); G = F with one last-layer weight moved by
    ``perturb``."""
    rng = np.random.default_rng(seed)
    net = random_mlp(rng, sizes)
    first = net.layers[0]
    first.weight[...] *= steep
    first.bias[...] = -first.weight @ np.full(sizes[0], 0.5) + rng.normal(size=sizes[1]) * 0.5
    f = tmp_path / "f.onnx"
    network_to_onnx(net, f)
    bent = copy.deepcopy(net)
    bent.layers[-1].weight[0, int(np.argmax(np.abs(net.layers[-1].weight[0])))] += perturb
    g = tmp_path / "g.onnx"
    network_to_onnx(bent, g)
    return f, g, rng


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return np.asarray(run_onnxruntime(load_onnx(path), np.asarray(x, np.float32).reshape(len(x), -1)))


def _check_witness(f: Path, g: Path, x0: np.ndarray, eps: float, witness: dict) -> None:
    """The witness lies in the clipped ball and onnxruntime shows strictly different argmaxes."""
    x = np.asarray(witness["x"], dtype=np.float32)
    assert np.all(x >= np.maximum(x0 - eps, 0.0) - 1e-6) and np.all(x <= np.minimum(x0 + eps, 1.0) + 1e-6)
    yf, yg = _outputs(f, x[None])[0], _outputs(g, x[None])[0]
    a, b = int(np.argmax(yf)), int(np.argmax(yg))
    assert a != b and yf[a] > yf[b] and yg[b] > yg[a]


def test_identical_networks_are_certified_and_queries_reverify(tmp_path):
    f, _, rng = _pair(tmp_path, (4, 12, 12, 3), seed=3, perturb=0.0, steep=1.0)
    g = tmp_path / "copy.onnx"
    shutil.copy(f, g)
    x = rng.uniform(0, 1, size=(6, 4)).astype(np.float32)
    rep = certify(str(f), str(g), x, 0.01, timeout=20, out_dir=str(tmp_path / "out"), progress=False)
    assert rep.counts() == {"certified": 6, "refuted": 0, "unknown": 0}
    rows = read_instances_csv(tmp_path / "out" / "instances.csv")
    assert len(rows) == 6
    for onnx_list, vnnlib, _ in rows:
        query = read_query(vnnlib)
        models = load_networks(assign_networks(query, parse_onnx_args([str(onnx_list)], str(vnnlib))))
        assert verify_query(query, models, timeout=20).verdict == "unsat"
    onnx_list, vnnlib, _ = rows[0]
    assert main(["verify", "--onnx", str(onnx_list), "--vnnlib", str(vnnlib)]) == 0


def test_perturbed_copy_is_refuted_with_confirmed_witnesses(tmp_path):
    f, g, rng = _pair(tmp_path, (4, 12, 12, 3), seed=2, perturb=1.5)
    x = rng.uniform(0, 1, size=(10, 4)).astype(np.float32)
    eps = 0.15
    rep = certify(str(f), str(g), x, eps, timeout=20, progress=False)
    refuted = [s for s in rep.samples if s.status == "refuted"]
    assert refuted, rep.table()
    for s in refuted:
        _check_witness(f, g, x[s.index], eps, s.witness)
    assert any(s.decided_by != "centre" for s in refuted), rep.table()   # found inside the ball
    # certified balls hold no disagreement on random points either
    for s in rep.samples:
        if s.status == "certified":
            pts = np.clip(x[s.index] + rng.uniform(-eps, eps, size=(300, 4)), 0, 1)
            assert np.all(np.argmax(_outputs(f, pts), 1) == np.argmax(_outputs(g, pts), 1))


def test_local_processes_give_the_in_process_statuses(tmp_path):
    """Samples run as isolated tasks (``--jobs 2``, vnnx.executor) end as they do in process."""
    from vnnx.executor import ExecutorSpec

    f, g, rng = _pair(tmp_path, (4, 12, 12, 3), seed=2, perturb=1.5)
    x = rng.uniform(0, 1, size=(4, 4)).astype(np.float32)
    one = certify(str(f), str(g), x, 0.15, timeout=20, progress=False)
    two = certify(str(f), str(g), x, 0.15, timeout=20, progress=False, executor=ExecutorSpec(jobs=2))
    assert [s.status for s in two.samples] == [s.status for s in one.samples]
    assert [s.index for s in two.samples] == list(range(4))
    assert {s.status for s in one.samples} >= {"refuted"}


def test_agrees_with_brute_force_on_two_inputs(tmp_path):
    f, g, rng = _pair(tmp_path, (2, 10, 10, 3), seed=1, perturb=1.5)
    centres = rng.uniform(0, 1, size=(14, 2)).astype(np.float32)
    eps = 0.08
    grid = np.stack(np.meshgrid(np.linspace(-eps, eps, 61), np.linspace(-eps, eps, 61)), -1).reshape(-1, 2)
    rep = certify(str(f), str(g), centres, eps, timeout=20, progress=False)
    tol = certify(str(f), str(g), centres, eps, tolerance=0.5, timeout=20, progress=False)
    seen = set()
    for k, (s, t) in enumerate(zip(rep.samples, tol.samples)):
        pts = np.clip(centres[k] + grid, 0, 1).astype(np.float32)
        yf, yg = _outputs(f, pts), _outputs(g, pts)
        disagree = np.any(np.argmax(yf, 1) != np.argmax(yg, 1))
        keep = np.all(np.argmax(yf, 1) == s.centre_class) and np.all(np.argmax(yg, 1) == s.centre_class)
        seen.add(s.status)
        if s.status == "certified":
            assert keep and not disagree
        if s.status == "refuted":
            _check_witness(f, g, centres[k], eps, s.witness)
        if disagree:
            assert s.status != "certified"
        diff = np.max(np.abs(yg - yf))
        seen.add("tol-" + t.status)
        if t.status == "certified":
            assert diff <= 0.5 + 1e-5
        if t.status == "refuted":
            w = np.asarray(t.witness["x"], np.float32)[None]
            assert np.max(np.abs(_outputs(g, w) - _outputs(f, w))) > 0.5
        if diff > 0.5 + 1e-5:
            assert t.status != "certified"
    assert {"certified", "refuted", "tol-certified", "tol-refuted"} <= seen, seen


def _write(tmp_path: Path):
    f, g, rng = _pair(tmp_path, (4, 8, 3), seed=2, perturb=0.0, steep=1.0)
    np.savez(tmp_path / "d.npz", x=rng.uniform(0, 1, size=(3, 4)).astype(np.float32), y=np.zeros(3, int))
    return f, g


def test_cli_table_summary_json_and_unlabelled_data(tmp_path, capsys):
    f, g = _write(tmp_path)
    np.savez(tmp_path / "x_only.npz", x=np.full((2, 4), 0.5, np.float32))
    assert main(["certify", "--original", str(f), "--transformed", str(g), "--data", str(tmp_path / "x_only.npz"),
                 "--epsilon", "0.01", "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "certified 2 refuted 0 unknown 0"
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["counts"]["certified"] == 2 and doc["samples"][0]["label"] is None
    assert main(["certify", "--original", str(f), "--transformed", str(g), "--data", str(tmp_path / "d.npz"),
                 "--epsilon", "0.01", "--output-tolerance", "0.5", "--quiet", "--count", "1", "--start", "2"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "certified 1 refuted 0 unknown 0"


@pytest.mark.parametrize("change, message", [
    ({"--original": "missing.onnx"}, "not found"),
    ({"--transformed": "other.onnx"}, "cannot be compared"),
    ({"--epsilon": "-0.1"}, "--epsilon"),
    ({"--epsilon": "nan"}, "--epsilon"),
    ({"--output-tolerance": "-1"}, "--output-tolerance"),
    ({"--data": "bad.npz"}, "values per sample"),
    ({"--start": "7"}, "--start"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, change, message):
    f, g = _write(tmp_path)
    network_to_onnx(random_mlp(np.random.default_rng(0), (5, 4, 3)), tmp_path / "other.onnx")
    np.savez(tmp_path / "bad.npz", x=np.zeros((2, 6), np.float32), y=np.zeros(2, int))
    args = {"--original": str(f), "--transformed": str(g), "--data": str(tmp_path / "d.npz"), "--epsilon": "0.01"}
    args.update({k: (str(tmp_path / v) if k != "--epsilon" and v.endswith((".onnx", ".npz")) else v)
                 for k, v in change.items()})
    argv = ["certify", "--quiet", "--json", str(tmp_path / "r.json")] + [t for kv in args.items() for t in kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r.json").exists()


def test_sparsify_certify_end_to_end(tmp_path, capsys):
    rng = np.random.default_rng(4)
    net = random_mlp(rng, (6, 10, 10, 3))
    net.layers[0].weight[...] *= 6
    net.layers[0].bias[...] = -net.layers[0].weight @ np.full(6, 0.5)
    network_to_onnx(net, tmp_path / "s.onnx")
    x = rng.uniform(0, 1, size=(12, 6)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.argmax(net.forward(x), 1))
    assert main(["sparsify", "--onnx", str(tmp_path / "s.onnx"), "--data", str(tmp_path / "d.npz"), "--quiet",
                 "--out", str(tmp_path / "v.onnx"), "--certify", "0.02", "--report", str(tmp_path / "r.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    counts = next(ln for ln in lines if ln.startswith("certify (radius 0.02, 12 validation points"))
    assert counts.endswith("certified 12 refuted 0 unknown 0")
    assert any(ln.startswith("guarantee: on each of the 12 certified balls") for ln in lines)
    assert json.loads((tmp_path / "r.json").read_text())["evaluation"]["certify"]["counts"]["certified"] == 12
    with pytest.raises(SystemExit) as exc:   # argparse refuses the radius before any work
        main(["sparsify", "--onnx", str(tmp_path / "s.onnx"), "--data", str(tmp_path / "d.npz"), "--quiet",
              "--out", str(tmp_path / "w.onnx"), "--certify", "-1"])
    assert exc.value.code == 2
    assert not (tmp_path / "w.onnx").exists()
