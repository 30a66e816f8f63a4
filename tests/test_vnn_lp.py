"""VNN LP sparsification (plugins/vnn_lp): the guarantee, the formulations, fallbacks, report, CLI.

The guarantee is re-checked here independently of the plugin's own checker: float64 activation
patterns and MaxPool winners from ``Network.forward``, argmax and margin from onnxruntime on
the file that was written.
"""
from __future__ import annotations

import argparse
import importlib
import json

import numpy as np
import pytest
import torch

import vnnx  # noqa: F401
from vnnx.errors import ConfigError, ShapeMismatchError, UnsupportedOpError, VnnxError
from vnnx.io.onnx import load_onnx, network_to_onnx, run_onnxruntime, to_network
from vnnx.network import Conv, Dense, MaxPool, Network, Relu, Sigmoid
from vnnx.solvers import Solution

from nets import random_cnn, random_mlp
from vnnx_plugins.vnn_lp import SparsifyOptions, prune_magnitude, sparsify
from vnnx_plugins.vnn_lp.report import l1_norm, nonzeros, recount

# The module (the package re-exports the function under the same name).
PASS = importlib.import_module("vnnx_plugins.vnn_lp.sparsify")

QUIET = dict(progress=False)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------------- helpers
def targets_of(net: Network, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Target class (label if right, else prediction) and the original margin, float64."""
    out = net.forward(x)
    pred = out.argmax(1)
    t = np.where(pred == y, y, pred)
    others = out.copy()
    others[np.arange(len(x)), t] = -np.inf
    return t, out[np.arange(len(x)), t] - others.max(1)


def independent_check(orig: Network, new: Network, x: np.ndarray, y: np.ndarray, path, margin: float = 0.0):
    """Patterns (float64), MaxPool winners (float64), argmax and margin (onnxruntime float32 on ``path``)."""
    a = orig.forward(x, return_all=True)
    b = new.forward(x, return_all=True)
    for k, layer in enumerate(orig.layers):
        pre_a = x if k == 0 else a[k - 1]
        pre_b = x if k == 0 else b[k - 1]
        if isinstance(layer, Relu):
            assert np.array_equal(pre_a > 0, pre_b > 0), f"ReLU pattern changed at layer {k}"
        if isinstance(layer, MaxPool):
            for w in layer.windows():
                win = w[np.argmax(pre_a[:, w], axis=1)]
                got = pre_b[np.arange(len(x)), win]
                assert np.all(got >= pre_b[:, w].max(axis=1)), f"MaxPool winner changed at layer {k}"
    t, m = targets_of(orig, x, y)
    checked = m > 1e-9                       # ties (all outputs cut to 0 by a final ReLU) have no argmax
    y32 = run_onnxruntime(load_onnx(path), x.astype(np.float32)).astype(np.float64)
    others = y32.copy()
    others[np.arange(len(x)), t] = -np.inf
    new_margin = y32[np.arange(len(x)), t] - others.max(1)
    assert np.all(new_margin[checked] > 0), "argmax changed"
    if margin > 0:
        assert np.all(new_margin[checked] >= np.minimum(margin, m[checked]) - 1e-5), "margin lost"


def affine_nnz(net: Network) -> int:
    return sum(nonzeros(layer) for layer in net.layers if isinstance(layer, (Dense, Conv)))


def run(net, x, y, tmp_path, name="out.onnx", **kw):
    path = tmp_path / name
    opts = SparsifyOptions(**{**QUIET, **kw})
    new, report = sparsify(net, x, y, opts, out=path)
    assert report.guarantee["passed"], report.guarantee
    assert report.guarantee["engine"].startswith("onnxruntime")
    return new, report, path


def trained_mlp(seed: int = 0):
    """A 2-16-16-3 ReLU net trained (seeded, ~0.3 s) on three Gaussian blobs."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 1.5], [1.3, -0.8], [-1.3, -0.8]])
    y = torch.randint(0, 3, (300,), generator=g)
    x = centres[y] + 0.6 * torch.randn(300, 2, generator=g)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                torch.nn.Linear(16, 3))
    torch.manual_seed(seed)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.4, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    layers = []
    for m in model:
        if isinstance(m, torch.nn.Linear):
            w = m.weight.detach().double().numpy()
            layers.append(Dense(w, m.bias.detach().double().numpy(), (w.shape[1],), (w.shape[0],)))
        else:
            layers.append(Relu((layers[-1].weight.shape[0],)))
    return Network((1, 2), (1, 3), layers), x.double().numpy(), y.numpy()


# ----------------------------------------------------------------------------- guarantee
@pytest.mark.parametrize("final_relu", [False, True])
def test_random_mlp_keeps_patterns_and_argmax_eps0(rng, tmp_path, final_relu):
    net = random_mlp(rng, (6, 12, 12, 4), final_relu=final_relu)
    x = rng.uniform(-1, 1, size=(40, 6))
    y = rng.integers(0, 4, size=40)          # many misclassified: they keep their prediction instead
    new, report, path = run(net, x, y, tmp_path)
    assert report.n_degenerate == 0 and report.n_kept == 40
    independent_check(net, new, x, y, path)
    assert affine_nnz(new) < affine_nnz(net)
    # At ε = 0 the layers' live outputs are kept exactly, so the logits barely move.
    assert np.allclose(new.forward(x), net.forward(x), atol=1e-5)


@pytest.mark.parametrize("mode,eps", [("relative", 0.1), ("absolute", 0.05)])
def test_random_mlp_eps_and_margin(rng, tmp_path, mode, eps):
    net = random_mlp(rng, (6, 12, 12, 4))
    x = rng.uniform(-1, 1, size=(40, 6))
    y = net.forward(x).argmax(1)
    new, report, path = run(net, x, y, tmp_path, epsilon=eps, epsilon_mode=mode, margin=0.3)
    independent_check(net, new, x, y, path, margin=0.3)
    assert affine_nnz(new) < affine_nnz(net)
    # The first layer's ε-box holds on every entry later layers see (active ReLUs).
    z0, z1 = net.layers[0].apply(x), new.layers[0].apply(x)
    live = z0 > 0
    radius = eps * np.abs(z0) if mode == "relative" else eps
    assert np.all(np.abs(z1 - z0)[live] <= (radius + 1e-6 if mode == "absolute" else radius[live] + 1e-6))


@pytest.mark.parametrize("kw", [dict(), dict(relu_before_pool=False),
                                dict(pool_kernel=(3, 3), pool_stride=(1, 1), pool_padding=(1, 1, 1, 1)),
                                dict(maxpool=False)])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_random_cnn_keeps_patterns_winners_argmax(rng, tmp_path, kw, eps):
    net = random_cnn(rng, **kw)
    x = rng.uniform(0, 1, size=(25, 36))
    y = net.forward(x).argmax(1)
    new, report, path = run(net, x, y, tmp_path, epsilon=eps)
    assert report.n_degenerate == 0
    independent_check(net, new, x, y, path)
    assert isinstance(new.layers[0], Conv) and new.layers[0].weight.shape == net.layers[0].weight.shape
    assert affine_nnz(new) < affine_nnz(net)


def test_trained_mlp(tmp_path):
    net, x, y = trained_mlp()
    new, report, path = run(net, x[:60], y[:60], tmp_path, epsilon=0.1, margin=0.5)
    independent_check(net, new, x[:60], y[:60], path, margin=0.5)
    assert affine_nnz(new) < affine_nnz(net)
    assert report.layers[-1].status == "sparsified"     # the output layer is sparsified too


def test_eran_mnist_mlp(shared, tmp_path):
    from vnnx.data import fit_to_input, mnist_split

    net = to_network(load_onnx(shared / "networks/eran-mnist/mnist_relu_3_50.onnx"))
    _, ev = mnist_split(shared / "data/mnist", 60)
    x, y = fit_to_input(ev.x, 784).astype(np.float64), ev.y
    new, report, path = run(net, x, y, tmp_path)
    independent_check(net, new, x, y, path)
    first = report.layers[0]
    assert first.formulation == "per-neuron" and first.n_lps == 50
    assert first.nnz_after < 0.3 * first.nnz_before


def test_eran_conv_net(shared, tmp_path):
    from vnnx.data import fit_to_input, mnist_split

    net = to_network(load_onnx(shared / "networks/eran-mnist/convSmallRELU__Point.onnx"))
    _, ev = mnist_split(shared / "data/mnist", 12)
    x = (fit_to_input(ev.x, 784).astype(np.float64) - 0.1307) / 0.3081
    new, report, path = run(net, x, ev.y, tmp_path)
    independent_check(net, new, x, ev.y, path)
    assert report.layers[0].formulation == "per-channel"
    assert affine_nnz(new) < affine_nnz(net)


# ----------------------------------------------------------------------------- formulations
@pytest.mark.parametrize("make", ["mlp", "cnn"])
def test_formulations_agree_on_objective(rng, make):
    net = random_mlp(rng, (5, 8, 8, 3), final_relu=True) if make == "mlp" else random_cnn(rng)
    x = rng.uniform(0, 1, size=(20, net.n_inputs))
    y = net.forward(x).argmax(1)
    l1 = {}
    for eps in (0.0, 0.1):
        for form in ("auto", "coupled", "paper"):
            new, report = sparsify(net, x, y, SparsifyOptions(epsilon=eps, formulation=form, check_onnx=False, **QUIET))
            assert all(r.status == "sparsified" for r in report.layers), [r.message for r in report.layers]
            l1[eps, form] = [r.l1_after for r in report.layers]
        for form in ("coupled", "paper"):
            assert np.allclose(l1[eps, form], l1[eps, "auto"], rtol=1e-6, atol=1e-7), (eps, form, l1)
    # ε = 0 separates: every layer is solved per neuron / per channel, and ε > 0 allows less weight.
    _, r0 = sparsify(net, x, y, SparsifyOptions(check_onnx=False, **QUIET))
    assert all(r.formulation in ("per-neuron", "per-channel") for r in r0.layers)
    assert sum(l1[0.1, "auto"]) <= sum(l1[0.0, "auto"]) + 1e-7


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_interior_point_lps_agree_with_simplex(rng, tmp_path, monkeypatch, eps):
    """Large LPs go to HiGHS's IPM with crossover: forcing it on every LP gives the simplex's
    L1 optimum and a network that still keeps every pattern and argmax."""
    net = random_mlp(rng, (6, 12, 10, 3))
    x = rng.uniform(0, 1, size=(25, 6))
    y = net.forward(x).argmax(1)
    simplex, rs = sparsify(net, x, y, SparsifyOptions(epsilon=eps, check_onnx=False, **QUIET))
    used = []
    real = PASS._highs_options

    def spy(problem):
        used.append(real(problem))
        return used[-1]

    monkeypatch.setattr(PASS, "_IPM_MIN_NNZ", 0)
    monkeypatch.setattr(PASS, "_highs_options", spy)
    out = tmp_path / "ipm.onnx"
    ipm, ri = sparsify(net, x, y, SparsifyOptions(epsilon=eps, **QUIET), out=str(out))
    assert used and all(o.get("solver") == "ipm" for o in used)
    assert all(r.status == "sparsified" for r in ri.layers), [r.message for r in ri.layers]
    assert np.allclose([r.l1_after for r in ri.layers], [r.l1_after for r in rs.layers], rtol=1e-6, atol=1e-7)
    independent_check(net, ipm, x, y, out)


def test_parallel_workers_same_result(rng):
    net = random_mlp(rng, (5, 16, 3))
    x = rng.uniform(-1, 1, size=(30, 5))
    y = net.forward(x).argmax(1)
    a, _ = sparsify(net, x, y, SparsifyOptions(check_onnx=False, **QUIET))
    b, _ = sparsify(net, x, y, SparsifyOptions(check_onnx=False, workers=2, **QUIET))
    for la, lb in zip(a.layers, b.layers):
        if isinstance(la, Dense):
            assert np.allclose(la.weight, lb.weight) and np.allclose(la.bias, lb.bias)


# ----------------------------------------------------------------------------- fallbacks
def _patched_solve(monkeypatch, fake):
    real = PASS.solve

    def wrapper(problem, time_limit=None, backend="highs", threads=None, **kw):
        out = fake(problem, real, time_limit, backend)
        return out if out is not None else real(problem, time_limit=time_limit, backend=backend, threads=threads, **kw)

    monkeypatch.setattr(PASS, "solve", wrapper)


@pytest.mark.parametrize("status", ["infeasible", "time_limit", "error"])
def test_failed_lps_keep_original_weights(rng, tmp_path, monkeypatch, status):
    net = random_mlp(rng, (5, 8, 8, 3))
    x = rng.uniform(-1, 1, size=(20, 5))
    y = net.forward(x).argmax(1)
    _patched_solve(monkeypatch, lambda p, real, tl, be: Solution(status, None, None, None, 0.0, "forced"))
    new, report, path = run(net, x, y, tmp_path)
    assert all(r.status == "fallback" and status in r.message for r in report.layers)
    for la, lb in zip(net.layers, new.layers):
        if isinstance(la, Dense):
            assert np.array_equal(la.weight, lb.weight) and np.array_equal(la.bias, lb.bias)
    assert report.nnz_after == report.nnz_before
    independent_check(net, new, x, y, path)


def test_one_failed_neuron_keeps_its_row(rng, tmp_path, monkeypatch):
    net = random_mlp(rng, (5, 8, 3))
    x = rng.uniform(-1, 1, size=(20, 5))
    y = net.forward(x).argmax(1)
    calls = {"n": 0}

    def fake(problem, real, tl, be):
        calls["n"] += 1
        return Solution("time_limit", None, None, None, 0.0) if calls["n"] == 3 else None

    _patched_solve(monkeypatch, fake)
    new, report, path = run(net, x, y, tmp_path)
    first = report.layers[0]
    assert first.status == "partial" and first.groups_kept_original == 1
    assert np.array_equal(new.layers[0].weight[2], net.layers[0].weight[2])      # the third neuron's LP
    independent_check(net, new, x, y, path)


def test_wrong_solution_is_rejected_by_the_check(rng, tmp_path, monkeypatch):
    """A solver answer that breaks the guarantee (θ = 0) must never reach the output file."""
    net = random_mlp(rng, (5, 8, 8, 3))
    x = rng.uniform(-1, 1, size=(20, 5))
    y = net.forward(x).argmax(1)
    _patched_solve(monkeypatch, lambda p, real, tl, be: Solution("optimal", 0.0, np.zeros(p.n_cols), 0.0, 0.0))
    new, report, path = run(net, x, y, tmp_path)
    # Per-neuron layers catch it on their own rows, the coupled output layer in the step check.
    assert all(r.status == "fallback" and ("check failed" in r.message or "broke their own rows" in r.message)
               for r in report.layers)
    independent_check(net, new, x, y, path)


def test_final_onnx_check_restores_layers(rng, tmp_path, monkeypatch):
    """If the per-step check were fooled, the onnxruntime check on the exported file restores layers."""
    from vnnx_plugins.vnn_lp.guarantee import GuaranteeCheck

    net = random_mlp(rng, (5, 8, 8, 3))
    x = rng.uniform(-1, 1, size=(20, 5))
    y = net.forward(x).argmax(1)
    _patched_solve(monkeypatch, lambda p, real, tl, be: Solution("optimal", 0.0, np.zeros(p.n_cols), 0.0, 0.0))
    monkeypatch.setattr(PASS, "check_network", lambda n, r, *a: GuaranteeCheck("fooled", len(r.x)))
    monkeypatch.setattr(PASS, "_groups_breaking_rows", lambda *a: [])
    new, report, path = run(net, x, y, tmp_path)
    assert all(r.status == "fallback" and "restored" in r.message for r in report.layers)
    independent_check(net, new, x, y, path)


def test_layers_option_only_touches_first_k(rng, tmp_path):
    net = random_mlp(rng, (5, 10, 10, 3))
    x = rng.uniform(-1, 1, size=(25, 5))
    y = net.forward(x).argmax(1)
    new, report, path = run(net, x, y, tmp_path, layers=1)
    assert [r.status for r in report.layers] == ["sparsified", "skipped", "skipped"]
    assert np.array_equal(new.layers[2].weight, net.layers[2].weight)
    independent_check(net, new, x, y, path)


# ----------------------------------------------------------------------------- report
def test_report_matches_recount(rng, tmp_path):
    net = random_cnn(rng)
    x = rng.uniform(0, 1, size=(20, 36))
    y = net.forward(x).argmax(1)
    new, report, path = run(net, x, y, tmp_path, epsilon=0.05)
    for (k, before, after), r in zip(recount(net, new, report), report.layers):
        assert (r.index, r.nnz_before, r.nnz_after) == (k, before, after)
        assert r.l1_before == pytest.approx(l1_norm(net.layers[k]))
        assert r.l1_after == pytest.approx(l1_norm(new.layers[k]))
        assert r.params == net.layers[k].weight.size + net.layers[k].bias.size
        assert r.n_lps >= 1 and r.lp_rows > 0 and r.lp_cols > 0 and r.seconds >= r.lp_seconds >= 0
    assert report.nnz_before == affine_nnz(net) and report.nnz_after == affine_nnz(new)
    assert report.n_validation == 20 and report.n_kept + report.n_degenerate == 20
    # The written file is the checked network.
    assert np.allclose(run_onnxruntime(load_onnx(path), x.astype(np.float32)), new.forward(x), atol=1e-4)
    report.to_json(tmp_path / "r.json")
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["nnz_after"] == report.nnz_after and data["guarantee"]["passed"] is True
    assert [l["nnz_after"] for l in data["layers"]] == [r.nnz_after for r in report.layers]
    table = report.table()
    assert str(report.nnz_after) in table and "PASSED" in table


def test_zero_and_ambiguous_samples(tmp_path):
    w1 = np.array([[1.0, 1.0, 1.0], [1.0, -1.0, 0.5], [-1.0, 0.5, 0.2]])
    net = Network((1, 3), (1, 2), [Dense(w1, np.array([0.0, 0.2, 0.1]), (3,), (3,)), Relu((3,)),
                                   Dense(np.array([[1.0, -1.0, 0.5], [-1.0, 1.0, 1.0]]), np.array([0.1, 0.0]), (3,), (2,))])
    rng = np.random.default_rng(5)
    # Sample 0: neuron 0 is exactly 0 on the zero input: an inactive ReLU with no rounding at
    # all, which is kept. Sample 1: 0.1 + 0.2 - 0.3 = 5.6e-17 in float64, far inside float32
    # rounding noise: no engine can promise its sign, so the sample is left out (and reported).
    x = np.vstack([np.zeros((1, 3)), [[0.1, 0.2, -0.3]], rng.uniform(-1, 1, size=(15, 3))])
    assert net.layers[0].apply(x[1:2])[0, 0] > 0
    y = net.forward(x).argmax(1)
    new, report, path = run(net, x, y, tmp_path)
    assert report.n_degenerate == 1 and report.degenerate_reasons["within_float32_noise"] == 1
    assert report.n_kept == 16
    direct = report.guarantee["all_samples"]
    assert direct["given"] == 17 and direct["kept_ok"] == 16 and direct["kept_failed"] == 0
    independent_check(net, new, np.delete(x, 1, axis=0), np.delete(y, 1), path)


def test_direct_check_sees_every_sample(rng):
    """The plugin's own direct check compares layer values on all samples, independently of
    the constraint rows: a changed pattern on any sample is counted."""
    from vnnx_plugins.vnn_lp.guarantee import check_network
    from vnnx_plugins.vnn_lp.patterns import build_reference

    net = random_mlp(rng, (5, 8, 8, 3))
    x = rng.uniform(-1, 1, size=(20, 5))
    y = net.forward(x).argmax(1)
    ref = build_reference(net, x, y)
    assert check_network(net, ref, 1e-5, net).passed
    z0 = net.layers[0].apply(x)
    i, j = np.unravel_index(np.argmin(np.where(z0 > 0, z0, np.inf)), z0.shape)   # the smallest active ReLU
    bias = net.layers[0].bias.copy()
    bias[j] -= z0[i, j] + 1e-3                       # switch it off on sample i
    broken = Network(net.input_shape, net.output_shape,
                     [Dense(net.layers[0].weight, bias, (5,), (8,))] + list(net.layers[1:]))
    check = check_network(broken, ref, 1e-5, net)
    assert not check.passed and check.direct["kept_failed"] >= 1 and check.violations["direct-check"] >= 1
    # Drop every constraint row: the direct check alone still catches it.
    for blk in ref.blocks:
        blk.constraints = blk.constraints.select(np.zeros(len(blk.constraints), dtype=bool))
    check = check_network(broken, ref, 1e-5, net)
    assert set(check.violations) == {"direct-check"}


# ----------------------------------------------------------------------------- errors
def test_bad_data_gives_clear_errors(rng):
    net = random_mlp(rng, (4, 6, 3))
    x = rng.uniform(size=(10, 4))
    y = np.zeros(10, dtype=int)
    with pytest.raises(ShapeMismatchError, match="5 values per sample.*expects 4"):
        sparsify(net, rng.uniform(size=(10, 5)), y, SparsifyOptions(**QUIET))
    with pytest.raises(ShapeMismatchError, match="labels range"):
        sparsify(net, x, np.full(10, 3), SparsifyOptions(**QUIET))
    with pytest.raises(ShapeMismatchError, match="labels have shape"):
        sparsify(net, x, y[:9], SparsifyOptions(**QUIET))
    with pytest.raises(ShapeMismatchError, match="NaN"):
        sparsify(net, np.full((10, 4), np.nan), y, SparsifyOptions(**QUIET))
    with pytest.raises(ShapeMismatchError, match="empty"):
        sparsify(net, np.zeros((0, 4)), np.zeros(0, int), SparsifyOptions(**QUIET))


def test_bad_options_and_layers(rng):
    net = random_mlp(rng, (4, 6, 3))
    net_sig = Network(net.input_shape, net.output_shape, [net.layers[0], Sigmoid((6,)), net.layers[2]])
    x, y = rng.uniform(size=(5, 4)), np.zeros(5, dtype=int)
    with pytest.raises(UnsupportedOpError, match="Sigmoid"):
        sparsify(net_sig, x, y, SparsifyOptions(**QUIET))
    for bad in (dict(epsilon=-1), dict(epsilon=1.0), dict(formulation="x"), dict(layers=0), dict(solver="cplex"),
                dict(time_limit=0)):
        with pytest.raises(ConfigError):
            sparsify(net, x, y, SparsifyOptions(**bad, **QUIET))
    with pytest.raises(VnnxError, match="only 2 affine layers"):
        sparsify(net, x, y, SparsifyOptions(layers=3, **QUIET))


# ----------------------------------------------------------------------------- MBP
def test_prune_magnitude(rng):
    net = random_mlp(rng, (6, 10, 4))
    half = prune_magnitude(net, rate=0.5)
    for a, b in zip(net.layers, half.layers):
        if isinstance(a, Dense):
            kept = b.weight != 0
            assert kept.sum() == a.weight.size - round(0.5 * a.weight.size)
            assert np.abs(a.weight[~kept]).max() <= np.abs(a.weight[kept]).min()
            assert np.array_equal(a.bias, b.bias)
    counts = prune_magnitude(net, keep={0: 20, 2: 30})
    assert nonzeros(counts.layers[0]) == 20 and nonzeros(counts.layers[2]) == 30
    with pytest.raises(ConfigError):
        prune_magnitude(net, rate=1.5)


# ----------------------------------------------------------------------------- evaluation
def test_crown_verified_samples_survive_sampling(rng):
    from vnnx_plugins.vnn_lp.evaluate import verified_robustness

    net, x, y = trained_mlp()
    x, y = x[:30], y[:30]
    res = verified_robustness(net, x, y, [0.05, 0.3], "crown", clip=None)
    milp = verified_robustness(net, x, y, [0.3], "milp", time_limit=10, clip=None)
    assert 0 < res[0.05]["n_verified"] and res[0.3]["n_verified"] <= res[0.05]["n_verified"]
    assert milp[0.3]["n_verified"] >= res[0.3]["n_verified"]        # exact >= relaxation
    # Soundness by sampling: no sampled point of a CROWN-verified box changes the class.
    from vnnx.engine import ChainBounds

    engine = ChainBounds(net)
    C = lambda t: np.delete(np.eye(3)[t] - np.eye(3), t, axis=0)  # noqa: E731
    for i in range(len(x)):
        if (net.forward(x[i:i + 1]).argmax(1)[0] == y[i]) and \
                np.all(engine.compute(x[i] - 0.3, x[i] + 0.3, "crown", C(y[i])).lower > 0):
            pts = x[i] + rng.uniform(-0.3, 0.3, size=(200, 2))
            assert np.all(net.forward(pts).argmax(1) == y[i])


# ----------------------------------------------------------------------------- CLI
def _cli(argv):
    from vnnx_plugins.vnn_lp.cli import add_commands

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_sparsify_and_prune(rng, tmp_path, capsys):
    from vnnx.data import save_npz

    net = random_mlp(rng, (6, 12, 12, 3))
    network_to_onnx(net, tmp_path / "in.onnx")
    x = rng.uniform(0, 1, size=(50, 6))
    save_npz(tmp_path / "data.npz", x, net.forward(x).argmax(1))
    rc = _cli(["sparsify", "--onnx", str(tmp_path / "in.onnx"), "--data", str(tmp_path / "data.npz"),
               "--val-count", "30", "--out", str(tmp_path / "out.onnx"), "--epsilon", "0.05", "--margin", "0.1",
               "--report", str(tmp_path / "r.json"), "--deltas", "0.01,0.05", "--mbp", "--plot",
               str(tmp_path / "r.png"), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "vnn" in out and "mbp" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["guarantee"]["passed"] and report["n_validation"] == 30
    assert set(report["evaluation"]["robustness"]) == {"original", "vnn", "mbp"}
    assert (tmp_path / "r.png").stat().st_size > 1000
    new = to_network(load_onnx(tmp_path / "out.onnx"))
    independent_check(net, new, x[:30], net.forward(x[:30]).argmax(1), tmp_path / "out.onnx", margin=0.1)

    rc = _cli(["prune-magnitude", "--onnx", str(tmp_path / "in.onnx"), "--out", str(tmp_path / "mbp.onnx"),
               "--rate", "0.5", "--data", str(tmp_path / "data.npz"), "--report", str(tmp_path / "m.json")])
    assert rc == 0
    pruned = to_network(load_onnx(tmp_path / "mbp.onnx"))
    assert affine_nnz(pruned) < affine_nnz(net)

    save_npz(tmp_path / "wide.npz", rng.uniform(size=(5, 7)), np.zeros(5, int))
    with pytest.raises(ShapeMismatchError, match="7 values per sample"):
        _cli(["sparsify", "--onnx", str(tmp_path / "in.onnx"), "--data", str(tmp_path / "wide.npz"),
              "--out", str(tmp_path / "bad.onnx"), "--quiet"])
    assert not (tmp_path / "bad.onnx").exists()


def test_worker_pool_after_a_solve_in_this_process(tmp_path):
    """HiGHS used in this process before the fork-based pool starts must not break the workers'
    LPs (they used to fail, and every layer silently kept its original weights)."""
    import scipy.sparse as sp
    from vnnx.solvers import LinearProblem, solve

    mip = LinearProblem(np.ones(2), sp.csr_matrix(np.ones((1, 2))), np.ones(1), np.array([np.inf]),
                        np.zeros(2), np.full(2, 5.0), np.array([True, False]))
    assert solve(mip).status == "optimal"
    net, x, y = trained_mlp()
    new, report, _ = run(net, x[:100], y[:100], tmp_path, workers=2)
    assert "fallback" not in report.table()
    assert affine_nnz(new) < affine_nnz(net)
