"""ReLU-splitting branch and bound (vnnx.bab): the chain view, sound bounds under splits,
exact answers against the MILP's exact output range, and its place in the verifier."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import vnnx  # noqa: F401
from tests.nets import random_cnn, random_mlp
from vnnx.bab import ReluBab, _Domains, crown_layer_bounds, relu_chain
from vnnx.milp import output_range
from vnnx.network import Conv, Dense, Network, Relu


def _box(rng, n, width=(0.3, 1.2)):
    lo = rng.uniform(-1, 0.2, n)
    return lo, lo + rng.uniform(*width, n)


def test_chain_merges_affine_layers_and_matches_the_network():
    rng = np.random.default_rng(0)
    conv = Conv(rng.normal(size=(2, 1, 2, 2)), rng.normal(size=2), (1, 3, 3), (2, 2, 2))
    net = Network((1, 1, 3, 3), (1, 3), [
        conv, Relu((8,)), Dense(rng.normal(size=(5, 8)), rng.normal(size=5), (8,), (5,)),
        Dense(rng.normal(size=(4, 5)), rng.normal(size=4), (5,), (4,)), Relu((4,)),
        Dense(rng.normal(size=(3, 4)), rng.normal(size=3), (4,), (3,))])
    chain = relu_chain(net)
    assert chain is not None and chain.n_hidden == 2
    assert chain.layer_index == [0, 3]          # the merged Dense-Dense feeds the second ReLU
    x = rng.normal(size=(50, 9))
    np.testing.assert_allclose(chain.forward(torch.as_tensor(x)).numpy(), net.forward(x), rtol=1e-10, atol=1e-10)


def test_chain_refuses_networks_with_other_layers():
    rng = np.random.default_rng(1)
    assert relu_chain(random_cnn(rng, maxpool=True)) is None
    assert relu_chain(random_cnn(rng, maxpool=False)) is not None


@pytest.mark.parametrize("seed", range(6))
def test_bounds_under_random_splits_hold_on_sampled_points(seed):
    """Split random unstable neurons, optimise α/β, then every sampled input that satisfies the
    splits must have an objective at or above the domain's bound."""
    rng = np.random.default_rng(seed)
    net = random_mlp(rng, (4, 10, 10, 3))
    chain = relu_chain(net)
    lo, up = _box(rng, 4)
    A, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    bab = ReluBab(chain, lo, up, A, b, iterations=30, rebound_intermediate=True)
    with torch.no_grad():
        root = bab._root(None)
    # Split two unstable neurons per layer the way an anchor point activates them, so that
    # the domain is not empty.
    anchor = net.forward(rng.uniform(lo, up, size=(1, 4)), return_all=True)
    splits = [s.clone() for s in root.splits]
    for i, k in enumerate(chain.layer_index):
        unstable = torch.nonzero((root.lbs[i][0] < 0) & (root.ubs[i][0] > 0)).flatten()
        for j in unstable[rng.permutation(len(unstable))[:2]].tolist():
            splits[i][0, j] = 1 if anchor[k][0, j] >= 0 else -1
    lbs = [torch.where(s > 0, l.clamp(min=0), l) for l, s in zip(root.lbs, splits)]
    ubs = [torch.where(s < 0, u.clamp(max=0), u) for u, s in zip(root.ubs, splits)]
    dom = _Domains(lbs, ubs, splits, root.alphas, root.betas, torch.full((1,), -np.inf, dtype=torch.float64))
    with torch.no_grad():
        bab._intermediate(dom.lbs, dom.ubs, dom.splits, 1)
    bab._optimise(dom, 30)
    bound = float(dom.bound[0])
    x = np.vstack([rng.uniform(lo, up, size=(40000, 4)), np.where(rng.random((4000, 4)) < 0.5, lo, up)])
    acts = net.forward(x, return_all=True)
    keep = np.ones(len(x), dtype=bool)
    for i, k in enumerate(chain.layer_index):
        z, s = acts[k], splits[i][0].numpy()
        keep &= np.all((s == 0) | ((s > 0) & (z >= 0)) | ((s < 0) & (z <= 0)), axis=1)
        # The domain's pre-activation bounds are sound too.
        assert np.all(z[keep] >= dom.lbs[i][0].numpy() - 1e-9) and np.all(z[keep] <= dom.ubs[i][0].numpy() + 1e-9)
    assert keep.sum() > 20
    obj = (acts[-1][keep] @ A.T - b).max(1)
    assert obj.min() >= bound - 1e-9


def _chain_pre_activations(chain, X: np.ndarray) -> list[np.ndarray]:
    h, out = torch.as_tensor(X), []
    for w, b in zip(chain.weights[:-1], chain.biases[:-1]):
        z = h @ w.T + b
        out.append(z.numpy())
        h = z.clamp(min=0)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_crown_layer_bounds_are_sound_and_match_auto_lirpa(seed):
    """vnnx's dense CROWN: sampled points (box corners included) stay inside every layer's
    bounds; on the neurons auto_LiRPA's CROWN refines (unstable under its bounds) the two agree,
    and elsewhere vnnx's are never looser."""
    from vnnx.bounds import BoundComputer

    rng = np.random.default_rng(seed)
    net = random_mlp(rng, (6, 20, 16, 12, 3)) if seed % 2 == 0 else random_cnn(rng, maxpool=False)
    chain = relu_chain(net)
    x0 = rng.uniform(0, 1, net.n_inputs)
    lo, hi = x0 - 0.15, x0 + 0.15
    mine = crown_layer_bounds(chain, lo, hi)
    X = rng.uniform(lo, hi, size=(5000, net.n_inputs))
    X[:500] = np.where(rng.random((500, net.n_inputs)) < 0.5, lo, hi)
    for (l, u), z in zip(mine, _chain_pre_activations(chain, X)):
        assert (z >= l - 1e-9).all() and (z <= u + 1e-9).all()
    ref = BoundComputer(net).compute(lo, hi, "crown").pre_activation
    refined = 0
    for (l, u), k in zip(mine, chain.layer_index):
        rl, ru = ref[k]
        assert (l >= rl - 1e-9).all() and (u <= ru + 1e-9).all()
        unstable = (rl < 0) & (ru > 0)
        np.testing.assert_allclose(l[unstable], rl[unstable], atol=1e-9)
        np.testing.assert_allclose(u[unstable], ru[unstable], atol=1e-9)
        refined += int(unstable.sum())
    assert refined > 0


@pytest.mark.parametrize("seed", range(8))
def test_answers_agree_with_the_exact_output_range(seed):
    """Against the MILP's exact minimum of c·y: a threshold just below it is unsat, just above
    it is sat (with a point that really violates), on networks with tens of unstable ReLUs."""
    rng = np.random.default_rng(100 + seed)
    net = random_mlp(rng, (5, 16, 12, 8, 3))
    lo, up = _box(rng, 5, (0.5, 1.5))
    _assert_agrees_with_exact_range(net, relu_chain(net), lo, up, seed)


def _assert_agrees_with_exact_range(net, chain, lo, up, seed):
    """Threshold 2% below the MILP's exact minimum of y_0 - y_(1 + seed % 2): unsat; 2% above:
    sat, with a point in the box that really violates."""
    c = np.zeros(3)
    c[0], c[1 + seed % 2] = 1.0, -1.0
    true_min, _ = output_range(net, lo, up, c)
    gap = 0.02 * max(1.0, abs(true_min))
    for offset, expected in ((-gap, "unsat"), (gap, "sat")):
        thr = true_min + offset
        check = lambda x: bool(float(net.forward(x[None])[0] @ c) <= thr)  # noqa: E731
        res = ReluBab(chain, lo, up, c[None], np.array([thr]), batch=64, check=check).run(
            deadline=time.monotonic() + 60)
        assert res.status == expected, (seed, offset, res)
        if expected == "sat":
            assert np.all(res.x >= lo) and np.all(res.x <= up)
            assert float(net.forward(res.x[None])[0] @ c) <= thr


def test_fully_split_domains_are_closed_exactly_by_the_leaf_lp():
    """With branching that always splits everything at once, the tree reaches leaves with no
    unstable neuron left; their LP must close them when the threshold is below the minimum."""
    rng = np.random.default_rng(7)
    net = random_mlp(rng, (3, 6, 5, 2))
    chain = relu_chain(net)
    lo, up = _box(rng, 3, (1.0, 2.0))
    c = np.array([1.0, -1.0])
    true_min, _ = output_range(net, lo, up, c)
    res = ReluBab(chain, lo, up, c[None], np.array([true_min - 1e-3]), batch=4, iterations=0).run(
        deadline=time.monotonic() + 60)
    assert res.status == "unsat"


def test_timeout_is_honoured_and_never_unsat():
    rng = np.random.default_rng(3)
    net = random_mlp(rng, (8, 64, 64, 3))
    chain = relu_chain(net)
    lo, up = _box(rng, 8, (1.5, 2.0))
    c = np.array([1.0, -1.0, 0.0])
    # A threshold far above anything CROWN can prove, with no counterexample check: the tree
    # can only run out of time.
    t0 = time.monotonic()
    res = ReluBab(chain, lo, up, c[None], np.array([50.0]), batch=64).run(deadline=time.monotonic() + 1.0)
    assert res.status in ("timeout", "unknown")
    assert time.monotonic() - t0 < 5.0


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
    import vnnx.verify as V

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
    import vnnx.verify as V

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


@pytest.mark.parametrize("geometry", [
    dict(in_shape=(2, 7, 7), stride=(1, 1), padding=(0, 0, 0, 0), k=3),
    dict(in_shape=(2, 8, 8), stride=(2, 2), padding=(1, 1, 1, 1), k=3),
    dict(in_shape=(3, 9, 7), stride=(2, 1), padding=(2, 1, 2, 1), k=5),
    dict(in_shape=(1, 28, 28), stride=(2, 2), padding=(2, 2, 2, 2), k=5),   # the paper's MNIST CNN
])
def test_transposed_conv_equals_the_dense_product(geometry):
    """The branch and bound's backward pass through a convolution (a transposed convolution)
    equals the product with the layer's dense matrix, for batched coefficients."""
    from vnnx.bab import transposed_conv
    from vnnx.network import Conv

    rng = np.random.default_rng(3)
    c, h, w = geometry["in_shape"]
    k = geometry["k"]
    (sh, sw), (pt, pl, pb, pr) = geometry["stride"], geometry["padding"]
    oh, ow = (h + pt + pb - k) // sh + 1, (w + pl + pr - k) // sw + 1
    conv = Conv(rng.normal(size=(4, c, k, k)), rng.normal(size=4), (c, h, w), (4, oh, ow),
                geometry["stride"], geometry["padding"])
    back = transposed_conv(conv)
    assert back is not None
    W, _ = conv.matrix()
    coef = torch.as_tensor(rng.normal(size=(5, 2, 4 * oh * ow)))
    np.testing.assert_allclose(back(coef).numpy(), (coef @ torch.as_tensor(W)).numpy(), rtol=1e-12, atol=1e-12)


def test_transposed_conv_refuses_geometries_it_cannot_express():
    from vnnx.bab import transposed_conv
    from vnnx.network import Conv

    rng = np.random.default_rng(0)
    asym = Conv(rng.normal(size=(2, 1, 3, 3)), np.zeros(2), (1, 6, 6), (2, 5, 5), (1, 1), (1, 1, 0, 0))
    assert transposed_conv(asym) is None
    dilated = Conv(rng.normal(size=(2, 1, 2, 2)), np.zeros(2), (1, 6, 6), (2, 4, 4), dilation=(2, 2))
    assert transposed_conv(dilated) is None


def _two_conv_net(rng):
    """Conv(1->3, 3x3, stride 2, pad 1) on 1x8x8 -> ReLU -> Conv(3->4, 3x3) -> ReLU -> Dense 3."""
    c1 = Conv(rng.normal(size=(3, 1, 3, 3)) / 2, rng.normal(size=3) * 0.2, (1, 8, 8), (3, 4, 4), (2, 2), (1, 1, 1, 1))
    c2 = Conv(rng.normal(size=(4, 3, 3, 3)) / 4, rng.normal(size=4) * 0.2, (3, 4, 4), (4, 2, 2))
    return Network((1, 1, 8, 8), (1, 3), [c1, Relu((48,)), c2, Relu((16,)),
                                          Dense(rng.normal(size=(3, 16)) / 4, rng.normal(size=3) * 0.2, (16,), (3,))])


@pytest.mark.parametrize("seed", range(3))
def test_answers_agree_with_the_exact_output_range_on_convolutions(seed):
    """The same check on a chain whose backward passes go through transposed convolutions."""
    rng = np.random.default_rng(200 + seed)
    net = _two_conv_net(rng)
    chain = relu_chain(net)
    assert chain.backs is not None and chain.backs[0] is not None and chain.backs[1] is not None
    x0 = rng.uniform(0, 1, 64)
    _assert_agrees_with_exact_range(net, chain, x0 - 0.3, x0 + 0.3, seed)
