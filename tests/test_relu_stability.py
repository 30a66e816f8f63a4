"""ReLU-stability plugin (Xiao et al., ICLR 2019): bounds, loss terms, passes, config, report, CLI."""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import vnnx  # noqa: F401  - compatibility patches first
from vnnx.architectures import build
from vnnx.errors import ConfigError
from vnnx.network import Conv, Dense, Network, Relu

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

try:
    import vnnx_plugins  # noqa: F401
except ImportError:  # the editable install predates plugins/; load it from the checkout
    _spec = importlib.util.spec_from_file_location("vnnx_plugins", REPO / "plugins" / "__init__.py",
                                                   submodule_search_locations=[str(REPO / "plugins")])
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules["vnnx_plugins"] = _mod
    _spec.loader.exec_module(_mod)

from vnnx_plugins.relu_stability import (  # noqa: E402
    PLUGIN,
    chain_from_network,
    chain_from_sequential,
    config_from_dict,
    friendliness_report,
    improved_ia,
    input_box,
    l1_penalty,
    load_config,
    naive_ia,
    pre_activation_bounds,
    prune_relus,
    prune_small_weights,
    rs_loss,
    rs_term,
    sequential_to_network,
)
from vnnx_plugins.relu_stability.losses import CrownIbpBounds  # noqa: E402

TINY_NETS = [
    ("mlp", dict(hidden=(12, 12, 12), n_inputs=16), (1, 4, 4)),
    ("mnist-cnn", dict(filters=(3, 4), hidden=10, input_shape=(1, 8, 8)), (1, 8, 8)),
    ("conv-small", dict(filters=(2, 3), hidden=8, input_shape=(1, 10, 10)), (1, 10, 10)),
    ("conv-maxpool-overlap", dict(channels=(2, 3), hidden=8, input_shape=(1, 10, 10)), (1, 10, 10)),
]


def _tiny(name: str, kwargs: dict, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = build(name, **kwargs).double().eval()
    with torch.no_grad():  # non-zero biases give a mix of active, inactive and unstable ReLUs
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.bias.normal_(0.0, 0.3)
    return model


def _samples(lo: torch.Tensor, hi: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """(B, n, d) points of each box: uniform, plus the corners picked at random."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand((lo.shape[0], n, lo.shape[1]), generator=g, dtype=lo.dtype)
    u[:, : n // 2] = (u[:, : n // 2] > 0.5).to(lo.dtype)
    return lo[:, None] + (hi - lo)[:, None] * u


# ---------------------------------------------------------------------------------- bounds
@pytest.mark.parametrize("name,kwargs,shape", TINY_NETS, ids=[t[0] for t in TINY_NETS])
def test_improved_ia_sound_and_never_looser_than_naive(name, kwargs, shape):
    model = _tiny(name, kwargs)
    chain = chain_from_sequential(model, shape)
    g = torch.Generator().manual_seed(1)
    x = torch.rand((4,) + shape, generator=g, dtype=torch.float64)
    assert torch.allclose(chain.forward(x), model(x), atol=1e-12)
    lo, hi = input_box(x, 0.08)
    naive, improved = naive_ia(chain, lo, hi), improved_ia(chain, lo, hi)
    h = _samples(lo, hi, 600, seed=2).reshape(-1, lo.shape[1])
    tol = 1e-9
    for k, step in enumerate(chain.steps):
        h = step.forward(h)
        hv = h.reshape(lo.shape[0], -1, h.shape[1])
        for lower, upper in (naive[k], improved[k]):
            assert bool((hv >= lower[:, None] - tol).all()) and bool((hv <= upper[:, None] + tol).all()), k
        assert bool((improved[k][0] >= naive[k][0] - tol).all()), k
        assert bool((improved[k][1] <= naive[k][1] + tol).all()), k
    # Appendix C must actually help once a stably active layer sits between two affine ones.
    width = lambda b: float((b[1] - b[0]).detach().sum())  # noqa: E731
    assert width(improved[-1]) < width(naive[-1]) - 1e-6


def test_improved_ia_chunking_gives_same_bounds():
    name, kwargs, shape = TINY_NETS[1]
    chain = chain_from_sequential(_tiny(name, kwargs), shape)
    x = torch.rand((5,) + shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    lo, hi = input_box(x, 0.05)
    whole, parts = improved_ia(chain, lo, hi), improved_ia(chain, lo, hi, chunk_size=2)
    for (a, b), (c, d) in zip(whole, parts):
        assert torch.allclose(a, c) and torch.allclose(b, d)


@pytest.mark.parametrize("name,kwargs,shape", TINY_NETS, ids=[t[0] for t in TINY_NETS])
def test_sequential_to_network_and_back(name, kwargs, shape):
    model = _tiny(name, kwargs)
    network = sequential_to_network(model, shape)
    x = torch.rand((6,) + shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    np.testing.assert_allclose(network.forward(x.numpy()), model(x).detach().numpy(), atol=1e-12)
    lo, hi = input_box(x, 0.05)
    via_net = naive_ia(chain_from_network(network), lo, hi)[-1]
    direct = naive_ia(chain_from_sequential(model, shape), lo, hi)[-1]
    assert torch.allclose(via_net[0], direct[0]) and torch.allclose(via_net[1], direct[1])


def test_crown_ibp_bounds_are_sound_and_differentiable():
    name, kwargs, shape = TINY_NETS[1]
    model = _tiny(name, kwargs).float()
    x = torch.rand((3,) + shape, generator=torch.Generator().manual_seed(5))
    lo, hi = input_box(x, 0.05)
    pre = CrownIbpBounds()(model, lo, hi, shape)
    chain = chain_from_sequential(model, shape)
    naive = pre_activation_bounds(chain, lo, hi, "naive")
    h = _samples(lo, hi, 400, seed=6).reshape(-1, lo.shape[1])
    j = 0
    for i, step in enumerate(chain.steps):
        if i + 1 < len(chain.steps) and type(chain.steps[i + 1]).__name__ == "ReluStep":
            hv = step.forward(h).reshape(3, -1, pre[j][0].shape[1])
            assert bool((hv >= pre[j][0][:, None] - 1e-5).all()) and bool((hv <= pre[j][1][:, None] + 1e-5).all())
            assert bool((pre[j][0] >= naive[j][0] - 1e-6).all()) and bool((pre[j][1] <= naive[j][1] + 1e-6).all())
            j += 1
        h = step.forward(h)
    rs_loss(pre).backward()
    first = next(model.parameters())
    assert first.grad is not None and float(first.grad.abs().sum()) > 0 and first.requires_grad


# ---------------------------------------------------------------------------------- losses
def test_rs_loss_gradient_raises_l_times_u():
    g = torch.Generator().manual_seed(7)
    lower = (-torch.rand(4, 30, generator=g, dtype=torch.float64) * 2 + 0.5).requires_grad_(True)
    upper = (lower.detach() + torch.rand(4, 30, generator=g, dtype=torch.float64) * 2).requires_grad_(True)
    rs_loss([(lower, upper)]).backward()
    # Gradient descent moves (l, u) along -grad; the rate of change of l*u is -(u gl + l gu).
    rate = -(upper.detach() * lower.grad + lower.detach() * upper.grad)
    assert bool((rate > 0).all())
    # Through a network: a small step on the RS loss alone lowers it (raises Σ tanh(1 + l u)).
    name, kwargs, shape = TINY_NETS[0]
    model = _tiny(name, kwargs)
    x = torch.rand((16,) + shape, generator=g, dtype=torch.float64)
    term = rs_term(1.0, bounds="improved", epsilon=0.05)
    before = term(model, x, None, 0.0)
    grads = torch.autograd.grad(before, list(model.parameters()), allow_unused=True)
    with torch.no_grad():
        for p, gr in zip(model.parameters(), grads):
            if gr is not None:
                p -= 1e-3 * gr
    assert float(term(model, x, None, 0.0).detach()) < float(before.detach())


def test_rs_term_uses_scheduled_epsilon_only_without_fixed_one():
    name, kwargs, shape = TINY_NETS[0]
    model = _tiny(name, kwargs)
    x = torch.rand((8,) + shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    fixed = rs_term(1.0, epsilon=0.1)
    scheduled = rs_term(1.0)
    with torch.no_grad():
        assert float(fixed(model, x, None, 0.0)) == pytest.approx(float(scheduled(model, x, None, 0.1)))
        assert float(scheduled(model, x, None, 0.0)) < float(scheduled(model, x, None, 0.1))
    with pytest.raises(ConfigError, match="RS bound method"):
        rs_term(1.0, bounds="zonotope")


@torch.no_grad()
def test_l1_penalty_weights_conv_filters_by_reuse():
    torch.manual_seed(0)
    model = build("mnist-cnn")
    conv1, conv2, fc1, fc2 = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    expected = 14 * 14 * conv1.weight.abs().sum() + 7 * 7 * conv2.weight.abs().sum() + fc1.weight.abs().sum()
    assert float(l1_penalty(model, (1, 28, 28))) == pytest.approx(float(expected), rel=1e-6)
    plain = sum(float(m.weight.abs().sum()) for m in (conv1, conv2, fc1, fc2))
    assert float(l1_penalty(model, (1, 28, 28), reuse_weighted=False, include_output_layer=True)) == \
        pytest.approx(plain, rel=1e-6)


def _synthetic_task(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1]^36 labelled by a fixed random linear teacher (4 classes)."""
    teacher = np.random.default_rng(0).normal(size=(36, 4))
    x = np.random.default_rng(seed).random((n, 1, 6, 6)).astype(np.float32)
    y = ((x.reshape(n, -1) - 0.5) @ teacher).argmax(axis=1)
    return x, y


def test_short_training_with_rs_loss_has_fewer_unstable_relus():
    from vnnx.data import Dataset
    from vnnx_plugins.relu_stability.run import train_from_config

    x, y = _synthetic_task(256, seed=0)
    x_eval, _ = _synthetic_task(64, seed=1)
    common = dict(architecture="mlp", arch={"hidden": [24, 24], "n_inputs": 36, "n_classes": 4},
                  epochs=4, batch_size=32, lr=3e-3, adversarial=False, epsilon=0.05, progress=False, seed=3)
    counts = {}
    for rs in (0.0, 0.05):
        model, history = train_from_config(config_from_dict({**common, "rs_weight": rs}), Dataset(x, y))
        assert len(history.epochs) == 4
        lo, hi = input_box(torch.as_tensor(x_eval), 0.05)
        pre = pre_activation_bounds(chain_from_sequential(model, (1, 6, 6)), lo, hi, "naive")
        counts[rs] = sum(int(((l < 0) & (u > 0)).sum()) for l, u in pre) / len(x_eval)
    print(counts)
    assert counts[0.05] < 0.7 * counts[0.0], counts


# ---------------------------------------------------------------------------------- passes
def _biased_mlp(rng: np.random.Generator) -> Network:
    """Dense 6->10 -> ReLU -> Dense 10->8 -> ReLU -> Dense 8->3 with some ReLUs forced on/off."""
    b1 = rng.normal(size=10) * 0.2
    b1[:3], b1[3:5] = 5.0, -5.0      # always active / never active on [0, 1]^6
    b2 = rng.normal(size=8) * 0.2
    b2[:2] = 8.0
    return Network((1, 6), (1, 3), [
        Dense(rng.normal(size=(10, 6)) * 0.5, b1, (6,), (10,)), Relu((10,)),
        Dense(rng.normal(size=(8, 10)) * 0.5, b2, (10,), (8,)), Relu((8,)),
        Dense(rng.normal(size=(3, 8)), rng.normal(size=3), (8,), (3,))])


def test_relu_pruning_at_full_thresholds_keeps_outputs_on_its_data():
    rng = np.random.default_rng(10)
    net = _biased_mlp(rng)
    x = rng.random((200, 6))
    pruned, report = prune_relus(net, x, active_threshold=1.0, inactive_threshold=0.0)
    rows = {r["layer"]: r for r in report.layers}
    assert report.modified and rows[1]["n_identity"] >= 3 and rows[1]["n_zero"] >= 2
    assert rows[1]["action"] == "rewritten"
    assert pruned.layers[1].shape[0] == 10 - rows[1]["n_zero"]     # zero neurons are deleted
    np.testing.assert_allclose(pruned.forward(x), net.forward(x), rtol=0, atol=1e-9)
    # With the paper's 90% / 10% thresholds more ReLUs go.
    _, report90 = prune_relus(net, x)
    assert sum(r["n_kept"] for r in report90.layers) < sum(r["n_kept"] for r in report.layers)


def _masked_forward(net: Network, x: np.ndarray, masks: dict) -> np.ndarray:
    """Reference: ReLU layer k with (identity, zero) masks computes z, 0 or relu(z) per neuron."""
    h = x
    for k, layer in enumerate(net.layers):
        if isinstance(layer, Relu) and k in masks:
            identity, zero = masks[k]
            out = np.maximum(h, 0.0)
            out[:, identity] = h[:, identity]
            out[:, zero] = 0.0
            h = out
        else:
            h = layer.apply(h)
    return h


def test_relu_pruning_identity_is_exact_over_the_whole_input_domain():
    from vnnx_plugins.relu_stability.passes import activation_frequency

    rng = np.random.default_rng(21)
    net = _biased_mlp(rng)
    w = net.layers[0].weight.copy()
    b = net.layers[0].bias.copy()
    w[5], b[5] = [-1.0, 0, 0, 0, 0, 0], 0.6      # active on all data (x0 <= 0.5), not on all of [0, 1]^6
    net.layers[0] = Dense(w, b, (6,), (10,))
    x = rng.random((300, 6))
    x[:, 0] *= 0.5
    freq = activation_frequency(net, x)
    masks = {k: (f >= 1.0, f <= 0.0) for k, f in freq.items()}
    assert masks[1][0][5]
    pruned, report = prune_relus(net, x, active_threshold=1.0, inactive_threshold=0.0, input_range=(0.0, 1.0))
    assert report.layers[0]["action"] == "rewritten"
    assert report.layers[0]["max_shift"] >= 0.4 - 1e-9
    x_domain = rng.random((500, 6))
    np.testing.assert_allclose(pruned.forward(x_domain), _masked_forward(net, x_domain, masks), atol=1e-9)
    # The rewritten identity neurons are stably active over the whole domain.
    lo, hi = torch.zeros(1, 6, dtype=torch.float64), torch.ones(1, 6, dtype=torch.float64)
    lower = naive_ia(chain_from_network(pruned), lo, hi)[0][0][0].numpy()
    keep = ~masks[1][1]
    assert bool((lower[masks[1][0][keep]] >= 0).all())


def test_relu_pruning_merges_a_fully_linear_layer_and_converts_convs():
    rng = np.random.default_rng(11)
    conv = Conv(rng.normal(size=(2, 1, 3, 3)) * 0.3, np.array([6.0, -6.0]), (1, 5, 5), (2, 3, 3))
    net = Network((1, 1, 5, 5), (1, 3), [conv, Relu((18,)), Dense(rng.normal(size=(3, 18)), rng.normal(size=3), (18,), (3,))])
    x = rng.random((50, 25))
    pruned, report = prune_relus(net, x, active_threshold=1.0, inactive_threshold=0.0)
    assert report.layers[0]["action"] == "merged" and len(pruned.layers) == 1
    assert isinstance(pruned.layers[0], Dense)
    np.testing.assert_allclose(pruned.forward(x), net.forward(x), atol=1e-9)
    # Partly prunable conv-fed ReLU: the conv becomes Dense, outputs unchanged on the data.
    conv2 = Conv(rng.normal(size=(2, 1, 3, 3)) * 0.3, np.array([6.0, 0.0]), (1, 5, 5), (2, 3, 3))
    net2 = Network((1, 1, 5, 5), (1, 3), [conv2, Relu((18,)), Dense(rng.normal(size=(3, 18)), rng.normal(size=3), (18,), (3,))])
    pruned2, report2 = prune_relus(net2, x, active_threshold=1.0, inactive_threshold=0.0)
    assert report2.layers[0]["action"] == "rewritten" and isinstance(pruned2.layers[0], Dense)
    np.testing.assert_allclose(pruned2.forward(x), net2.forward(x), atol=1e-9)


def test_relu_pruning_leaves_relus_before_maxpool_and_checks_arguments():
    from tests.nets import random_cnn

    net = random_cnn(np.random.default_rng(12))
    x = np.random.default_rng(13).random((20, net.n_inputs))
    pruned, report = prune_relus(net, x)
    assert report.layers[0]["action"].startswith("skipped")
    assert len(pruned.layers) <= len(net.layers)
    with pytest.raises(ConfigError, match="thresholds"):
        prune_relus(net, x, active_threshold=0.1, inactive_threshold=0.5)


def test_small_weight_pruning():
    rng = np.random.default_rng(14)
    net = _biased_mlp(rng)
    w = net.layers[0].weight.copy()
    w[0, :3] = [1e-4, -5e-4, 2e-3]
    net.layers[0] = Dense(w, net.layers[0].bias, (6,), (10,))
    pruned, report = prune_small_weights(net, 1e-3)
    assert report.modified and report.layers[0]["n_zeroed"] == 2
    assert pruned.layers[0].weight[0, 0] == 0 and pruned.layers[0].weight[0, 2] == 2e-3
    assert net.layers[0].weight[0, 0] == 1e-4                         # input untouched
    again, report2 = prune_small_weights(pruned, 1e-3)
    assert not report2.modified
    x = rng.random((10, 6))
    np.testing.assert_allclose(again.forward(x), pruned.forward(x))


def test_pruned_network_exports_to_onnx(tmp_path):
    from vnnx.io.onnx import load_onnx, network_to_onnx, run_onnxruntime

    rng = np.random.default_rng(15)
    net = _biased_mlp(rng)
    x = rng.random((64, 6))
    pruned, _ = prune_relus(*prune_small_weights(net, 1e-1)[:1], x)
    path = tmp_path / "pruned.onnx"
    network_to_onnx(pruned, path)
    y = run_onnxruntime(load_onnx(path), x.astype(np.float32))
    np.testing.assert_allclose(y, pruned.forward(x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------- report
def test_friendliness_report_counts_match_direct_bounds():
    name, kwargs, shape = TINY_NETS[1]
    model = _tiny(name, kwargs)
    net = sequential_to_network(model, shape)
    x = np.random.default_rng(16).random((6,) + shape)
    reps = {m: friendliness_report(net, x, 0.05, m) for m in ("ibp", "improved-ia")}
    lo, hi = input_box(torch.as_tensor(x), 0.05)
    pre = pre_activation_bounds(chain_from_sequential(model, shape), lo, hi, "naive")
    direct = [float(((l < 0) & (u > 0)).sum(dim=1).double().mean()) for l, u in pre]
    assert [r["unstable"] for r in reps["ibp"]["relu_layers"]] == pytest.approx(direct)
    assert reps["improved-ia"]["unstable_total"] <= reps["ibp"]["unstable_total"]
    assert reps["improved-ia"]["mean_bound_width"] < reps["ibp"]["mean_bound_width"]
    for r in reps["ibp"]["relu_layers"]:
        assert r["unstable"] + r["stably_active"] + r["stably_inactive"] == pytest.approx(r["n_neurons"])
    assert reps["ibp"]["milp_binaries"] == pytest.approx(reps["ibp"]["unstable_total"])
    json.dumps(reps)


def test_friendliness_report_lp_and_crown_are_no_looser_than_improved_ia():
    rng = np.random.default_rng(17)
    net = _biased_mlp(rng)
    x = rng.random((3, 6))
    improved = friendliness_report(net, x, 0.1, "improved-ia")
    lp = friendliness_report(net, x, 0.1, "lp")
    assert lp["unstable_total"] <= improved["unstable_total"]
    crown = friendliness_report(net, x, 0.1, "crown")
    ibp = friendliness_report(net, x, 0.1, "ibp")
    assert crown["unstable_total"] <= ibp["unstable_total"]
    assert lp["unstable_total"] <= crown["unstable_total"]
    with pytest.raises(ConfigError, match="unknown report method"):
        friendliness_report(net, x, 0.1, "zonotope")


def test_report_engine_and_lp_bounds_are_sound_and_ordered():
    """'ibp', 'crown', 'alpha-crown' (the graph engine) and 'lp' (vnnx.graph_lp): every sample's
    layer bounds hold on points of its box; LP is never looser than CROWN, CROWN never than IBP."""
    from tests.nets import random_cnn
    from vnnx_plugins.relu_stability.report import _layer_bounds_engine, _layer_bounds_lp

    net = random_cnn(np.random.default_rng(21))
    x = np.random.default_rng(22).random((3, net.n_inputs))
    lo, hi = (t.numpy() for t in input_box(torch.as_tensor(x), 0.15))
    per_method = {m: _layer_bounds_engine(net, lo, hi, m) for m in ("ibp", "crown", "alpha-crown")}
    per_method["lp"] = _layer_bounds_lp(net, lo, hi, None)[0]
    rng = np.random.default_rng(23)
    for i in range(len(x)):
        pts = lo[i] + (hi[i] - lo[i]) * rng.random((2000, net.n_inputs))
        outs = net.forward(pts, return_all=True)
        for m, bounds in per_method.items():
            for k, (l, u) in bounds[i].items():
                assert np.all(outs[k] >= l - 1e-9) and np.all(outs[k] <= u + 1e-9), f"{m}: layer {k} unsound"
        for k in per_method["ibp"][i]:
            (il, iu), (cl, cu), (ll, lu) = (per_method[m][i][k] for m in ("ibp", "crown", "lp"))
            # (IBP runs batched, CROWN per sample: round-off differs)
            assert np.all(cl >= il - 1e-12) and np.all(cu <= iu + 1e-12)
            assert np.all(ll >= cl) and np.all(lu <= cu)
    reps = {m: friendliness_report(net, x, 0.15, m) for m in ("ibp", "crown", "alpha-crown", "lp")}
    assert reps["lp"]["milp_binaries"] <= reps["crown"]["milp_binaries"] <= reps["ibp"]["milp_binaries"]
    assert reps["lp"]["mean_bound_width"] < reps["ibp"]["mean_bound_width"]


def test_maxpool_binaries_are_counted():
    from tests.nets import random_cnn

    net = random_cnn(np.random.default_rng(18))
    x = np.random.default_rng(19).random((4, net.n_inputs))
    rep = friendliness_report(net, x, 0.1, "ibp")
    assert len(rep["maxpool_layers"]) == 1
    assert rep["milp_binaries"] == pytest.approx(rep["unstable_total"] + rep["maxpool_layers"][0]["binaries"])


# ---------------------------------------------------------------------------------- config
def test_config_rejects_unknown_keys_and_bad_types(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("epochs: 2\nrs_wieght: 1e-4\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml.*unknown key.*'rs_wieght'"):
        load_config(path)
    path.write_text("epochs: two\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml.*'epochs' must be an integer"):
        load_config(path)
    path.write_text("rs_bounds: exact\n")
    with pytest.raises(ConfigError, match=r"cfg\.yaml.*rs_bounds"):
        load_config(path)
    path.write_text("rs_weight: 1e-4\nadversarial: false\n")      # YAML 1.1 reads 1e-4 as a string
    cfg = load_config(path, {"epochs": 3, "lr": None})
    assert cfg.rs_weight == 1e-4 and cfg.adversarial is False and cfg.epochs == 3 and cfg.lr == 1e-3


def test_shipped_configs_load():
    configs = sorted((REPO / "specs" / "configs").glob("relu_stability_*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = load_config(path)
        build(cfg.architecture, **cfg.arch)


# ---------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vnnx")
    PLUGIN.add_commands(parser.add_subparsers(dest="command"))
    return parser


def test_cli_flags_mirror_config_keys(tmp_path):
    from vnnx_plugins.relu_stability.config import TrainConfig, overrides_from_args

    args = _parser().parse_args(["train", "--config", "c.yaml", "--out", "m.onnx", "--rs-weight", "2e-4",
                                 "--no-adversarial", "--arch", "{hidden: [8, 8]}", "--input-range", "0", "1"])
    over = overrides_from_args(args)
    assert over == {"rs_weight": 2e-4, "adversarial": False, "arch": {"hidden": [8, 8]}, "input_range": [0, 1]}
    assert PLUGIN.kind == "regularizer" and PLUGIN.name == "relu-stability"
    assert len(TrainConfig.__dataclass_fields__) > 20


def test_cli_report_and_prune_end_to_end(tmp_path, capsys):
    from vnnx.data import save_npz
    from vnnx.io.onnx import network_to_onnx

    rng = np.random.default_rng(20)
    net = _biased_mlp(rng)
    onnx_path, data_path = tmp_path / "net.onnx", tmp_path / "d.npz"
    network_to_onnx(net, onnx_path)
    save_npz(data_path, rng.random((12, 6)).astype(np.float32), rng.integers(0, 3, 12))
    args = _parser().parse_args(["report", "--onnx", str(onnx_path), "--data", str(data_path),
                                 "--epsilon", "0.05", "--method", "ibp", "--json", str(tmp_path / "r.json")])
    assert args.func(args) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["n_samples"] == 12 and len(doc["relu_layers"]) == 2
    assert "unstable ReLUs" in capsys.readouterr().out
    out = tmp_path / "pruned.onnx"
    args = _parser().parse_args(["rs-prune", "--onnx", str(onnx_path), "--data", str(data_path), "--out", str(out),
                                 "--weight-threshold", "1e-3", "--relus"])
    assert args.func(args) == 0 and out.is_file()


@pytest.mark.skipif(not (SHARED / "data" / "mnist").is_dir(), reason="../shared MNIST absent")
def test_cli_train_end_to_end(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"data_dir: {SHARED / 'data' / 'mnist'}\narchitecture: mlp\narch: {{hidden: [16]}}\n"
                   "n_train: 128\nn_eval: 32\nn_report: 4\nepochs: 1\nbatch_size: 32\npgd_steps: 2\n"
                   "eval_pgd_steps: 2\nl1_weight: 1e-5\nrs_weight: 1e-3\nprune_weights: true\n"
                   "prune_relus: true\nrelu_prune_samples: 64\nprogress: false\n")
    out = tmp_path / "m.onnx"
    args = _parser().parse_args(["train", "--config", str(cfg), "--out", str(out), "--seed", "1"])
    assert args.func(args) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert doc["config"]["seed"] == 1 and 0.0 <= doc["metrics"]["test_acc"] <= 1.0
    assert set(doc["metrics"]["reports"]) == {"ibp", "improved-ia"}
    assert [p["pass"] for p in doc["passes"]] == ["prune-small-weights", "prune-relus"]
    ckpt = torch.load(out.with_suffix(".pt"), weights_only=False)
    assert math.isfinite(ckpt["history"][-1]["loss"])


def test_cli_errors_are_one_line_with_nonzero_exit_and_no_outputs(tmp_path, capsys):
    from vnnx.cli import main

    out = tmp_path / "m.onnx"
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 1\nrs_wieght: 1e-4\n")
    assert main(["train", "--config", str(bad), "--out", str(out)]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.yaml" in err and "unknown key" in err and "rs_wieght" in err
    # A failure after the data is read (the architecture does not take 28x28 images) writes nothing.
    mismatch = tmp_path / "mismatch.yaml"
    mismatch.write_text(f"data_dir: {SHARED / 'data' / 'mnist'}\narchitecture: mlp\narch: {{n_inputs: 36}}\n"
                        "n_train: 64\nn_eval: 8\nepochs: 1\nprogress: false\n")
    if (SHARED / "data" / "mnist").is_dir():
        assert main(["train", "--config", str(mismatch), "--out", str(out)]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "does not take inputs" in err
    assert set(tmp_path.iterdir()) == {bad, mismatch}          # no m.onnx, m.pt, m.json, no temp files
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "no" / "m.onnx")]) != 0
    assert "does not exist" in capsys.readouterr().err
    assert main(["report", "--onnx", str(tmp_path / "nope.onnx"), "--data", "x.npz", "--epsilon", "0.1"]) != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.skipif(not (SHARED / "data" / "mnist").is_dir(), reason="../shared MNIST absent")
def test_data_dir_with_full_mnist_trains_on_the_training_set(tmp_path):
    from vnnx_plugins.relu_stability.run import load_data

    src = SHARED / "data" / "mnist"
    cfg = config_from_dict({"data_dir": str(src), "n_eval": 1000})
    train_set, eval_set = load_data(cfg)
    assert len(train_set) == 9000 and len(eval_set) == 1000        # test images 1000-9999 / 0-999
    # A folder that also has train-* files: training uses them (here: the test files, renamed).
    for f in src.iterdir():
        (tmp_path / f.name).symlink_to(f)
        if f.name.startswith("t10k-"):
            (tmp_path / f.name.replace("t10k-", "train-")).symlink_to(f)
    train_full, eval_full = load_data(config_from_dict({"data_dir": str(tmp_path), "n_train": 10000}))
    assert len(train_full) == 10000 and len(eval_full) == 1000
    np.testing.assert_array_equal(train_full.x[:1000], eval_full.x)
