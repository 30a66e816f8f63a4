"""The differential soundness harness (tools/soundness.py): vnnx's stages against an independent truth.

* the short mode finds no wrong verdict on >= 200 seeded cases, with every stage and both truths
  well represented;
* the harness CAN fail: a verifier that always says unsat, or says sat with a bogus witness, is caught;
* the harness's truth MILP agrees with brute force on tiny networks (its own ground truth checked);
* long mode resumes without redoing or duplicating cases, and --summary exits 1 on a wrong verdict.
"""
from __future__ import annotations

import importlib.util
import itertools
import json
import sys

import numpy as np
import pytest

from conftest import REPO


def _load_harness():
    name = "vnnx_soundness_harness"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tools" / "soundness.py")
    module = importlib.util.module_from_spec(spec)
    # Registered before exec: dataclasses look their module up in sys.modules.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


sh = _load_harness()


# ------------------------------------------------------------------------------ the short mode

@pytest.fixture(scope="module")
def short_summary():
    return sh.run("short", seed=0, progress=False)


def test_short_mode_has_no_wrong_verdict(short_summary):
    s = short_summary
    print(sh.format_summary(s))
    assert s["wrong"] == [], sh.format_summary(s)
    assert s["cases"] >= 200
    # Both certain truths occur in good number (the property generator aims at about half sat).
    assert s["truth"]["sat"] >= 60 and s["truth"]["unsat"] >= 60, s["truth"]
    # The harness agrees with itself: no confirmed witness against a certain unsat, no MILP or
    # interval bound above a sampled point.
    assert s["inconsistencies"] == []
    assert s["harness_errors"] == []
    assert not [n for n in s["truth_notes"] if "conflict" in n["note"]], s["truth_notes"]


def test_short_mode_runs_every_stage(short_summary):
    from vnnx.verify import METHODS

    per = short_summary["per_stage"]
    for stage in METHODS:
        counts = per[stage]
        ran = sum(counts.values())
        answered = counts["sat"] + counts["unsat"]
        assert ran >= 20, (stage, counts)
        assert answered >= 10, (stage, counts)
    # Every property shape and every default family occurs.
    assert set(short_summary["shapes"]) >= {"robust", "halfspace", "interval", "acas", "or-and", "multibox",
                                              "pointbox", "tiny", "huge", "noout"}
    assert set(short_summary["families"]) == set(sh.DEFAULT_FAMILIES)


# ------------------------------------------------------------------------ the harness can fail

class _FakeVerifier:
    """Answers every spec the same way, as vnnx's Verifier would return it."""

    def __init__(self, verdict: str, witness=None):
        self.verdict, self.witness = verdict, witness

    def verify(self, spec, method="auto", timeout=None):
        from vnnx.verify import Counterexample, VerifyResult

        cex = None
        if self.witness is not None:
            x = self.witness(spec).astype(np.float32)
            cex = Counterexample(x, np.zeros(spec.n_outputs, np.float32))
        return VerifyResult(self.verdict, 0.0, "fake", cex, [])


def test_always_unsat_is_caught():
    s = sh.run("short", seed=3, cases=14, only_stage="auto", progress=False,
               verifier_factory=lambda ctx: _FakeVerifier("unsat"))
    assert s["truth"]["sat"] >= 3
    # Exactly the cases whose truth is certain sat are flagged, each with its reproduce command.
    assert len(s["wrong"]) == s["truth"]["sat"]
    assert all(w["command"].startswith("tools/soundness.py --case 3:") for w in s["wrong"])


def test_bogus_sat_witness_is_caught():
    # Far outside every box (the widest boxes are about +-50).
    s = sh.run("short", seed=3, cases=14, only_stage="pgd", progress=False,
               verifier_factory=lambda ctx: _FakeVerifier("sat", lambda spec: np.full(spec.n_inputs, 1e3)))
    assert len(s["wrong"]) == s["cases"] == 14
    # A sat without any counterexample is wrong too.
    s = sh.run("short", seed=3, cases=6, only_stage="pgd", progress=False,
               verifier_factory=lambda ctx: _FakeVerifier("sat"))
    assert len(s["wrong"]) == 6


def test_box_centre_witness_is_judged_on_the_output():
    # The centre of the first box is inside it: only cases where its output violates pass.
    s = sh.run("short", seed=3, cases=14, only_stage="pgd", progress=False,
               verifier_factory=lambda ctx: _FakeVerifier(
                   "sat", lambda spec: (spec.properties[0].x_lower + spec.properties[0].x_upper) / 2))
    assert 0 < len(s["wrong"]) < s["cases"]
    assert all("output margin" in w["why"] or "outside the box" in w["why"] for w in s["wrong"])


# --------------------------------------------------------------- the truth MILP vs brute force

def _tiny_nets():
    rng = np.random.default_rng(7)
    mlp1 = [sh.Dense(*sh._weights(rng, 6, 1, 3.0)), sh.Act("relu"), sh.Dense(*sh._weights(rng, 4, 6, 3.0)),
            sh.Act("relu"), sh.Dense(*sh._weights(rng, 2, 4, 3.0))]
    mlp2 = [sh.Dense(*sh._weights(rng, 8, 2, 1.0)), sh._batchnorm(rng, 8), sh.Act("relu"),
            sh.Dense(*sh._weights(rng, 3, 8, 1.0))]
    conv_w, conv_b = sh._conv_weights(rng, 2, 1, 2, 1.0)
    pool = [sh.Conv(conv_w, conv_b, 1, 1), sh.Act("relu"), sh.MaxPool(2, 1, 1), sh.Flatten()]
    _, shape = sh.lower(pool, (1, 1, 2))
    pool.append(sh.Dense(*sh._weights(rng, 2, int(np.prod(shape)), 1.0)))
    return [sh.finish_net(sh.Net("mlp", 3.0, (1, 1), mlp1, 2)),
            sh.finish_net(sh.Net("batchnorm", 1.0, (1, 2), mlp2, 3)),
            sh.finish_net(sh.Net("maxpool", 1.0, (1, 1, 1, 2), pool, 2))]


def _lipschitz_inf(ops) -> float:
    """An infinity-norm Lipschitz bound of the flat ops (ReLU and MaxPool are 1-Lipschitz)."""
    L = 1.0
    for op in ops:
        if op[0] == "affine":
            L *= np.abs(op[1]).sum(axis=1).max()
    return L


@pytest.mark.parametrize("index", [0, 1, 2])
def test_truth_milp_matches_brute_force(index):
    net = _tiny_nets()[index]
    rng = np.random.default_rng(11 + index)
    n = net.n_inputs
    steps = 4001 if n == 1 else 301
    for trial in range(3):
        lo = rng.uniform(-1.5, 0.0, n)
        hi = lo + rng.uniform(0.2, 2.0, n)
        grid = np.array(list(itertools.product(*[np.linspace(a, b, steps) for a, b in zip(lo, hi)])))
        y = sh.forward(net.ops, grid)
        # A clause of 1-2 random rows with a right-hand side inside the output range.
        k = 1 + trial % 2
        A = rng.normal(size=(k, net.n_outputs))
        b = np.quantile(y @ A.T, 0.3, axis=0)
        sampled = (y @ A.T - b).max(axis=1)
        res = sh.milp_min_margin(net.ops, lo, hi, A, b)
        assert res.status == "optimal"
        h = float(np.max((hi - lo) / (steps - 1))) / 2  # every point is this close to the grid
        slack = _lipschitz_inf(net.ops) * np.abs(A).sum(axis=1).max() * h
        assert res.value <= sampled.min() + 1e-7
        assert res.lower <= res.value + 1e-9
        assert sampled.min() - res.value <= slack + 1e-6, (sampled.min(), res.value, slack)
        # The argmin is a real point achieving the optimum.
        achieved = (sh.forward(net.ops, res.x[None]) @ A.T - b).max()
        assert achieved == pytest.approx(res.value, abs=1e-5)


def test_interval_lower_bound_is_sound_for_sigmoid():
    rng = np.random.default_rng(5)
    layers = [sh.Dense(*sh._weights(rng, 6, 2, 3.0)), sh.Act("sigmoid"), sh.Dense(*sh._weights(rng, 4, 6, 3.0)),
              sh.Act("tanh"), sh.Dense(*sh._weights(rng, 2, 4, 3.0))]
    net = sh.finish_net(sh.Net("sigmoid", 3.0, (1, 2), layers, 2))
    lo, hi = np.array([-0.4, 0.1]), np.array([0.3, 0.5])
    grid = np.array(list(itertools.product(np.linspace(lo[0], hi[0], 201), np.linspace(lo[1], hi[1], 201))))
    y = sh.forward(net.ops, grid)
    A = np.array([[1.0, -1.0]])
    for b in np.quantile(y @ A.T, [0.0, 0.5]).reshape(-1, 1) - np.array([[0.05], [0.0]]):
        true_min = ((y @ A.T) - b).max(axis=1).min()
        lower = sh.ibp_min_margin_lower(net.ops, lo, hi, [(A, b)], threshold=1e9, max_boxes=512)
        assert lower <= true_min + 1e-12


# ---------------------------------------------------------------- long mode: resume and exit

def test_long_mode_resumes(tmp_path):
    out = tmp_path / "long.jsonl"
    first = sh.run("long", seed=5, cases=5, out=out, progress=False)
    n_first = len(out.read_text().splitlines())
    assert first["cases"] == 5 and first["cases_this_chunk"] == 5
    second = sh.run("long", seed=5, cases=8, out=out, progress=False)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert second["cases_this_chunk"] == 3  # only the new cases ran
    assert len({(r["case"], r["stage"]) for r in recs}) == len(recs) > n_first
    assert sorted({r["case"] for r in recs}) == list(range(8))
    assert second["cases"] == 8 and second["wrong"] == []
    # A file of another seed is refused rather than mixed.
    with pytest.raises(ValueError):
        sh.run("long", seed=6, cases=2, out=out, progress=False)


def test_summary_exit_status(tmp_path, capsys):
    rec = {"seed": 0, "case": 4, "net": 0, "family": "mlp", "shape": "robust", "n_inputs": 2, "stage": "bab",
           "verdict": "unsat", "decided_by": "relu-bab", "seconds": 0.1, "truth": "sat", "truth_method": "milp",
           "m_star": -0.5, "m_lower": -0.5, "wrong": False, "inconsistent": False, "why": "", "message": ""}
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(rec) + "\n")
    assert sh.main(["--summary", str(path)]) == 0
    path.write_text(json.dumps({**rec, "wrong": True, "why": "unsat but the harness holds a witness"}) + "\n")
    assert sh.main(["--summary", str(path)]) == 1
    assert "tools/soundness.py --case 0:4 --stage bab -v" in capsys.readouterr().out
