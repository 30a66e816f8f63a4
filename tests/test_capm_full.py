"""CAPM's MaxPool relaxation in vnnx's graph engine, which refines every neuron
(plugins/capm/graph_relaxation.py, through vnnx.engine.ChainBounds)."""
import numpy as np
import pytest

import vnnx  # noqa: F401  - compat patches first
from vnnx.bounds import BoundComputer
from vnnx.engine import ChainBounds
from vnnx.network import Conv, Dense, MaxPool, Network, Relu
from vnnx_plugins import capm
from vnnx_plugins.capm import CapmMaxPool

from test_capm import POOLS, pool_cnn, samples

C3 = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]])


def _ids(p):
    return "k%d%ds%d%dp%d%d%d%dc%d" % (*p[0], *p[1], *p[2], p[3])


def capm_bounds(net, **options) -> ChainBounds:
    return ChainBounds(net, relaxations={"MaxPool": CapmMaxPool()}, **options)


@pytest.mark.parametrize("pool", POOLS, ids=_ids)
def test_sound_by_sampling_crown_and_alpha(pool):
    """Sampled inputs give outputs above the CROWN and α-CROWN lower bounds of C y, and every
    layer's output inside its layer bounds; α-CROWN is never looser than CROWN."""
    for seed in range(3):
        rng = np.random.default_rng(300 + seed)
        net = pool_cnn(rng, pool, relu_before=seed == 2, second_conv=seed == 1)
        eng = capm_bounds(net, alpha_iterations=10)
        centre = rng.normal(size=net.n_inputs)
        eps = [0.05, 0.3, 1.0][seed]
        lo, hi = centre - eps, centre + eps
        crown = eng.compute(lo, hi, "crown", C3).lower
        alpha = eng.compute(lo, hi, "alpha-crown", C3).lower
        assert (alpha >= crown - 1e-12).all()
        xs = samples(rng, lo, hi)
        acts = net.forward(xs, return_all=True)
        y = acts[-1] @ C3.T
        assert (y >= alpha - 1e-9).all(), f"α-CROWN lower bound violated by {np.max(alpha - y.min(0)):.3g}"
        for k, (l, u) in enumerate(eng.layer_bounds(lo, hi)):
            a = acts[k]
            assert (a >= l - 1e-9).all() and (a <= u + 1e-9).all(), f"layer {k}"


def pool_conv_relu_cnn(rng, pool) -> Network:
    """Conv 3x3 -> MaxPool -> Conv 2x2 -> ReLU -> Dense 3: the ReLU's input is refined from a
    convolution, a local operator, so the pool is crossed by the engine's sparse back end."""
    shape = (3, 12, 12)   # large enough that a convolution's rows stay sparse across the pool
    mp = MaxPool(shape, *pool)
    c, h, w = mp.out_shape
    out = (2, h - 1, w - 1)
    n = int(np.prod(out))
    layers = [Conv(rng.normal(size=(3, 2, 3, 3)) / 3, rng.normal(size=3) * 0.5, (2, 14, 14), shape), mp,
              Conv(rng.normal(size=(2, c, 2, 2)) / 2, rng.normal(size=2) * 0.3, (c, h, w), out), Relu((n,)),
              Dense(rng.normal(size=(3, n)) / np.sqrt(n), rng.normal(size=3) * 0.3, (n,), (3,))]
    return Network((1, 2, 14, 14), (1, 3), layers)


@pytest.mark.parametrize("pool", [POOLS[0], POOLS[1], POOLS[2], POOLS[4]], ids=_ids)
def test_sparse_back_end_sound_and_equal_to_dense(pool, monkeypatch):
    """The CAPM relaxation's sparse step (CSR lines, by sign) runs, gives the dense step's
    bounds, and both contain sampled outputs and layer values."""
    calls = []
    step = CapmMaxPool.backward_sparse
    monkeypatch.setattr(CapmMaxPool, "backward_sparse", lambda *a: calls.append(1) or step(*a))
    rng = np.random.default_rng(500)
    net = pool_conv_relu_cnn(rng, pool)
    for eps in (0.3, 1.0, 3.0):
        lo = rng.normal(size=net.n_inputs)
        hi = lo + eps
        sparse, dense = capm_bounds(net), capm_bounds(net, sparse=False)
        res_s, res_d = sparse.compute(lo, hi, "crown", C3), dense.compute(lo, hi, "crown", C3)
        np.testing.assert_allclose(res_s.lower, res_d.lower, rtol=1e-9, atol=1e-9)
        acts = net.forward(samples(rng, lo, hi), return_all=True)
        assert (acts[-1] @ C3.T >= res_s.lower - 1e-9).all()
        for k, ((l, u), (ld, ud)) in enumerate(zip(sparse.layer_bounds(lo, hi), dense.layer_bounds(lo, hi))):
            np.testing.assert_allclose(l, ld, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(u, ud, rtol=1e-9, atol=1e-9)
            assert (acts[k] >= l - 1e-9).all() and (acts[k] <= u + 1e-9).all(), f"layer {k}"
    assert calls, "the sparse back end never crossed the pool"


@pytest.mark.parametrize("pool", [POOLS[0], POOLS[1], POOLS[4]], ids=["2x2", "overlap", "asym-ceil"])
def test_equals_auto_lirpa_capm_crown_on_small_nets(pool):
    """On nets this small auto_LiRPA refines every unstable neuron too, so its CROWN with the
    CAPM operator and the graph engine with the CAPM relaxation (interval intersection off) must
    give the same bounds (the same relaxations); with the intersection on, never looser."""
    rng = np.random.default_rng(21)
    net = pool_cnn(rng, pool, second_conv=True)
    bc = BoundComputer(net, capm.custom_ops())
    plain, tight = capm_bounds(net, intersect_interval=False), capm_bounds(net)
    for eps in (0.05, 0.3):
        lo = rng.normal(size=net.n_inputs)
        hi = lo + eps
        ref = bc.compute(lo, hi, "crown", C=C3).lower
        np.testing.assert_allclose(plain.compute(lo, hi, "crown", C3).lower, ref, rtol=1e-6, atol=1e-6)
        assert (tight.compute(lo, hi, "crown", C3).lower >= ref - 1e-6).all()


@pytest.mark.parametrize("pool", [POOLS[1], POOLS[7]], ids=["overlap", "pad"])
def test_bounds_contain_exact_milp_range(pool):
    from vnnx.milp import output_range

    rng = np.random.default_rng(12)
    net = pool_cnn(rng, pool, cin=1, hw=(5, 5), cmid=2)
    lo = rng.uniform(-1, 1, net.n_inputs)
    hi = lo + 0.3
    eng = capm_bounds(net)
    crown = eng.compute(lo, hi, "crown", np.eye(3))
    alpha = eng.compute(lo, hi, "alpha-crown", np.eye(3))
    for i in range(3):
        exact = output_range(net, lo, hi, np.eye(3)[i], time_limit=20)
        assert crown.lower[i] <= alpha.lower[i] + 1e-12 and alpha.lower[i] <= exact[0] + 1e-6
        assert crown.upper[i] >= alpha.upper[i] - 1e-12 and alpha.upper[i] >= exact[1] - 1e-6


def test_dominant_input_is_exact():
    """A window whose first cell dominates: the max is that cell, and the bound is exact."""
    mp = MaxPool((1, 2, 2), (2, 2), (2, 2))
    net = Network((1, 1, 2, 2), (1, 1), [mp, Dense(np.array([[1.0]]), np.zeros(1), (1,), (1,))])
    lo, hi = np.array([5.0, 0.0, 1.0, -1.0]), np.array([6.0, 1.0, 2.0, 0.5])
    res = capm_bounds(net, intersect_interval=False).compute(lo, hi, "crown")
    assert res.lower[0] == pytest.approx(5.0, abs=1e-12)
    assert res.upper[0] == pytest.approx(6.0, abs=1e-12)


def _threshold_case(tmp_path, seed: int, pool, relu_before: bool = False):
    """A small pool CNN as ONNX, its Verifier (CAPM's relaxation on the graph engine), a box and
    the exact maximum of y0 − y1; ``spec(t)`` says "unsafe iff y0 − y1 >= t"."""
    from vnnx.io.onnx import load_onnx, network_to_onnx
    from vnnx.io.vnnlib import Property, Spec
    from vnnx.milp import output_range
    from vnnx.verify import Verifier

    rng = np.random.default_rng(seed)
    net = pool_cnn(rng, pool, cin=1, hw=(6, 6), cmid=2, relu_before=relu_before)
    network_to_onnx(net, tmp_path / "net.onnx")
    verifier = Verifier(load_onnx(tmp_path / "net.onnx"), relaxations={"MaxPool": CapmMaxPool()})
    lo = rng.uniform(-1, 0.5, net.n_inputs)
    hi = lo + 0.6
    c = np.array([1.0, -1.0, 0.0])
    _, y_max = output_range(net, lo, hi, c, time_limit=30)

    def spec(t: float):
        return Spec("<generated>", net.n_inputs, 3, [Property(lo, hi, [(-c[None, :], np.array([-t]))])])
    return verifier, y_max, spec


@pytest.mark.parametrize("seed", range(3))
def test_verify_pipeline_agrees_with_the_milp(tmp_path, seed):
    """`vnnx verify` with CAPM's relaxation on the graph engine: just above the exact maximum it
    must say unsat, just below sat."""
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


def test_alpha_crown_optimises_the_chain_parameters():
    """α-CROWN optimises CAPM's chain parameters (each step's lower slope and upper mix): on
    these CNNs it is tighter than α-CROWN over the ReLUs' slopes alone, and still sound."""
    class FixedChain(CapmMaxPool):
        has_alpha = False

    gains = []
    for pool in (POOLS[3], POOLS[8]):
        rng = np.random.default_rng(301)
        net = pool_cnn(rng, pool, second_conv=True)
        centre = rng.normal(size=net.n_inputs)
        lo, hi = centre - 0.3, centre + 0.3
        ours = capm_bounds(net, alpha_iterations=20).compute(lo, hi, "alpha-crown", C3).lower
        fixed = ChainBounds(net, relaxations={"MaxPool": FixedChain()}, alpha_iterations=20).compute(
            lo, hi, "alpha-crown", C3).lower
        gains.append(ours - fixed)
        y = net.forward(samples(rng, lo, hi)) @ C3.T
        assert (y >= ours - 1e-9).all()
    assert np.concatenate(gains).min() > 0.1, gains


@pytest.mark.parametrize("pool", [POOLS[1], POOLS[7]], ids=["overlap", "pad"])
def test_crown_step_on_used_slots_equals_the_full_chain(pool):
    """The CROWN step visits only the (window, slot) pairs that carry a weight (_used); it must
    equal the full chain evaluated at CROWN's own parameters (the α path, alpha_init), on a
    batch of two different boxes and random coefficients of both signs."""
    import torch

    rng = np.random.default_rng(44)
    net = pool_cnn(rng, pool, relu_before=True)
    g = net.to_graph()
    k = next(j for j, n in enumerate(g.nodes) if n.op is not None and n.op.kind == "MaxPool")
    shape = g.nodes[g.nodes[k].inputs[0]].shape
    lo = torch.as_tensor(rng.normal(size=(2,) + tuple(shape[1:])))
    lo[1] = lo[1] * 0.1
    hi = lo + torch.as_tensor(rng.uniform(0.0, 1.5, size=lo.shape))
    A = torch.as_tensor(rng.normal(size=(2, 5) + tuple(g.nodes[k].shape[1:])))
    step, op = CapmMaxPool(), g.nodes[k].op
    (fast,), b_fast = step.backward(op, A, [(lo, hi)])
    alpha = step.alpha_init(op, lo, hi, 5)
    (full,), b_full = step.backward(op, A, [(lo, hi)], alpha)
    np.testing.assert_allclose(fast.numpy(), full.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(b_fast.numpy(), b_full.detach().numpy(), rtol=1e-12, atol=1e-12)
