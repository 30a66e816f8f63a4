"""The substitute plugin: d_bnd binary search, Algorithm 1 substitutes, folding, Lemma 1, CLI."""
import json

import numpy as np
import pytest

from nets import random_cnn, random_mlp
from vnnx.cli import main
from vnnx.data import save_npz
from vnnx.io.onnx import network_to_onnx, run_onnxruntime
from vnnx.io.vnnlib import robustness_property
from vnnx.milp import MilpResult, encode, verify_milp
from vnnx.network import Relu
from vnnx_plugins.substitute import core
from vnnx_plugins.substitute.bounds import SubstituteBounds
from vnnx_plugins.substitute.core import (boundary_distance, find_adversarial, make_substitute,
                                          substitute_collapsed)
from vnnx_plugins.substitute.fold import Replacement, build_substitute, candidate_layers, layer_size
from vnnx_plugins.substitute.lemma import flip_radius

CLIP = (0.0, 1.0)


@pytest.fixture(scope="module")
def mlp():
    rng = np.random.default_rng(7)
    return random_mlp(rng, sizes=(6, 16, 16, 3)), rng.uniform(0.2, 0.8, 6)


@pytest.fixture(scope="module")
def cnn():
    rng = np.random.default_rng(8)
    return random_cnn(rng, maxpool=False), rng.uniform(0.2, 0.8, 36)


@pytest.fixture(scope="module")
def adv(mlp):
    net, x0 = mlp
    return find_adversarial(net, x0, core.anchor_label(net, x0), CLIP)


def _reference(network, reps, x):
    """The mathematical substitute, unfolded: each replaced ReLU is slope * z + intercept."""
    h = np.asarray(x, np.float64)
    for k, layer in enumerate(network.layers):
        if isinstance(layer, Relu) and (k - 1) in reps:
            r = reps[k - 1]
            h = np.where(r.removed, r.slope * h + r.intercept, np.maximum(h, 0))
        else:
            h = layer.apply(h)
    return h


@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_fold_matches_unfolded_substitute(which, mlp, cnn):
    net, _ = mlp if which == "mlp" else cnn
    rng = np.random.default_rng(1)
    reps = {}
    for k in candidate_layers(net):
        n = layer_size(net.layers[k])
        removed = rng.random(n) < 0.6
        slope = np.where(rng.random(n) < 0.3, 0.0, rng.uniform(-0.5, 1.5, n))  # zero and nonzero slopes
        reps[k] = Replacement(removed, slope, rng.normal(size=n))
    domain = (np.zeros(net.n_inputs), np.ones(net.n_inputs))
    sub, info = build_substitute(net, reps, domain)
    x = rng.random((200, net.n_inputs))
    assert np.allclose(sub.forward(x), _reference(net, reps, x), atol=1e-9)
    assert info.deleted + info.linear_passthrough == sum(int(r.removed.sum()) for r in reps.values())
    # All ReLUs of a layer replaced: the two affine layers merge, one Relu fewer.
    full = {k: Replacement(np.ones_like(r.removed), r.slope, r.intercept) for k, r in reps.items()}
    sub2, info2 = build_substitute(net, full, domain)
    assert info2.layers_merged == len(full) and len(sub2.layers) == len(net.layers) - 2 * len(full)
    assert np.allclose(sub2.forward(x), _reference(net, full, x), atol=1e-9)


@pytest.mark.parametrize("kind", ["con", "lin", "act"])
@pytest.mark.parametrize("which", ["mlp", "cnn"])
def test_substitute_keeps_anchor_and_is_smaller(kind, which, mlp, cnn):
    net, x0 = mlp if which == "mlp" else cnn
    sub = make_substitute(net, x0, kind, 0.9, clip=CLIP)
    s = sub.summary()
    replaceable = sum(layer_size(net.layers[k]) for k in candidate_layers(net))
    assert s["relus_removed"] == int(0.9 * replaceable)
    assert s["relus_kept"] == s["relus_total"] - s["relus_removed"]
    assert core.anchor_label(sub.network, x0) == core.anchor_label(net, x0) == sub.label
    assert np.allclose(sub.network.forward(x0[None]), net.forward(x0[None]), atol=1e-9)  # f_i(x0) kept
    if kind == "lin":
        xa = sub.x_adv[None]
        assert np.allclose(sub.network.forward(xa), net.forward(xa), atol=1e-9)


def test_passthrough_relus_need_no_binaries(mlp):
    net, x0 = mlp
    sub = make_substitute(net, x0, "lin", 0.5, clip=CLIP)
    s = sub.summary()
    assert s["linear_passthrough"] > 0
    prop = robustness_property(x0, sub.d_adv, sub.label, 3, CLIP)
    # Even over the whole domain box the shifted ReLUs are stable: only kept ReLUs get binaries.
    whole = robustness_property(x0, 1.0, sub.label, 3, CLIP)
    for p in (prop, whole):
        assert encode(sub.network, p.x_lower, p.x_upper).n_binaries <= s["relus_kept"]


def test_act_equals_f_near_x0_by_sampling(mlp):
    net, x0 = mlp
    sub = make_substitute(net, x0, "act", 0.9, clip=CLIP)
    d = flip_radius(net, x0, sub, CLIP, timeout=5)
    delta = d["delta"]
    assert delta > 0
    rng = np.random.default_rng(3)
    x = np.clip(x0 + rng.uniform(-delta, delta, (500, x0.size)), *CLIP)
    x[:50] = np.clip(x0 + delta * np.sign(rng.normal(size=(50, x0.size))), *CLIP)  # corners
    assert np.allclose(sub.network.forward(x), net.forward(x), atol=1e-9)


def test_binary_search_brackets_adversarial_and_verified_radius(mlp, adv):
    net, x0 = mlp
    label = core.anchor_label(net, x0)
    r = boundary_distance(net, x0, label, CLIP, timeout=20, rel_tol=1e-2, adv=adv)
    assert r.status == "complete" and r.d_bnd is not None
    assert 0 < r.d_bnd <= r.d_bnd_upper <= adv.d_adv * (1 + 1e-12)
    assert r.d_bnd_upper - r.d_bnd <= 1e-2 * r.d_bnd_upper
    assert r.solves == len(r.solve_seconds) == len(r.solve_statuses)
    # PGD's point is a real adversarial example at distance d_adv.
    assert np.argmax(net.forward(adv.x_adv[None])[0]) != label
    # Independent re-checks: robust at d_bnd, a counterexample exists at d_bnd_upper.
    assert verify_milp(net, robustness_property(x0, r.d_bnd, label, 3, CLIP), time_limit=20).status == "unsat"
    assert verify_milp(net, robustness_property(x0, r.d_bnd_upper, label, 3, CLIP), time_limit=20).status == "sat"


def test_verify_engine_finds_the_same_boundary_as_the_milp(mlp, adv):
    """engine='verify' (vnnx verify's complete pipeline) and engine='milp' bracket one d_bnd:
    each one's verified radius lies below the other's counterexample radius."""
    net, x0 = mlp
    label = core.anchor_label(net, x0)
    m = boundary_distance(net, x0, label, CLIP, timeout=20, rel_tol=1e-2, adv=adv)
    v = boundary_distance(net, x0, label, CLIP, timeout=20, rel_tol=1e-2, adv=adv, engine="verify")
    assert m.status == v.status == "complete" and v.engine == "verify" and m.engine == "milp"
    assert v.d_bnd <= m.d_bnd_upper * (1 + 1e-9) and m.d_bnd <= v.d_bnd_upper * (1 + 1e-9)
    assert verify_milp(net, robustness_property(x0, v.d_bnd, label, 3, CLIP), time_limit=20).status == "unsat"
    with pytest.raises(core.ConfigError):
        boundary_distance(net, x0, label, CLIP, adv=adv, engine="magic")


def test_radius_incomplete_when_a_solve_times_out(mlp, adv, monkeypatch):
    net, x0 = mlp
    calls = []

    def fake(*a, **k):
        calls.append(1)
        return MilpResult("unsat" if len(calls) == 1 else "timeout", None, None, 0.0, 0)

    monkeypatch.setattr(core, "verify_milp", fake)
    r = boundary_distance(net, x0, None, CLIP, timeout=1, adv=adv)
    assert r.status == "incomplete" and r.d_bnd is None
    assert r.verified_radius == pytest.approx(adv.d_adv / 2) and r.solves == 2


def test_radius_narrow_keeps_searching_below_an_undecided_eps(mlp, adv, monkeypatch):
    """With narrow=True a timeout does not end the search: it continues below the undecided ε
    (here every other decision times out), proves a larger radius, and stays incomplete."""
    net, x0 = mlp
    calls = []

    def fake(*a, **k):
        calls.append(1)
        return MilpResult("unsat" if len(calls) % 2 == 1 else "timeout", None, None, 0.0, 0)

    monkeypatch.setattr(core, "verify_milp", fake)
    r = boundary_distance(net, x0, None, CLIP, timeout=1, adv=adv, narrow=True, rel_tol=1e-2)
    assert r.status == "incomplete" and r.d_bnd is None and r.d_bnd_upper == adv.d_adv
    assert r.solves > 4 and r.solve_statuses[:4] == ["unsat", "timeout", "unsat", "timeout"]
    # Each unsat is at the midpoint of [verified, lowest undecided]: 1/2, 5/8, 21/32, ...
    assert r.verified_radius == pytest.approx(max(e for e, st in zip(r.solve_eps, r.solve_statuses) if st == "unsat"))
    assert 0.66 * adv.d_adv < r.verified_radius < min(e for e, st in zip(r.solve_eps, r.solve_statuses)
                                                      if st == "timeout")


def test_con_collapse_detected(mlp):
    net, x0 = mlp
    sub = make_substitute(net, x0, "con", 1.0, clip=CLIP)
    assert sub.summary()["relus_kept"] == 0       # a constant network
    assert substitute_collapsed(sub.network, x0, sub.label, CLIP) is True
    r = boundary_distance(sub.network, x0, sub.label, CLIP, timeout=5)
    assert r.status == "collapsed" and r.d_bnd is None
    assert substitute_collapsed(net, x0, sub.label, CLIP) is False


def test_substitute_onnx_matches_plain_forward(cnn, tmp_path):
    net, x0 = cnn
    sub = make_substitute(net, x0, "lin", 0.5, clip=CLIP)
    assert sub.summary()["linear_passthrough"] + sub.summary()["neurons_deleted"] > 0
    path = tmp_path / "sub.onnx"
    network_to_onnx(sub.network, path)
    x = np.random.default_rng(2).random((20, net.n_inputs)).astype(np.float32)
    assert np.allclose(run_onnxruntime(path, x), sub.network.forward(x), atol=1e-4)


@pytest.fixture(scope="module")
def files(tmp_path_factory, mlp):
    net, x0 = mlp
    d = tmp_path_factory.mktemp("sub")
    network_to_onnx(net, d / "m.onnx")
    save_npz(d / "d.npz", np.stack([x0, x0]), np.array([0, 1]))
    save_npz(d / "bad.npz", np.zeros((2, 5)), np.array([0, 1]))
    return d


def test_cli_substitute_and_radius(files, capsys):
    out = files / "s.onnx"
    assert main(["substitute", "--onnx", str(files / "m.onnx"), "--data", str(files / "d.npz"), "--index", "0",
                 "--kind", "act", "--gamma", "0.9", "--out", str(out)]) == 0
    s = json.loads(capsys.readouterr().out)
    assert out.is_file() and s["relus_kept"] < s["relus_total"] and s["collapsed"] is False
    assert main(["radius", "--onnx", str(files / "m.onnx"), "--data", str(files / "d.npz"), "--index", "1",
                 "--timeout", "10", "--rel-tol", "0.05", "--substitute", "act", "--gamma", "0.9"]) == 0
    captured = capsys.readouterr()
    r = json.loads(captured.out)
    assert r["status"] == "complete" and r["d_bnd"] <= r["d_bnd_upper"]
    assert r["lemma1"]["f_verified_radius"] <= r["lemma1"]["delta"]
    # one progress line per decision on stderr, the JSON alone on stdout
    assert captured.err.count("vnnx radius: decision ") == r["solves"]


@pytest.mark.parametrize("args, message", [
    (["--index", "5"], "--index 5 is outside 0..1"),
    (["--index", "-1"], "--index -1 is outside"),
    (["--index", "0", "--data", "bad.npz"], "data has 5 values per sample, network expects 6"),
    (["--index", "0", "--data", "missing.npz"], "npz file not found"),
])
def test_cli_bad_index_or_data(files, capsys, args, message):
    base = {"--onnx": str(files / "m.onnx"), "--data": str(files / "d.npz")}
    argv = ["radius"]
    for flag in base:
        if flag not in args:
            argv += [flag, base[flag]]
    args = [str(files / a) if a.endswith(".npz") else a for a in args]
    assert main(argv + args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.fixture(scope="module")
def pool_cnn():
    rng = np.random.default_rng(9)
    return random_cnn(rng, maxpool=True), rng.uniform(0.2, 0.8, 36)


@pytest.mark.parametrize("which", ["mlp", "cnn", "pool_cnn"])
def test_fixed_lines_bound_the_substitute_like_its_folded_network(which, mlp, cnn, pool_cnn):
    """Algorithm 1 bounds each partial substitute on the graph engine with f and the replaced
    neurons as fixed lines (``SubstituteBounds``'s ``linear``, no folding per iteration): the
    kept neurons' bounds must equal CROWN on the folded substitute, and every bound must hold for
    the substitute by sampling. Nonnegative slopes are those of con/lin/act; the negative ones
    check the general line. ``pool_cnn`` has a MaxPool (the engine's own relaxation)."""
    net, x0 = {"mlp": mlp, "cnn": cnn, "pool_cnn": pool_cnn}[which]
    rng = np.random.default_rng(5)
    lo, hi = np.clip(x0 - 0.15, *CLIP), np.clip(x0 + 0.15, *CLIP)
    for slopes in ((0.0, 1.0), (-0.7, 1.3)):
        reps = {}
        for k in candidate_layers(net):
            n = layer_size(net.layers[k])
            reps[k] = Replacement(rng.random(n) < 0.5, rng.uniform(*slopes, n), rng.normal(scale=0.3, size=n))
        domain = (np.zeros(net.n_inputs), np.ones(net.n_inputs))
        sub, info = build_substitute(net, reps, domain)
        fixed = SubstituteBounds(net).pre_activation_bounds(lo, hi, {k: (r.removed, r.slope, r.intercept)
                                                                     for k, r in reps.items()})
        folded = SubstituteBounds(sub).pre_activation_bounds(lo, hi)
        compared = 0
        for new_k, (orig_k, idx, nonlinear) in info.neuron_map.items():
            sel = np.flatnonzero(nonlinear)
            for a, b in zip(fixed[orig_k], folded[new_k]):
                np.testing.assert_allclose(a[idx[sel]], b[sel], rtol=1e-9, atol=1e-9)
            compared += sel.size
        assert compared == info.relus_kept > 0
        x = rng.uniform(lo, hi, (3000, net.n_inputs))
        h = x
        for k, layer in enumerate(net.layers):
            if isinstance(layer, Relu) and (k - 1) in reps:
                l, u = fixed[k - 1]
                assert (h >= l - 1e-9).all() and (h <= u + 1e-9).all()
                r = reps[k - 1]
                h = np.where(r.removed, r.slope * h + r.intercept, np.maximum(h, 0))
            else:
                h = layer.apply(h)
        lines = {k: (r.removed, r.slope, r.intercept) for k, r in reps.items()}
        C = rng.normal(size=(3, net.n_outputs))
        eng = SubstituteBounds(net)
        crown, alpha = (eng.bound(lo, hi, C, method, linear=lines) for method in ("crown", "alpha-crown"))
        np.testing.assert_allclose(crown, SubstituteBounds(sub).bound(lo, hi, C), rtol=1e-9, atol=1e-9)
        assert (alpha >= crown - 1e-12).all() and (h @ C.T >= alpha - 1e-9).all()


@pytest.mark.parametrize("which", ["cnn", "pool_cnn"])
def test_algorithm1_with_fixed_lines_equals_refolding_each_iteration(which, cnn, pool_cnn):
    """Bounding f with the replaced neurons on fixed lines (``fixed_lines=True``, the default)
    picks the same ReLUs as folding and bounding every partial substitute, also with a MaxPool
    (where the earlier sparse engine fell back to folding)."""
    net, x0 = cnn if which == "cnn" else pool_cnn
    lab = core.anchor_label(net, x0)
    adv_ = find_adversarial(net, x0, lab, CLIP)
    slow = make_substitute(net, x0, "lin", 0.95, clip=CLIP, label=lab, adv=adv_, fixed_lines=False)
    fast = make_substitute(net, x0, "lin", 0.95, clip=CLIP, label=lab, adv=adv_, fixed_lines=True)
    assert fast.iterations == slow.iterations > 1
    assert fast.replacements.keys() == slow.replacements.keys()
    for k in fast.replacements:
        np.testing.assert_array_equal(fast.replacements[k].removed, slow.replacements[k].removed)
    x = np.random.default_rng(2).random((100, net.n_inputs))
    np.testing.assert_allclose(fast.network.forward(x), slow.network.forward(x), atol=1e-12)


@pytest.mark.parametrize("kind", ["lin", "act"])
def test_bracket_contains_the_true_boundary_and_the_clamped_estimate(mlp, adv, kind):
    """Issue 24: whatever the substitute estimates, the bracket is proven on f itself: its lower
    end is a radius f is robust at (checked by an independent MILP), its upper end the distance
    of a real counterexample to f, the true d_bnd (exact MILP search) lies inside, and the
    reported estimate is the raw one clamped into it."""
    net, x0 = mlp
    label = core.anchor_label(net, x0)
    truth = boundary_distance(net, x0, label, CLIP, timeout=20, rel_tol=1e-3, adv=adv)
    sub = make_substitute(net, x0, kind, 0.9, label=label, adv=adv)
    est = boundary_distance(sub.network, x0, label, CLIP, timeout=20, rel_tol=1e-3).d_bnd
    for check in (False, True):
        b = core.certify_estimate(net, x0, label, est, sub.d_adv, CLIP, check=check, timeout=20)
        assert b.lower <= truth.d_bnd + 1e-9 and truth.d_bnd_upper <= b.upper + 1e-6, (b, truth)
        assert verify_milp(net, robustness_property(x0, b.lower, label, 3, CLIP), time_limit=20).status == "unsat"
        assert verify_milp(net, robustness_property(x0, b.upper, label, 3, CLIP), time_limit=20).status == "sat"
        assert b.estimate_raw == est and b.lower <= b.estimate <= b.upper
        assert (b.check is None) == (not check)
        if check and b.check is not None:
            # the decision at the estimate moved one end onto it
            assert b.check["verdict"] in ("sat", "unsat")
            assert (b.lower_by == "check") == (b.check["verdict"] == "unsat")


def test_cli_radius_reports_the_bracket(files, capsys):
    assert main(["radius", "--onnx", str(files / "m.onnx"), "--data", str(files / "d.npz"), "--index", "1",
                 "--timeout", "10", "--rel-tol", "0.05", "--substitute", "lin", "--gamma", "0.9"]) == 0
    r = json.loads(capsys.readouterr().out)
    b = r["bracket"]
    assert {"lower", "lower_by", "upper", "upper_by", "estimate_raw", "estimate", "check"} <= set(b)
    assert b["estimate_raw"] == r["d_bnd"] and b["lower"] <= b["estimate"] <= b["upper"]
    assert b["check"] is not None
    assert main(["radius", "--onnx", str(files / "m.onnx"), "--data", str(files / "d.npz"), "--index", "1",
                 "--timeout", "10", "--rel-tol", "0.05", "--substitute", "lin", "--gamma", "0.9", "--no-check"]) == 0
    assert json.loads(capsys.readouterr().out)["bracket"]["check"] is None


def test_cli_radius_over_a_range_of_anchors_with_truth_and_plot(files, capsys, tmp_path):
    """--index A:B: one result per anchor, f's own search beside each (--truth), a summary whose
    every true d_bnd lies inside its certified bracket, and the per-anchor plot."""
    plot = tmp_path / "brackets.png"
    assert main(["radius", "--onnx", str(files / "m.onnx"), "--data", str(files / "d.npz"), "--index", "0:2",
                 "--timeout", "10", "--rel-tol", "0.05", "--substitute", "act", "--gamma", "0.9", "--truth",
                 "--plot", str(plot)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [a["index"] for a in r["anchors"]] == [0, 1]
    assert all(a["f"]["verified_radius"] <= a["f"]["d_bnd"] <= a["f"]["d_bnd_upper"] for a in r["anchors"])
    s = r["summary"]
    assert s["anchors"] == 2 and s["compared"] == 2 and s["inside_bracket"] == 2
    assert s["clamped_mean_abs_rel_error"] <= s["raw_mean_abs_rel_error"] + 1e-12
    assert plot.stat().st_size > 0


def test_radius_summary_counts_a_bracket_end_inside_fs_own_tolerance_as_inside():
    """f's search knows d_bnd only to its tolerance: robust at d_bnd, a counterexample at
    d_bnd_upper. A check proving f robust a hair above f's d_bnd (but below d_bnd_upper) is no
    contradiction and counts as inside; a lower end above f's counterexample does not."""
    from vnnx_plugins.substitute.cli import radius_summary

    def row(lower, upper, d_bnd, d_bnd_upper):
        return {"status": "complete", "seconds": 1.0, "substitute": {"prune_seconds": 0.1},
                "bracket": {"lower": lower, "upper": upper, "estimate_raw": lower, "estimate": lower, "seconds": 0.5},
                "f": {"status": "complete", "d_bnd": d_bnd, "d_bnd_upper": d_bnd_upper, "seconds": 10.0}}

    s = radius_summary([row(0.04228, 0.0438, 0.04227, 0.04232),     # lower inside f's [d_bnd, d_bnd_upper]
                        row(0.0300, 0.0400, 0.0350, 0.0351),        # plainly inside
                        row(0.0500, 0.0600, 0.0400, 0.0401)])       # lower above f's counterexample: unsound
    assert s["compared"] == 3 and s["inside_bracket"] == 2 and s["point_inside_bracket"] == 1
    old = row(0.0300, 0.0400, 0.0350, None)                         # older rows: no d_bnd_upper
    assert radius_summary([old])["inside_bracket"] == 1


def test_cli_index_range_is_refused_where_one_anchor_is_meant(files, capsys):
    assert main(["substitute", "--onnx", str(files / "m.onnx"), "--data", str(files / "d.npz"), "--index", "0:2",
                 "--kind", "lin", "--gamma", "0.9", "--out", str(files / "x.onnx")]) == 2
    assert "single anchor" in capsys.readouterr().err


def test_cli_radius_range_keeps_going_past_an_anchor_that_fails(files, capsys, monkeypatch):
    """An anchor whose search cannot start (e.g. PGD finds no adversarial example anywhere) is an
    error row of the range, not the end of the run."""
    from vnnx.errors import VnnxError
    from vnnx_plugins.substitute import cli

    real = cli._radius_one

    def flaky(args, index, truth=False):
        if index == 0:
            raise VnnxError("PGD found no adversarial example in the whole input domain")
        return real(args, index, truth)

    monkeypatch.setattr(cli, "_radius_one", flaky)
    assert main(["radius", "--onnx", str(files / "m.onnx"), "--data", str(files / "d.npz"), "--index", "0:2",
                 "--timeout", "10", "--rel-tol", "0.05", "--substitute", "lin", "--gamma", "0.9"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert [a["status"] for a in r["anchors"]][0] == "error" and r["anchors"][1]["status"] == "complete"
    assert r["summary"]["errors"] == 1 and r["summary"]["complete"] == 1


def test_stable_first_ranking_replaces_only_stable_relus_exactly(mlp, adv):
    """With one round (gamma0 = 1) and γ no larger than the share of ReLUs CROWN proves stable on
    the d_adv ball, 'stable-first' replaces only those, so the substitute equals f on the whole
    ball (sampled); the paper's width ranking picks no more stable ones."""
    net, x0 = mlp
    lo, hi = np.clip(x0 - adv.d_adv, *CLIP), np.clip(x0 + adv.d_adv, *CLIP)
    pre = core._crown_pre_activation(net, lo, hi)
    cands = candidate_layers(net)
    stable = sum(int(((pre[k][0] >= 0) | (pre[k][1] <= 0)).sum()) for k in cands)
    total = sum(layer_size(net.layers[k]) for k in cands)
    assert 2 <= stable < total
    gamma = (stable - 1) / total
    subs = {r: make_substitute(net, x0, "lin", gamma, gamma0=1.0, clip=CLIP, adv=adv, ranking=r)
            for r in ("stable-first", "width")}
    first = subs["stable-first"]
    assert first.summary()["relus_removed"] == stable - 1 == first.stable_removed
    assert subs["width"].stable_removed <= first.stable_removed
    x = np.random.default_rng(3).uniform(lo, hi, size=(4000, net.n_inputs))
    np.testing.assert_allclose(first.network.forward(x), net.forward(x), atol=1e-9)
    with pytest.raises(Exception, match="ranking"):
        make_substitute(net, x0, "lin", 0.5, clip=CLIP, adv=adv, ranking="bogus")


def test_cli_radius_refine_lowers_gamma_and_intersects_the_brackets(files, capsys):
    """--refine 0: every attempt is 'off', so γ drops by the step down to 0 (the substitute is f
    itself there); the reported bracket is the intersection of every attempt's."""
    assert main(["radius", "--onnx", str(files / "m.onnx"), "--data", str(files / "d.npz"), "--index", "1",
                 "--timeout", "10", "--rel-tol", "0.05", "--substitute", "lin", "--gamma", "1.0",
                 "--refine", "0", "--gamma-step", "0.5", "--ranking", "stable-first"]) == 0
    r = json.loads(capsys.readouterr().out)
    att = r["refinements"]
    assert [a["gamma"] for a in att] == [1.0, 0.5, 0.0]
    b = r["bracket"]
    assert b["lower"] == max(a["lower"] for a in att)
    assert b["upper"] == min(a["upper"] for a in att if a["upper"] is not None)
    assert b["lower"] <= b["estimate"] <= b["upper"]
    assert r["substitute"]["gamma"] == 0.0 and r["substitute"]["ranking"] == "stable-first"


@pytest.mark.parametrize("which", ["mlp", "cnn", "pool_cnn"])
def test_substitute_bounds_refine_every_relu_and_match_the_cross_check(which, mlp, cnn, pool_cnn):
    """Algorithm 1's bounds (graph engine, every ReLU input refined): sound by sampling and,
    without MaxPool (whose relaxations differ between the engines), never looser than
    auto_LiRPA's CROWN (the cross-check engine): equal where auto_LiRPA refines (the neurons its
    interval bounds leave unstable), at least as tight on the rest."""
    from vnnx.bounds import BoundComputer

    net, x0 = {"mlp": mlp, "cnn": cnn, "pool_cnn": pool_cnn}[which]
    lo, hi = np.clip(x0 - 0.1, *CLIP), np.clip(x0 + 0.1, *CLIP)
    ours = SubstituteBounds(net).pre_activation_bounds(lo, hi)
    ref = BoundComputer(net).compute(lo, hi, "crown").pre_activation
    x = np.random.default_rng(4).uniform(lo, hi, (3000, net.n_inputs))
    z = net.forward(x, return_all=True)
    tighter = 0
    for k, (l, u) in ours.items():
        zk = z[k].reshape(len(x), -1)
        assert (zk >= l - 1e-9).all() and (zk <= u + 1e-9).all()
        if which == "pool_cnn":
            continue
        rl, ru = ref[k]
        assert (l >= rl - 1e-9).all() and (u <= ru + 1e-9).all()
        if isinstance(net.layers[k + 1], Relu) and k > 0:
            tighter += int(np.sum((u - l) < (ru - rl) - 1e-9))
    if which == "mlp":
        assert tighter > 0     # the stable neurons auto_LiRPA leaves at interval bounds
