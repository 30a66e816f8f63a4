"""ReLU-splitting branch and bound on layer chains (:class:`vnnx.graph_bab.GraphBab` on
``Network.to_graph()``): exact answers against the MILP's exact output range, on dense and
convolutional chains, and its place in the verifier."""
from __future__ import annotations

import time

import numpy as np
import pytest

import vnnx  # noqa: F401
from tests.nets import random_mlp
from vnnx.engine import GraphEngine
from vnnx.graph_bab import GraphBab
from vnnx.milp import output_range
from vnnx.network import Conv, Dense, Network, Relu


def _box(rng, n, width=(0.3, 1.2)):
    lo = rng.uniform(-1, 0.2, n)
    return lo, lo + rng.uniform(*width, n)


@pytest.mark.parametrize("seed", range(8))
def test_answers_agree_with_the_exact_output_range(seed):
    """Against the MILP's exact minimum of c·y: a threshold just below it is unsat, just above
    it is sat (with a point that really violates), on networks with tens of unstable ReLUs."""
    rng = np.random.default_rng(100 + seed)
    net = random_mlp(rng, (5, 16, 12, 8, 3))
    lo, up = _box(rng, 5, (0.5, 1.5))
    _assert_agrees_with_exact_range(net, lo, up, seed)


def _assert_agrees_with_exact_range(net, lo, up, seed):
    """Threshold 2% below the MILP's exact minimum of y_0 - y_(1 + seed % 2): unsat; 2% above:
    sat, with a point in the box that really violates."""
    c = np.zeros(3)
    c[0], c[1 + seed % 2] = 1.0, -1.0
    true_min, _ = output_range(net, lo, up, c)
    engine = GraphEngine(net.to_graph())
    gap = 0.02 * max(1.0, abs(true_min))
    for offset, expected in ((-gap, "unsat"), (gap, "sat")):
        thr = true_min + offset
        check = lambda x: bool(float(net.forward(x[None])[0] @ c) <= thr)  # noqa: E731
        res = GraphBab(engine, lo, up, c[None], np.array([thr]), batch=64, check=check).run(
            deadline=time.monotonic() + 60)
        assert res.status == expected, (seed, offset, res)
        if expected == "sat":
            assert np.all(res.x >= lo) and np.all(res.x <= up)
            assert float(net.forward(res.x[None])[0] @ c) <= thr


def _spec_needing_bab(tmp_path):
    """A 20-input MLP and an unsat property that α-CROWN leaves open (too many inputs for input
    splitting): (Verifier, parsed spec)."""
    from vnnx.io.onnx import load_onnx, network_to_onnx
    from vnnx.io.vnnlib import read_vnnlib
    from vnnx.verify import Verifier

    rng = np.random.default_rng(11)
    net = random_mlp(rng, (20, 24, 24, 3))
    lo, up = _box(rng, 20, (0.3, 0.5))
    c = np.array([1.0, 0.0, 0.0])                      # unsafe: y0 <= thr
    true_min, _ = output_range(net, lo, up, c)
    thr = true_min - 0.05 * max(1.0, abs(true_min))     # unsat, but not by much
    onnx_path = tmp_path / "net.onnx"
    network_to_onnx(net, onnx_path)
    spec = tmp_path / "p.vnnlib"
    lines = [f"(declare-const X_{i} Real)" for i in range(20)] + [f"(declare-const Y_{i} Real)" for i in range(3)]
    for i in range(20):
        lines += [f"(assert (>= X_{i} {float(lo[i])!r}))", f"(assert (<= X_{i} {float(up[i])!r}))"]
    lines.append(f"(assert (<= Y_0 {float(thr)!r}))")
    spec.write_text("\n".join(lines) + "\n")
    return Verifier(load_onnx(onnx_path)), read_vnnlib(spec, n_inputs=20, n_outputs=3)


def test_verifier_uses_relu_bab_and_agrees_with_milp(tmp_path):
    """A property that α-CROWN leaves open goes to ReLU branch and bound in 'auto' and in
    'bab'; both agree with the MILP-only verdict."""
    verifier, parsed = _spec_needing_bab(tmp_path)
    crown = verifier.verify(parsed, method="alpha-crown", timeout=60)
    auto = verifier.verify(parsed, method="auto", timeout=120)
    bab = verifier.verify(parsed, method="bab", timeout=120)
    milp = verifier.verify(parsed, method="milp", timeout=120)
    assert milp.verdict == "unsat"
    assert auto.verdict == "unsat" and bab.verdict == "unsat"
    assert crown.verdict != "unsat"            # so that the property needs branch and bound
    assert auto.decided_by == "relu-bab" and bab.decided_by == "relu-bab"
    assert any(st["stage"] == "alpha-crown" and st["outcome"].endswith("open") for st in auto.stages)


def test_auto_skips_slow_alpha_crown_when_branch_and_bound_can_take_over(tmp_path, monkeypatch):
    """When CROWN is too slow for α-CROWN to fit in half the time left (forced here by the
    factor), 'auto' logs α-CROWN as skipped and the ReLU branch and bound still decides; an
    explicit --method alpha-crown is never skipped."""
    import vnnx.stages.bound

    verifier, parsed = _spec_needing_bab(tmp_path)
    monkeypatch.setattr(vnnx.stages.bound, "ALPHA_STEP_CROWN_PASSES", 1e12)
    auto = verifier.verify(parsed, method="auto", timeout=120)
    skipped = [st for st in auto.stages if st["stage"] == "alpha-crown"]
    assert skipped and all(st["outcome"].startswith("skipped") for st in skipped)
    assert auto.verdict == "unsat" and auto.decided_by == "relu-bab"
    explicit = verifier.verify(parsed, method="alpha-crown", timeout=60)
    assert [st["stage"] for st in explicit.stages if st["stage"] == "alpha-crown"]
    assert all(not st["outcome"].startswith("skipped") for st in explicit.stages)


def test_auto_leaves_half_the_time_to_branch_and_bound(tmp_path, monkeypatch):
    """When α-CROWN runs under 'auto' on a network the ReLU branch and bound handles, its
    deadline is at most half the time left (it once used 144 of 150 s on a CNN, and the branch
    and bound, which needed seconds, timed out); the estimate that skips it counts every step."""
    import time as _time

    import vnnx.stages.bound

    verifier, parsed = _spec_needing_bab(tmp_path)
    seen = []
    engine = type(verifier.bound_engine())
    real = engine.compute

    def spy(self, lo, hi, method="crown", C=None, deadline=None):
        if method == "alpha-crown":
            seen.append(None if deadline is None else deadline - _time.monotonic())
        return real(self, lo, hi, method, C, deadline=deadline)

    monkeypatch.setattr(engine, "compute", spy)
    monkeypatch.setattr(vnnx.stages.bound, "ALPHA_STEP_CROWN_PASSES", 0)
    res = verifier.verify(parsed, method="auto", timeout=100)
    assert res.verdict == "unsat" and seen and all(s is not None and s <= 50.0 for s in seen)
    # The estimate is steps x passes x CROWN time: one pass per step fits here, so it runs
    # (a cost that does not fit is skipped: the test above).
    monkeypatch.setattr(vnnx.stages.bound, "ALPHA_STEP_CROWN_PASSES", 1)
    seen.clear()
    verifier.verify(parsed, method="auto", timeout=100)
    assert seen


def _two_conv_net(rng):
    """Conv(1->3, 3x3, stride 2, pad 1) on 1x8x8 -> ReLU -> Conv(3->4, 3x3) -> ReLU -> Dense 3."""
    c1 = Conv(rng.normal(size=(3, 1, 3, 3)) / 2, rng.normal(size=3) * 0.2, (1, 8, 8), (3, 4, 4), (2, 2), (1, 1, 1, 1))
    c2 = Conv(rng.normal(size=(4, 3, 3, 3)) / 4, rng.normal(size=4) * 0.2, (3, 4, 4), (4, 2, 2))
    return Network((1, 1, 8, 8), (1, 3), [c1, Relu((48,)), c2, Relu((16,)),
                                          Dense(rng.normal(size=(3, 16)) / 4, rng.normal(size=3) * 0.2, (16,), (3,))])


@pytest.mark.parametrize("seed", range(3))
def test_answers_agree_with_the_exact_output_range_on_convolutions(seed):
    """The same check on a chain of strided, padded convolutions."""
    rng = np.random.default_rng(200 + seed)
    net = _two_conv_net(rng)
    x0 = rng.uniform(0, 1, 64)
    _assert_agrees_with_exact_range(net, x0 - 0.3, x0 + 0.3, seed)
