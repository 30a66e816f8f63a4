"""VeriCompress plugin: budgets (ERK, unit counts, errors), explicit masks, deactivation,
exploration, the (T, s, l) schedule, the CROWN-IBP term, compaction checked in onnxruntime, the
baseline and ``vnnx compress``. Tiny seeded nets and a few hundred images only."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from vnnx.errors import ConfigError
from vnnx.training import train
from vnnx_plugins.vericompress import (
    DynamicSparsity, analyse, build_backbone, check_budget, compact, config_from_dict, count_parameters,
    crown_ibp_term, epsilon_schedule, erk_budgets, export_compact, lr_decay, masked_network, unit_counts)

SHAPE = (1, 28, 28)


def _backbones():
    torch.manual_seed(0)
    return {"cnn4": build_backbone("cnn4"), "fc": build_backbone("fc", hidden=[64, 32]),
            "cnn7": build_backbone("cnn7", channels=[4, 8], hidden=32)}


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n,) + SHAPE, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("name", ["cnn4", "fc", "cnn7"])
@pytest.mark.parametrize("fraction", [0.5, 0.3, 0.1])
def test_erk_shares_add_up_and_unit_counts_fit_exactly(name, fraction):
    model = _backbones()[name]
    s = analyse(model, SHAPE)
    assert s.n_params == count_parameters(model)
    k = int(fraction * s.n_params)
    shares = erk_budgets(s, k)
    assert sum(shares) == pytest.approx(k, rel=1e-9)
    assert all(0 <= sh <= l.n_params + 1e-9 for sh, l in zip(shares, s.layers))
    counts = unit_counts(s, k)
    total = s.param_count(counts)
    assert total <= k
    # maximal: no hidden layer can take one more unit within the budget
    for i, layer in enumerate(s.hidden):
        if counts[i] < layer.n_units:
            more = list(counts)
            more[i] += 1
            assert s.param_count(more) > k


def test_budget_errors_are_clear():
    s = analyse(_backbones()["cnn4"], SHAPE)
    with pytest.raises(ConfigError, match="exceeds the backbone's 89606 parameters"):
        unit_counts(s, s.n_params + 1)
    with pytest.raises(ConfigError, match="minimum needed to connect input to output"):
        unit_counts(s, s.min_params - 1)
    check_budget(s, s.min_params)          # the smallest connected network is fine
    assert unit_counts(s, s.min_params) == [1, 1, 1]
    assert unit_counts(s, s.n_params) == [16, 32, 100]


@pytest.mark.parametrize("name", ["cnn4", "fc"])
def test_random_start_and_deactivation_keep_the_budget(name):
    model = _backbones()[name]
    k = int(0.3 * count_parameters(model))
    sp = DynamicSparsity(model, SHAPE, k, seed=1)
    expected = sp.structure.param_count(sp.counts)
    masks = sp.masks()
    assert set(masks) == {n for n, _ in model.named_parameters()}
    assert sp.active_parameters() == expected == int(sum(m.sum() for m in masks.values())) and expected <= k
    assert [int(l.sum()) for l in sp.live] == sp.counts
    # Make a dormant unit of the first hidden layer the largest: deactivation must pick it up.
    dormant = int(torch.nonzero(~sp.live[0])[0])
    sp.dense["0.weight" if name == "cnn4" else "1.weight"][dormant] += 100.0
    frozen = [l.clone() for l in sp.live]
    assert sp.deactivate(max_swap_fraction=0.0) == [0] * len(sp.counts)      # swap limit 0: no change
    assert all(bool((a == b).all()) for a, b in zip(frozen, sp.live))
    swapped = sp.deactivate()
    assert bool(sp.live[0][dormant]) and swapped[0] >= 1
    assert [int(l.sum()) for l in sp.live] == sp.counts
    assert sp.active_parameters() == expected


def test_dormant_units_keep_receiving_gradients_and_masks_hold():
    model = _backbones()["fc"]
    sp = DynamicSparsity(model, SHAPE, 8000, seed=0)
    live0 = sp.live[0].clone()
    before = sp.dense["3.weight"].clone()          # outgoing weights of hidden layer 0's units
    x, y = _data(64)
    train(model, x, y, epochs=1, batch_size=16, on_step_end=[sp.after_step], progress=False)
    moved = (sp.dense["3.weight"] - before).abs()
    assert float(moved[:, ~live0].max()) > 0       # dormant units' outgoing weights were updated
    w = dict(model.named_parameters())["3.weight"]
    assert float(w[:, ~live0].detach().abs().max()) == 0    # ... but are zero in the forward pass


def test_epsilon_schedule_matches_T_s_l():
    eps = epsilon_schedule(0.1, 10, 2, 4)          # T = 10, s = 2, l = 4
    assert eps(0, 0.0) == 0 and eps(1, 0.99) == 0
    assert eps(2, 0.0) == 0
    assert eps(3, 0.0) == pytest.approx(0.025)
    assert eps(4, 0.0) == pytest.approx(0.05)
    assert eps(5, 0.5) == pytest.approx(0.0875)
    assert eps(6, 0.0) == pytest.approx(0.1) and eps(9, 0.9) == pytest.approx(0.1)
    with pytest.raises(ConfigError, match="exceeds the T = 5 epochs"):
        epsilon_schedule(0.1, 5, 2, 4)
    decay = lr_decay(2, 4, 0.5)                    # decays once eps reached eps_max (epoch 6)
    assert [decay(e) for e in range(8)] == [1, 1, 1, 1, 1, 1, 0.5, 0.25]


def test_crown_ibp_term():
    torch.manual_seed(0)
    model = build_backbone("cnn4", filters=[4, 8], hidden=16)
    term = crown_ibp_term(1.0, 0.1)
    x, y = _data(8)
    assert float(term(model, x, y, 0.0).detach()) == 0.0
    loss = term(model, x, y, 0.05)
    loss.backward()
    assert float(loss.detach()) > 0 and float(model[0].weight.grad.abs().sum()) > 0
    # wider boxes give weaker bounds, hence a larger robust loss
    assert float(term(model, x, y, 0.1).detach()) > float(term(model, x, y, 0.01).detach())


@pytest.mark.parametrize("name", ["cnn4", "fc", "cnn7"])
def test_compaction_is_smaller_dense_and_equal_in_onnxruntime(name, tmp_path):
    from vnnx.io.onnx import export_onnx, run_onnxruntime

    model = _backbones()[name]
    k = int(0.2 * count_parameters(model))
    sp = DynamicSparsity(model, SHAPE, k, seed=2)
    x, y = _data(32)
    train(model, x, y, epochs=1, batch_size=16, on_step_end=[sp.after_step],
          on_epoch_end=[sp.every(1)], progress=False)
    with torch.no_grad():
        trained_out = model(x)                      # exploring forward pass (shadow units)
    sp.finalize()
    small = compact(sp)
    assert count_parameters(small) == sp.active_parameters() <= k
    assert count_parameters(small) < count_parameters(model)
    convs = [m for m in small if isinstance(m, nn.Conv2d)]
    if convs:                                       # filters and the next layer's channels are gone
        assert convs[0].out_channels == sp.counts[0] and convs[1].in_channels == sp.counts[0]
    out = tmp_path / "small.onnx"
    export_compact(sp, out)                         # raises unless onnxruntime agrees with the masked net
    masked_file = tmp_path / "masked.onnx"
    export_onnx(masked_network(sp), (1,) + SHAPE, masked_file)
    xs = x.numpy().reshape(len(x), -1)
    y_small, y_masked = run_onnxruntime(out, xs), run_onnxruntime(masked_file, xs)
    np.testing.assert_allclose(y_small, y_masked, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y_small, trained_out.numpy(), rtol=1e-4, atol=1e-4)


def test_config_rejects_unknown_keys_and_bad_schedule():
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({"budgett": 5})
    with pytest.raises(ConfigError, match="exceeds the T"):
        config_from_dict({"epochs": 3, "eps_start": 2, "eps_length": 2})
    with pytest.raises(ConfigError, match="unknown backbone"):
        build_backbone("resnet")


def _tiny_config(tmp_path, shared, **extra) -> str:
    import yaml

    doc = {"data_dir": str(shared / "data" / "mnist"), "n_train": 200, "n_eval": 100, "n_verify": 20,
           "backbone": "cnn4", "arch": {"filters": [8, 16], "hidden": 32}, "epochs": 2, "eps_start": 0,
           "eps_length": 1, "batch_size": 50, "timing_runs": 5, "progress": False}
    doc.update(extra)
    path = tmp_path / "vc.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_cli_compress_end_to_end(tmp_path, shared, capsys):
    from vnnx.cli import main
    from vnnx.io.onnx import load_onnx

    cfg = _tiny_config(tmp_path, shared)
    out = tmp_path / "small.onnx"
    assert main(["compress", "--config", cfg, "--budget", "3000", "--epsilon", "0.05", "--out", str(out)]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["compact"]["params"] == report["active_params"] <= 3000
    assert report["backbone"]["params"] > report["compact"]["params"]
    for key in ("standard_acc", "ibp_verified_acc", "crown_verified_acc", "cpu_seconds_per_sample",
                "cpu_seconds_per_sample_batched", "onnx_bytes"):
        assert key in report["compact"]
    assert report["compact"]["ibp_verified_acc"] <= report["compact"]["crown_verified_acc"] + 0.2
    assert load_onnx(out).n_outputs == 10
    assert "verified acc" in capsys.readouterr().out
    # a budget above the backbone: one clear line, exit 2, no file
    bad = tmp_path / "bad.onnx"
    assert main(["compress", "--config", cfg, "--budget", "10000000", "--out", str(bad)]) == 2
    assert "exceeds the backbone" in capsys.readouterr().err and not bad.exists()


def test_batched_timing_session_computes_the_same_outputs(tmp_path):
    """The throughput timing makes the batch dimension of a batch-1 export symbolic: the
    rewritten graph must give, for a batch, exactly the outputs of the single-sample calls."""
    from vnnx.io.onnx import export_onnx
    from vnnx_plugins.vericompress.run import _timing_session, time_models

    torch.manual_seed(0)
    model = build_backbone("cnn4").eval()
    path = str(tmp_path / "m.onnx")
    export_onnx(model, (1,) + SHAPE, path)
    one, many = _timing_session(path, 1), _timing_session(path, 8)
    x = np.random.default_rng(1).random((8,) + SHAPE, dtype=np.float32)
    batched = many.run(None, {many.get_inputs()[0].name: x})[0]
    single = np.concatenate([one.run(None, {one.get_inputs()[0].name: x[i:i + 1]})[0] for i in range(8)])
    assert batched.shape == (8, 10)
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-6)
    times = time_models([path, path], SHAPE, runs=16, batch=8, rounds=1)
    assert len(times) == 2 and all(0 < t < 1 for t in times)


def test_prune_after_training_baseline(tmp_path, shared):
    from vnnx_plugins.vericompress import prune_after_training
    from vnnx_plugins.vericompress.run import load_data

    cfg = config_from_dict({"data_dir": str(shared / "data" / "mnist"), "n_train": 100, "backbone": "fc",
                            "arch": {"hidden": [32, 32]}, "epochs": 2, "eps_start": 0, "eps_length": 1,
                            "batch_size": 50, "budget": 5000, "progress": False})
    train_data, _ = load_data(cfg)
    sp, dense = prune_after_training(cfg, train_data, finetune_epochs=1)
    small = compact(sp)
    assert count_parameters(small) == sp.active_parameters() <= 5000
    assert count_parameters(dense) > count_parameters(small)


def test_export_refuses_a_compaction_that_changes_outputs(tmp_path, monkeypatch):
    from vnnx.errors import VnnxError
    import importlib

    compact_module = importlib.import_module("vnnx_plugins.vericompress.compact")

    model = _backbones()["fc"]
    sp = DynamicSparsity(model, SHAPE, 8000, seed=0)
    sp.finalize()
    real = compact_module.compact

    def wrong(s):
        small = real(s)
        with torch.no_grad():
            small[-1].bias += 1.0
        return small

    monkeypatch.setattr(compact_module, "compact", wrong)
    out = tmp_path / "wrong.onnx"
    with pytest.raises(VnnxError):
        export_compact(sp, out)
    assert not out.exists()


# ------------------------------------------------------------------ the paper's deactivation (issue 23)
def _dormant_entries(aux, layer_no: int, dormant: torch.Tensor) -> list[torch.Tensor]:
    """Every parameter of hidden layer ``layer_no``'s ``dormant`` units: rows/filters, biases and
    the next layer's inputs from them (columns, input channels, Flatten blocks)."""
    layer, nxt = aux.structure.layers[layer_no], aux.structure.layers[layer_no + 1]
    w = layer.module.weight.detach()
    out = [w[dormant], layer.module.bias.detach()[dormant]]
    wn = nxt.module.weight.detach()
    cols = wn.transpose(0, 1).reshape(layer.n_units, nxt.spatial, -1)
    out.append(cols[dormant])
    return out


@pytest.mark.parametrize("name", ["cnn4", "fc"])
def test_auxiliary_network_trains_unmasked_and_deactivation_zeroes_dormant_units(name):
    from vnnx_plugins.vericompress import AuxiliaryNetwork

    model = _backbones()[name]
    k = int(0.1 * count_parameters(model))
    aux = AuxiliaryNetwork(model, SHAPE, k, seed=0)
    assert aux.nonzero_parameters() <= k                      # random ERK start within K
    x, y = _data(64)
    checked = []

    def check(model, epoch):                                  # runs right after the deactivation hook
        for l, live in enumerate(aux.live):
            assert int(live.sum()) == aux.counts[l]
            for entries in _dormant_entries(aux, l, ~live):
                assert entries.numel() == 0 or float(entries.abs().max()) == 0.0   # exactly zero
        assert aux.nonzero_parameters() <= aux.active_parameters() == aux.structure.param_count(aux.counts) <= k
        small = compact(aux)                                  # right after a deactivation: the compact net
        assert count_parameters(small) == aux.active_parameters() <= k
        with torch.no_grad():
            assert torch.allclose(small(x), model(x), atol=1e-5)
        checked.append((epoch, aux.frozen))

    # one run of 3 epochs: deactivations after epochs 0 and 1, the last epoch with a frozen mask
    train(model, x, y, epochs=3, batch_size=16, on_step_end=[aux.after_step],
          on_epoch_end=[aux.hook(epochs=3, freeze_last=1), check], progress=False)
    assert checked == [(0, False), (1, True), (2, True)]
    assert [e["epoch"] for e in aux.log] == [0, 1]
    for entry in aux.log:                                     # unmasked in between: more than K
        assert entry["nonzero_before"] > k >= entry["nonzero_after"]


@pytest.mark.parametrize("name", ["cnn4", "cnn7", "fc"])
def test_every_layer_conv_included_can_change_its_active_set(name):
    from vnnx_plugins.vericompress import AuxiliaryNetwork

    model = _backbones()[name]
    aux = AuxiliaryNetwork(model, SHAPE, int(0.1 * count_parameters(model)), seed=0)
    aux.deactivate()
    # a dormant unit in every hidden layer that has one grows the largest own weights (as training would make it)
    grown = {}
    with torch.no_grad():
        for l, (layer, live) in enumerate(zip(aux.structure.hidden, aux.live)):
            if not bool(live.all()):
                u = int(torch.nonzero(~live)[0])
                layer.module.weight[u] = 10.0
                grown[l] = u
    entered = aux.deactivate()
    assert len(grown) >= 1
    for l, u in grown.items():                                # no swap cap: every such layer changes
        assert entered[l] >= 1 and bool(aux.live[l][u]) and int(aux.live[l].sum()) == aux.counts[l]
    changed = {type(aux.structure.hidden[l].module).__name__ for l in grown}
    assert changed == {"Linear"} if name == "fc" else {"Conv2d", "Linear"} <= changed


def test_deactivation_hook_explores_then_freezes_and_export_fits_the_budget(tmp_path):
    from vnnx_plugins.vericompress import AuxiliaryNetwork

    model = _backbones()["cnn4"]
    k = 8960
    aux = AuxiliaryNetwork(model, SHAPE, k, seed=0)
    hook = aux.hook(epochs=5, freeze_last=2)
    for epoch in range(5):
        hook(model, epoch)
    assert [e["epoch"] for e in aux.log] == [0, 1, 2] and aux.frozen
    with pytest.raises(ConfigError, match="freeze_last"):
        aux.hook(epochs=3, freeze_last=3)
    aux.finalize()
    small = export_compact(aux, tmp_path / "vc.onnx")
    assert count_parameters(small) == aux.active_parameters() == 8951 <= k


def test_worst_case_loss_schedule_and_gradient_clipping():
    from vnnx_plugins.vericompress.losses import kappa

    assert kappa(0.0, 0.1, 0.0) == 1.0 and kappa(0.05, 0.1, 0.0) == pytest.approx(0.5)
    assert kappa(0.1, 0.1, 0.0) == 0.0 and kappa(0.1, 0.1, 0.5) == pytest.approx(0.5)
    torch.manual_seed(0)
    model = build_backbone("cnn4", filters=[4, 8], hidden=16)
    x, y = _data(8)
    plain, worst = crown_ibp_term(1.0, 0.1), crown_ibp_term(1.0, 0.1, kappa_end=0.0)
    assert float(worst(model, x, y, 0.1).detach()) == pytest.approx(float(plain(model, x, y, 0.1).detach()))  # κ = 0
    assert float(worst(model, x, y, 0.05).detach()) < float(plain(model, x, y, 0.05).detach())  # (1 - κ) = 0.5
    # gradient clipping reaches the optimiser: a tiny clip norm freezes Adam (update ~ g / (|g| + 1e-8))
    moved = {}
    for clip in (None, 1e-12):
        torch.manual_seed(0)
        m = build_backbone("fc", hidden=[16])
        w0 = m[1].weight.detach().clone()
        train(m, x, y, epochs=1, batch_size=8, grad_clip=clip, progress=False)
        moved[clip] = float((m[1].weight.detach() - w0).abs().max())
    assert moved[None] > 1e-4 > 1e-6 > moved[1e-12]


def test_config_of_the_paper_deactivation():
    cfg = config_from_dict({"epochs": 16, "eps_start": 2, "eps_length": 10})
    assert cfg.frozen_epochs() == 4 and cfg.kappa_end == 0.0 and cfg.grad_clip == 10.0
    assert config_from_dict({"epochs": 16, "eps_start": 2, "eps_length": 10, "freeze_last": 1}).frozen_epochs() == 1
    with pytest.raises(ConfigError, match="unknown key"):      # the earlier variant's knob is gone
        config_from_dict({"explore_fraction": 0.2})
    with pytest.raises(ConfigError, match="freeze_last"):
        config_from_dict({"epochs": 4, "eps_start": 1, "eps_length": 1, "freeze_last": 4})
    assert config_from_dict({"unit_counts": [9, 18, 13]}).unit_counts == [9, 18, 13]
    from vnnx_plugins.vericompress import AuxiliaryNetwork
    model = _backbones()["cnn4"]
    aux = AuxiliaryNetwork(model, SHAPE, 8960, counts=[9, 18, 13])
    aux.deactivate()
    assert aux.active_parameters() == 8766 and [int(l.sum()) for l in aux.live] == [9, 18, 13]
    with pytest.raises(ConfigError, match="more than the budget"):
        AuxiliaryNetwork(model, SHAPE, 8960, counts=[9, 18, 14])
