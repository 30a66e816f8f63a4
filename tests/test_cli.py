"""The command line: answers, JSON, one-line errors with exit code 2, no half-written files."""
import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vnnx.cli import main

REPO = Path(__file__).resolve().parents[1]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_prints_verdict_and_writes_result_file(shared, tmp_path, capsys):
    d = shared / "benchmarks" / "test"
    res = tmp_path / "out.txt"
    code, out, _ = _run(capsys, "verify", "--onnx", str(d / "test_sat.onnx"), "--vnnlib", str(d / "test_prop.vnnlib"),
                        "--timeout", "30", "--result-file", str(res))
    assert code == 0 and out.strip() == "sat"
    lines = res.read_text().splitlines()
    assert lines[0] == "sat" and lines[1].startswith("((X_0 ")


def test_bounds_json(shared, capsys):
    d = shared / "benchmarks" / "test"
    code, out, _ = _run(capsys, "bounds", "--onnx", str(d / "test_small.onnx"), "--vnnlib",
                        str(d / "test_small.vnnlib"), "--method", "crown")
    doc = json.loads(out)
    assert code == 0 and set(doc) >= {"lower", "upper", "seconds"}
    assert len(doc["lower"]) == len(doc["upper"]) >= 1
    assert all(lo <= up for lo, up in zip(doc["lower"], doc["upper"]))


BAD_INPUTS = [
    (["verify", "--onnx", "missing.onnx", "--vnnlib", "missing.vnnlib"], "missing.onnx"),
    (["verify", "--onnx", "{garbage}", "--vnnlib", "{spec}"], "garbage.onnx"),
    (["verify", "--onnx", "{net}", "--vnnlib", "{badspec}"], "bad.vnnlib"),
    (["verify", "--onnx", "{net}", "--vnnlib", "{acas_spec}"], "inputs"),
    (["bounds", "--onnx", "{net}", "--vnnlib", "{badspec}"], "bad.vnnlib"),
]


@pytest.mark.parametrize("argv, needle", BAD_INPUTS)
def test_bad_input_is_one_line_and_exit_2(shared, tmp_path, capsys, argv, needle):
    (tmp_path / "garbage.onnx").write_bytes(b"this is not a protobuf")
    (tmp_path / "bad.vnnlib").write_text("(declare-const X_0 Real)\n(assert (<= X_0 \n")
    subst = {"{garbage}": str(tmp_path / "garbage.onnx"), "{badspec}": str(tmp_path / "bad.vnnlib"),
             "{net}": str(shared / "benchmarks" / "test" / "test_small.onnx"),
             "{spec}": str(shared / "benchmarks" / "test" / "test_small.vnnlib"),
             "{acas_spec}": str(shared / "benchmarks" / "acasxu" / "prop_1.vnnlib")}
    argv = [subst.get(a, a) for a in argv]
    result = tmp_path / "result.txt"
    code, out, err = _run(capsys, *argv, *(["--result-file", str(result)] if argv[0] == "verify" else []))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("vnnx: error:") and needle in err
    assert "Traceback" not in err
    assert not result.exists()


def test_spec_then_bench_round_trip(shared, tmp_path, capsys):
    from vnnx.data import load_eran_csv, save_npz

    x, y = load_eran_csv(shared / "data" / "mnist" / "eran_mnist_test_first100.csv")
    save_npz(tmp_path / "d.npz", x[:10], y[:10])
    net = shared / "networks" / "eran-mnist" / "mnist_relu_3_50.onnx"
    code, out, _ = _run(capsys, "spec", "--data", str(tmp_path / "d.npz"), "--onnx", str(net), "--epsilon", "0.005",
                        "0.1", "--count", "2", "--out-dir", str(tmp_path / "specs"), "--timeout", "20")
    assert code == 0
    rows = list(csv.reader(open(tmp_path / "specs" / "instances.csv")))
    assert len(rows) == 4 and all(r[2] == "20" for r in rows)
    code, out, _ = _run(capsys, "bench", str(tmp_path / "specs" / "instances.csv"), "--out", str(tmp_path / "r.csv"))
    assert code == 0 and "instances 4" in out
    verdicts = {r["vnnlib"]: r["verdict"] for r in csv.DictReader(open(tmp_path / "r.csv"))}
    # eps 0.005 is robust for these images on this net; eps 0.1 is attackable.
    assert sorted(v for k, v in verdicts.items() if "0.005" in k) == ["unsat", "unsat"]
    assert sorted(v for k, v in verdicts.items() if "_0.1." in k) == ["sat", "sat"]
    assert json.loads((tmp_path / "r.summary.json").read_text())["instances"] == 4


@pytest.mark.parametrize("onnx_name, spec_name, expected", [("test_sat.onnx", "test_prop.vnnlib", "sat"),
                                                            ("test_unsat.onnx", "test_prop.vnnlib", "unsat")])
def test_vnncomp_scripts(shared, tmp_path, onnx_name, spec_name, expected):
    d = shared / "benchmarks" / "test"
    tools = REPO / "tools" / "vnncomp"
    prep = subprocess.run(["bash", str(tools / "prepare_instance.sh"), "v1", "test", str(d / onnx_name),
                           str(d / spec_name)], capture_output=True, text=True, timeout=120)
    assert prep.returncode == 0, prep.stderr
    result = tmp_path / "result.txt"
    run = subprocess.run(["bash", str(tools / "run_instance.sh"), "v1", "test", str(d / onnx_name),
                          str(d / spec_name), str(result), "60"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert result.read_text().splitlines()[0] == expected


def test_run_instance_writes_error_for_bad_input(tmp_path):
    tools = REPO / "tools" / "vnncomp"
    result = tmp_path / "result.txt"
    run = subprocess.run(["bash", str(tools / "run_instance.sh"), "v1", "test", str(tmp_path / "nope.onnx"),
                          str(tmp_path / "nope.vnnlib"), str(result), "10"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0
    assert result.read_text().strip() == "error"
    bad = subprocess.run(["bash", str(tools / "run_instance.sh"), "v1"], capture_output=True, text=True)
    assert bad.returncode != 0 and "usage" in bad.stderr
