"""tools/bench_peer.py: vnnx against a peer's VNN-COMP results table."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def peer():
    spec = importlib.util.spec_from_file_location("bench_peer", REPO / "tools" / "bench_peer.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_peer"] = mod      # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _write(path, text):
    path.write_text(text)
    return path


def test_counts_ratios_disagreements_and_outputs(peer, tmp_path):
    # vnnx bench form (other folders than the peer's: matched by file names).
    ours = _write(tmp_path / "ours.csv", "onnx,vnnlib,verdict,seconds,decided_by,timeout\n"
                  "/a/m/net1.onnx,/a/m/p1.vnnlib,unsat,2.0,crown,60\n"
                  "/a/m/net1.onnx,/a/m/p2.vnnlib,sat,1.0,pgd,60\n"
                  "/a/m/net1.onnx,/a/m/p3.vnnlib,timeout,60.0,,60\n"
                  "/a/m/net2.onnx,/a/m/p4.vnnlib.gz,unsat,70.0,milp,60\n"
                  "/a/m/net2.onnx,/a/m/p5.vnnlib,unsat,1.0,crown,60\n")
    # VNN-COMP form without a header; p4 is solved by vnnx only after its timeout.
    theirs = _write(tmp_path / "peer.csv",
                    "mnist,/b/net1.onnx,/b/p1.vnnlib,0.5,unsat,4.0\n"
                    "mnist,/b/net1.onnx,/b/p2.vnnlib,0.5,unsat,3.0\n"
                    "mnist,/b/net1.onnx,/b/p3.vnnlib,0.5,sat,10.0\n"
                    "acas,/b/net2.onnx,/b/p4.vnnlib,0.5,unsat,5.0\n"
                    "acas,/b/net2.onnx,/b/p6.vnnlib,0.5,unsat,5.0\n")
    inst = _write(tmp_path / "instances.csv", "net2.onnx,p4.vnnlib,60\n")
    rc = peer.main(["--ours", str(ours), "--peer", str(theirs), "--peer-name", "NeuralSAT",
                    "--instances", str(inst), "--out-dir", str(tmp_path / "out")])
    assert rc == 1                       # a disagreement makes the run fail loudly
    s = json.loads((tmp_path / "out" / "peer_summary.json").read_text())
    assert s["instances"] == 4 and s["only_in"] == {"vnnx": 1, "NeuralSAT": 1}
    assert s["solved"] == {"vnnx": 2, "NeuralSAT": 4}          # p4 over its 60 s timeout
    assert s["per_category"]["mnist"] == {"instances": 3, "vnnx": 2, "NeuralSAT": 3, "both": 2}
    assert s["both_solved"] == 2
    assert s["time_ratio_median"] == pytest.approx((2 / 4 + 1 / 3) / 2)
    assert s["disagreements"] == [{"onnx": "net1.onnx", "vnnlib": "p2.vnnlib", "vnnx": "sat", "NeuralSAT": "unsat"}]
    assert (tmp_path / "out" / "cactus.png").stat().st_size > 1000
    assert len((tmp_path / "out" / "peer_comparison.csv").read_text().splitlines()) == 5


def test_bad_tables_fail_in_one_line(peer, tmp_path, capsys):
    ok = _write(tmp_path / "ok.csv", "x,/n.onnx,/s.vnnlib,0,unsat,1\n")
    bad = _write(tmp_path / "bad.csv", "x,/n.onnx,/s.vnnlib,0,proven,1\n")
    assert peer.main(["--ours", str(ok), "--peer", str(bad), "--out-dir", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "bad.csv, row 1" in err and "proven" in err
    assert peer.main(["--ours", str(ok), "--peer", str(tmp_path / "missing.csv"), "--out-dir", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    other = _write(tmp_path / "other.csv", "x,/m.onnx,/t.vnnlib,0,unsat,1\n")
    assert peer.main(["--ours", str(ok), "--peer", str(other), "--out-dir", str(tmp_path / "o")]) == 2
    assert "share no instance" in capsys.readouterr().err
