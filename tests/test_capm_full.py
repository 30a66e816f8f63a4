"""CAPM in the sparse CROWN engine that refines every neuron (plugins/capm/sparse_crown.py)."""
import numpy as np
import pytest

import vnnx  # noqa: F401  - compat patches first
from vnnx.bounds import BoundComputer
from vnnx.network import Dense, MaxPool, Network
from vnnx_plugins import capm
from vnnx_plugins.capm import SparseCapmCrown

from test_capm import POOLS, pool_cnn, samples

C3 = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]])


def _ids(p):
    return "k%d%ds%d%dp%d%d%d%dc%d" % (*p[0], *p[1], *p[2], p[3])


@pytest.mark.parametrize("pool", POOLS, ids=_ids)
def test_sound_by_sampling_crown_and_alpha(pool):
    """Sampled inputs give outputs above the CROWN and α-CROWN lower bounds of C y, and every
    op's output inside its layer bounds; α-CROWN is never looser than CROWN."""
    for seed in range(3):
        rng = np.random.default_rng(300 + seed)
        net = pool_cnn(rng, pool, relu_before=seed == 2, second_conv=seed == 1)
        eng = SparseCapmCrown(net)
        centre = rng.normal(size=net.n_inputs)
        eps = [0.05, 0.3, 1.0][seed]
        lo, hi = centre - eps, centre + eps
        crown = eng.bound(lo, hi, C3)
        alpha = eng.bound(lo, hi, C3, alpha_iterations=10)
        assert (alpha >= crown - 1e-12).all()
        xs = samples(rng, lo, hi)
        acts = net.forward(xs, return_all=True)
        y = acts[-1] @ C3.T
        assert (y >= alpha - 1e-9).all(), f"α-CROWN lower bound violated by {np.max(alpha - y.min(0)):.3g}"
        for k, (l, u) in enumerate(eng.layer_bounds(lo, hi)):
            a = acts[eng.layer_of_op[k]]
            assert (a >= l - 1e-9).all() and (a <= u + 1e-9).all(), f"op {k}"


@pytest.mark.parametrize("pool", [POOLS[0], POOLS[1], POOLS[4]], ids=["2x2", "overlap", "asym-ceil"])
def test_equals_auto_lirpa_capm_crown_on_small_nets(pool):
    """On nets this small auto_LiRPA refines every unstable neuron too, so its CROWN with the
    CAPM operator and this engine must give the same bounds (the same relaxations)."""
    rng = np.random.default_rng(21)
    net = pool_cnn(rng, pool, second_conv=True)
    bc = BoundComputer(net, capm.custom_ops())
    eng = SparseCapmCrown(net)
    for eps in (0.05, 0.3):
        lo = rng.normal(size=net.n_inputs)
        hi = lo + eps
        ref = bc.compute(lo, hi, "crown", C=C3).lower
        np.testing.assert_allclose(eng.bound(lo, hi, C3), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("pool", [POOLS[1], POOLS[7]], ids=["overlap", "pad"])
def test_bounds_contain_exact_milp_range(pool):
    from vnnx.milp import output_range

    rng = np.random.default_rng(12)
    net = pool_cnn(rng, pool, cin=1, hw=(5, 5), cmid=2)
    lo = rng.uniform(-1, 1, net.n_inputs)
    hi = lo + 0.3
    eng = SparseCapmCrown(net)
    crown = eng.bound(lo, hi)
    alpha = eng.bound(lo, hi, alpha_iterations=20)
    upper = -eng.bound(lo, hi, -np.eye(3), alpha_iterations=20)
    for i in range(3):
        exact = output_range(net, lo, hi, np.eye(3)[i], time_limit=20)
        assert crown[i] <= alpha[i] + 1e-12 and alpha[i] <= exact[0] + 1e-6 and upper[i] >= exact[1] - 1e-6


def test_dominant_input_is_exact():
    """A window whose first cell dominates: the max is that cell, and the bound is exact."""
    mp = MaxPool((1, 2, 2), (2, 2), (2, 2))
    net = Network((1, 1, 2, 2), (1, 1), [mp, Dense(np.array([[1.0]]), np.zeros(1), (1,), (1,))])
    lo, hi = np.array([5.0, 0.0, 1.0, -1.0]), np.array([6.0, 1.0, 2.0, 0.5])
    eng = SparseCapmCrown(net)
    assert eng.bound(lo, hi)[0] == pytest.approx(5.0, abs=1e-12)
    assert -eng.bound(lo, hi, -np.eye(1))[0] == pytest.approx(6.0, abs=1e-12)


def _threshold_case(tmp_path, seed: int, pool, relu_before: bool = False):
    """A small pool CNN as ONNX, its Verifier (CAPM's MaxPool relaxation on the graph engine), a
    box and the exact maximum of y0 − y1; ``spec(t)`` says "unsafe iff y0 − y1 >= t"."""
    from vnnx.io.onnx import load_onnx, network_to_onnx
    from vnnx.io.vnnlib import Property, Spec
    from vnnx.milp import output_range
    from vnnx.verify import Verifier

    rng = np.random.default_rng(seed)
    net = pool_cnn(rng, pool, cin=1, hw=(6, 6), cmid=2, relu_before=relu_before)
    network_to_onnx(net, tmp_path / "net.onnx")
    verifier = Verifier(load_onnx(tmp_path / "net.onnx"), relaxations=capm.PLUGIN.extras["relaxations"])
    lo = rng.uniform(-1, 0.5, net.n_inputs)
    hi = lo + 0.6
    c = np.array([1.0, -1.0, 0.0])
    _, y_max = output_range(net, lo, hi, c, time_limit=30)

    def spec(t: float):
        return Spec("<generated>", net.n_inputs, 3, [Property(lo, hi, [(-c[None, :], np.array([-t]))])])
    return verifier, y_max, spec


@pytest.mark.parametrize("seed", range(3))
def test_verify_pipeline_runs_it_and_agrees_with_the_milp(tmp_path, seed):
    """`vnnx verify` with CAPM's MaxPool relaxation on MaxPool nets: just above the exact maximum
    it must say unsat, just below sat."""
    verifier, y_max, spec = _threshold_case(tmp_path, 40 + seed, POOLS[[1, 4, 7][seed]], relu_before=seed == 0)
    gap = 1e-3 * (1 + abs(y_max))
    verdicts = {name: verifier.verify(spec(t), "auto", timeout=60)
                for name, t in (("above", y_max + gap), ("below", y_max - gap))}
    assert verdicts["above"].verdict == "unsat", verdicts["above"].stages
    assert verdicts["below"].verdict == "sat", verdicts["below"].stages


@pytest.mark.parametrize("case", ["capm_overlap_case", "verivital"])
def test_bounds_alpha_crown_on_maxpool_cnns_is_timely_tighter_and_sound(shared, case, capsys):
    """`vnnx bounds --method alpha-crown` did not finish in 120 s on these networks (auto_LiRPA's
    α-CROWN); on the graph engine (the default) it stops at --timeout, tighter than CROWN."""
    import json
    import time

    from vnnx.cli import main
    from vnnx.io.onnx import load_onnx, run_onnxruntime
    from vnnx.io.vnnlib import read_vnnlib

    if case == "verivital":
        onnx_path = shared / "benchmarks" / "verivital" / "Convnet_maxpool.onnx"
        spec_path = shared / "benchmarks" / "verivital" / "specs" / "maxpool_specs" / "prop_0_0.004.vnnlib"
    else:
        onnx_path = shared / "benchmarks" / case / "capm_net.onnx"
        spec_path = shared / "benchmarks" / case / "capm_prop.vnnlib"
    docs = {}
    for method in ("crown", "alpha-crown"):
        t0 = time.monotonic()
        assert main(["bounds", "--onnx", str(onnx_path), "--vnnlib", str(spec_path), "--method", method,
                     "--timeout", "30", "--compact"]) == 0
        docs[method] = json.loads(capsys.readouterr().out)
        assert time.monotonic() - t0 < 30 + 5
    lo_c, up_c = np.array(docs["crown"]["lower"]), np.array(docs["crown"]["upper"])
    lo_a, up_a = np.array(docs["alpha-crown"]["lower"]), np.array(docs["alpha-crown"]["upper"])
    assert np.mean(up_a - lo_a) <= np.mean(up_c - lo_c) and np.any(up_a - lo_a < up_c - lo_c - 1e-9)
    # Sound by sampling: the box's corners and random points, through onnxruntime.
    model = load_onnx(onnx_path)
    prop = read_vnnlib(spec_path, model.n_inputs, model.n_outputs).properties[0]
    rng = np.random.default_rng(0)
    xs = rng.uniform(prop.x_lower, prop.x_upper, (256, model.n_inputs))
    xs = np.vstack([xs, prop.x_lower, prop.x_upper, np.where(rng.random((64, model.n_inputs)) < 0.5,
                                                               prop.x_lower, prop.x_upper)])
    ys = run_onnxruntime(model, xs.astype(np.float32)).astype(np.float64)
    A = np.vstack([a for a, _ in prop.clauses])
    b = np.concatenate([v for _, v in prop.clauses])
    vals = ys @ A.T - b
    tol = 1e-4 * (1 + np.abs(vals))   # onnxruntime computes in float32
    assert np.all(vals >= lo_a - tol) and np.all(vals <= up_a + tol)
