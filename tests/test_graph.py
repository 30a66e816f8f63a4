"""The bound graph (vnnx.graph), its operators (vnnx.ops) and its engine (vnnx.engine):
residual networks with BatchNorm, every operator kind, soundness by sampling, agreement with
onnxruntime, auto_LiRPA and brute force, the graph MILP, and verify on residual networks."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from graph_nets import resnet_file, robustness_spec, zoo_file
from vnnx.engine import GraphEngine
from vnnx.errors import UnsupportedOpError
from vnnx.graph import from_onnx
from vnnx.io.onnx import load_onnx, network_to_onnx, run_onnxruntime, to_network

# Sound bounds may be off by float64 round-off only.
TOL = 1e-9


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("graphs")
    return {"resnet": resnet_file(d / "resnet.onnx"), "zoo": zoo_file(d / "zoo.onnx"),
            "zoo_pwl": zoo_file(d / "zoo_pwl.onnx", seed=1, smooth=False)}


def _samples(rng, lo, hi, n=3000):
    """Uniform points, the corners' extremes (all-low, all-high) and random vertices."""
    pts = [rng.uniform(lo, hi, (n, lo.size)), lo[None], hi[None]]
    pts.append(np.where(rng.random((200, lo.size)) < 0.5, lo, hi))
    return np.vstack(pts)


def test_resnet_is_a_dag_with_residual_adds_and_matches_onnxruntime(files, rng):
    model = load_onnx(files["resnet"])
    with pytest.raises(UnsupportedOpError, match="non-sequential"):
        to_network(model)
    g = from_onnx(model)
    adds = [k for k, n in enumerate(g.nodes) if n.op is not None and n.op.kind == "Add"]
    assert len(adds) == 2
    # A residual Add reads two nodes, one of which also feeds another branch.
    assert any(len(g.consumers(i)) > 1 for k in adds for i in g.nodes[k].inputs)
    x = rng.uniform(0, 1, (6, g.n_inputs)).astype(np.float32)
    y = run_onnxruntime(model, x)
    assert np.max(np.abs(g.forward(x) - y)) <= 1e-5 * (1 + np.abs(y).max())


def test_every_operator_kind_matches_onnxruntime(files, rng):
    model = load_onnx(files["zoo"])
    g = from_onnx(model)
    kinds = {n.op.kind for n in g.nodes[1:]}
    assert {"Conv", "LeakyRelu", "Add", "BatchNormalization", "Relu", "Pad", "MaxPool", "AveragePool", "ScaleShift",
            "Concat", "Transpose", "Reshape", "Linear", "Tanh", "Sigmoid"} <= kinds
    # The BatchNorm after the first Conv was folded into it; the one after the Add was not.
    assert sum(n.op.kind == "BatchNormalization" for n in g.nodes[1:]) == 1
    x = rng.uniform(-1, 1, (8, g.n_inputs)).astype(np.float32)
    y = run_onnxruntime(model, x)
    assert np.max(np.abs(g.forward(x) - y)) <= 1e-5 * (1 + np.abs(y).max())


@pytest.mark.parametrize("name", ["resnet", "zoo", "zoo_pwl"])
@pytest.mark.parametrize("eps", [0.01, 0.2])
def test_bounds_are_sound_by_sampling(files, rng, name, eps):
    model = load_onnx(files[name])
    g = from_onnx(model)
    engine = GraphEngine(g, alpha_iterations=10)
    centre = rng.uniform(0, 1, g.n_inputs)
    lo, hi = centre - eps, centre + eps
    C = rng.normal(size=(4, g.n_outputs))
    y = g.forward(_samples(rng, lo, hi)) @ C.T
    results = {m: engine.compute(lo, hi, m, C) for m in ("ibp", "crown", "alpha-crown")}
    for m, r in results.items():
        assert np.all(y >= r.lower - TOL), m
        assert np.all(y <= r.upper + TOL), m
    # alpha-CROWN starts from CROWN's slopes and keeps its best bound per row.
    assert np.all(results["alpha-crown"].lower >= results["crown"].lower - TOL)
    assert np.all(results["alpha-crown"].upper <= results["crown"].upper + TOL)
    # Intermediate bounds are sound too: every node the relaxations read.
    vals = g.forward(_samples(rng, lo, hi, 500), return_all=True)
    for k, (nlo, nhi) in results["crown"].pre_activation.items():
        assert np.all(vals[k - 1] >= nlo - TOL) and np.all(vals[k - 1] <= nhi + TOL)


def test_crown_is_tighter_than_ibp_on_the_resnet(files, rng):
    g = from_onnx(load_onnx(files["resnet"]))
    engine = GraphEngine(g)
    centre = rng.uniform(0, 1, g.n_inputs)
    ibp = engine.compute(centre - 0.02, centre + 0.02, "ibp")
    crown = engine.compute(centre - 0.02, centre + 0.02, "crown")
    assert np.mean(crown.upper - crown.lower) < 0.5 * np.mean(ibp.upper - ibp.lower)


def test_batched_bounds_equal_one_box_at_a_time(files, rng):
    g = from_onnx(load_onnx(files["zoo_pwl"]))
    engine = GraphEngine(g)
    C = rng.normal(size=(3, g.n_outputs))
    lo = rng.uniform(0, 1, (4, g.n_inputs))
    hi = lo + rng.uniform(0, 0.1, lo.shape)
    batch = engine.lower_bounds_batch(lo, hi, C)
    # Batched bounds are CROWN without the interval intersection (see lower_bounds_batch).
    plain = GraphEngine(g, intersect_interval=False)
    one = np.stack([plain.compute(a, b, "crown", C).lower for a, b in zip(lo, hi)])
    # A batch refines the union of the boxes' unstable entries: never looser.
    assert np.all(batch >= one - 1e-9)
    np.testing.assert_allclose(batch, one, atol=1e-6)


def test_memory_cap_chunks_without_changing_bounds(files, rng):
    g = from_onnx(load_onnx(files["resnet"]))
    centre = rng.uniform(0, 1, g.n_inputs)
    a = GraphEngine(g).compute(centre - 0.03, centre + 0.03, "crown")
    b = GraphEngine(g, max_entries=5000).compute(centre - 0.03, centre + 0.03, "crown")
    np.testing.assert_allclose(a.lower, b.lower, atol=1e-10)


@pytest.mark.parametrize("name", ["resnet", "zoo", "zoo_pwl"])
def test_unit_row_steps_equal_the_identity_backward(files, rng, name):
    """Refinements start with each linear node's ``backward_rows`` (a dense layer's matrix rows)
    instead of its backward step on identity rows: the same coefficients and bias."""
    import torch

    from vnnx.ops.base import LinearOperator

    g = from_onnx(load_onnx(files[name]))
    centre = rng.uniform(0, 1, g.n_inputs)
    engine = GraphEngine(g)
    lo, hi = engine._box(centre[None] - 0.05, centre[None] + 0.05)
    bounds = engine.intermediate(lo, hi, "ibp")
    checked = set()
    for k, node in enumerate(g.nodes[1:], 1):
        if not node.op.linear:
            continue
        size = int(np.prod(node.shape))
        idx = torch.as_tensor(rng.choice(size, min(size, 5), replace=False))
        ins = [bounds[i] for i in node.inputs]
        coeffs, bias = node.op.backward_rows(idx, 2, ins)
        eye = torch.zeros((2, idx.numel(), size), dtype=torch.float64)
        eye[:, torch.arange(idx.numel()), idx] = 1.0
        ref_coeffs, ref_bias = node.op.backward(eye.reshape((2, idx.numel()) + tuple(node.shape)), ins)
        for c, r in zip(coeffs, ref_coeffs):
            assert (c is None) == (r is None)
            if c is not None:
                np.testing.assert_allclose(c.numpy(), r.numpy(), atol=1e-12)
        np.testing.assert_allclose(np.broadcast_to(bias.numpy(), ref_bias.shape), ref_bias.numpy(), atol=1e-12)
        if type(node.op).backward_rows is not LinearOperator.backward_rows:
            checked.add(node.op.kind)
    if name != "resnet":
        assert "Linear" in checked         # the override was exercised


@pytest.mark.parametrize("live", [0.05, 0.9])
def test_activation_bias_reads_only_live_intercepts(rng, live):
    """The activation step's bias sums ``min(A, 0)·ub`` (and ``max(A, 0)·lb``) over the entries
    whose intercept is non-zero when they are few: the same value as the full sum, for one
    intercept vector per sample and one shared by all."""
    import torch

    from vnnx.ops import base
    from vnnx.ops.base import _signed_rowdot, rowdot

    shape = (4, 16, 16)
    assert int(np.prod(shape)) >= base.SIGNED_LIVE_MIN      # wide enough to take the live path
    A = torch.as_tensor(rng.normal(size=(3, 7) + shape))
    for lead in (3, 1):
        v = torch.as_tensor(rng.normal(size=(lead, 1) + shape) * (rng.random((lead, 1) + shape) < live))
        for negative in (True, False):
            ref = rowdot(A.clamp(max=0) if negative else A.clamp(min=0), v)
            np.testing.assert_allclose(_signed_rowdot(A, v, negative).numpy(), ref.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows", [3, 40])
def test_linear_transpose_skips_dead_columns_exactly(rng, rows):
    """A dense layer's transposed product skips the columns of A that are zero in every row (a
    ReLU's inactive neurons): the same product as the full one. It skips exactly when the block
    is tall enough and carries no gradient (under α-CROWN a zero column may still have one)."""
    import torch

    from vnnx.ops import linear
    from vnnx.ops.linear import Linear

    op = Linear(rng.normal(size=(30, linear.LIVE_MIN_INPUTS)), rng.normal(size=30))
    A = torch.as_tensor(rng.normal(size=(2, rows, 30)))
    A[:, :, torch.as_tensor(rng.choice(30, 20, replace=False))] = 0.0
    full = A.reshape(-1, 30) @ op.weight
    orig = torch.Tensor.__getitem__
    for grad in (False, True):
        seen = []
        torch.Tensor.__getitem__ = lambda t, i: seen.append(1) or orig(t, i)
        try:
            (fast,) = op.transpose(A.clone().requires_grad_(grad))
        finally:
            torch.Tensor.__getitem__ = orig
        np.testing.assert_allclose(fast.detach().reshape(full.shape).numpy(), full.numpy(), rtol=1e-12, atol=1e-12)
        assert bool(seen) == (2 * rows >= linear.LIVE_MIN_ROWS and not grad)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_crown_agrees_with_auto_lirpa(tmp_path, rng, kind):
    """The cross-check: on chains of shared operators the graph engine's CROWN (without its
    interval intersection) equals auto_LiRPA's, and so does IBP. (With the intersection a row
    can come out looser as well as tighter: CROWN's adaptive slopes are not monotone in the
    intermediate bounds.)"""
    import sys as _sys

    _sys.path.insert(0, str(REPO / "tests"))
    from nets import random_cnn, random_mlp

    from vnnx.bounds import BoundComputer

    net = random_mlp(rng, (6, 20, 20, 20, 4)) if kind == "mlp" else random_cnn(rng, maxpool=False)
    network_to_onnx(net, tmp_path / "n.onnx")
    model = load_onnx(tmp_path / "n.onnx")
    lirpa = BoundComputer(to_network(model))
    g = from_onnx(model)
    for _ in range(3):
        lo = rng.uniform(-1, 0.5, g.n_inputs)
        hi = lo + 0.5
        C = rng.normal(size=(3, g.n_outputs))
        ref = lirpa.compute(lo, hi, "crown", C)
        plain = GraphEngine(g, intersect_interval=False).compute(lo, hi, "crown", C)
        np.testing.assert_allclose(plain.lower, ref.lower, rtol=1e-7, atol=1e-7)
        np.testing.assert_allclose(plain.upper, ref.upper, rtol=1e-7, atol=1e-7)
        ibp = lirpa.compute(lo, hi, "ibp", C)
        np.testing.assert_allclose(GraphEngine(g).compute(lo, hi, "ibp", C).lower, ibp.lower, atol=1e-9)


def test_graph_milp_is_exact_on_a_two_input_residual_net(tmp_path):
    """Brute force on a fine grid of a 2-input residual ReLU/LeakyReLU/MaxPool-free net: the
    MILP's minimum is below every grid value and within the grid's resolution of the best."""
    import onnx
    from onnx import TensorProto, helper as h, numpy_helper as nh

    from vnnx.milp import output_range

    r = np.random.default_rng(7)
    w = lambda *s: nh.from_array((r.normal(size=s)).astype(np.float32), f"w{len(inits)}")  # noqa: E731
    inits = []

    def c(arr):
        t = w(*arr) if isinstance(arr, tuple) else nh.from_array(np.asarray(arr, dtype=np.float32), f"c{len(inits)}")
        inits.append(t)
        return t.name

    nodes = [h.make_node("Gemm", ["x", c((8, 2)), c((8,))], ["h1"], transB=1),
             h.make_node("Relu", ["h1"], ["r1"]),
             h.make_node("Gemm", ["r1", c((8, 8)), c((8,))], ["h2"], transB=1),
             h.make_node("LeakyRelu", ["h2"], ["r2"], alpha=0.2),
             h.make_node("Add", ["r2", "r1"], ["s"]),
             h.make_node("Gemm", ["s", c((1, 8)), c((1,))], ["y"], transB=1)]
    graph = h.make_graph(nodes, "res2", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])], initializer=inits)
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 13)]), str(tmp_path / "res2.onnx"))
    g = from_onnx(load_onnx(tmp_path / "res2.onnx"))
    lo, hi = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    mn, mx = output_range(g, lo, hi, np.array([1.0]))
    grid = np.stack(np.meshgrid(np.linspace(-1, 1, 401), np.linspace(-1, 1, 401)), -1).reshape(-1, 2)
    vals = g.forward(grid)[:, 0]
    assert mn <= vals.min() + 1e-6 and mx >= vals.max() - 1e-6
    # The grid step is 0.005; the network's Lipschitz constant bounds the gap.
    assert vals.min() - mn < 0.05 and mx - vals.max() < 0.05
    crown = GraphEngine(g).compute(lo, hi, "crown")
    assert crown.lower[0] <= mn + 1e-9 and crown.upper[0] >= mx - 1e-9


def test_graph_milp_matches_chain_milp(tmp_path, rng):
    sys.path.insert(0, str(REPO / "tests"))
    from nets import random_cnn

    from vnnx.milp import output_range

    net = random_cnn(rng, maxpool=True, pool_kernel=(3, 3), pool_stride=(2, 2), pool_padding=(1, 1, 0, 0))
    network_to_onnx(net, tmp_path / "c.onnx")
    model = load_onnx(tmp_path / "c.onnx")
    chain, g = to_network(model), from_onnx(model)
    lo = rng.uniform(0, 0.5, g.n_inputs)
    hi = lo + 0.1
    for row in np.eye(g.n_outputs)[:2]:
        np.testing.assert_allclose(output_range(g, lo, hi, row), output_range(chain, lo, hi, row), atol=1e-6)


def test_unknown_operator_is_named_with_its_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper as h

    nodes = [h.make_node("Erf", ["x"], ["y"], name="the_erf")]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    with pytest.raises(UnsupportedOpError, match="Erf.*the_erf"):
        from_onnx(model, "m.onnx")


def _auto_pad_model(mode: str):
    import onnx
    from onnx import TensorProto, helper as h, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(2, 1, 3, 3)).astype(np.float32), "w")
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], name="the_conv", auto_pad=mode, kernel_shape=[3, 3]),
             h.make_node("MaxPool", ["c"], ["y"], name="the_pool", auto_pad=mode, kernel_shape=[2, 2], strides=[2, 2])]
    graph = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 6, 6])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 2, 2])], initializer=[w])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])


def test_auto_pad_valid_is_no_padding_and_same_is_refused_by_name(rng):
    """auto_pad=VALID (no padding) on Conv and MaxPool computes what onnxruntime computes;
    SAME_UPPER gets one line naming the node."""
    model = _auto_pad_model("VALID")
    x = rng.normal(size=(5, 36)).astype(np.float32)
    y = from_onnx(model, "m.onnx").forward(x.astype(np.float64))
    np.testing.assert_allclose(y, run_onnxruntime(model, x), rtol=1e-5, atol=1e-5)
    with pytest.raises(UnsupportedOpError, match="the_conv.*auto_pad=SAME_UPPER"):
        from_onnx(_auto_pad_model("SAME_UPPER"), "m.onnx")


def _verify(onnx_path, spec, timeout=60, *extra):
    run = subprocess.run([sys.executable, "-m", "vnnx.cli", "verify", "--onnx", str(onnx_path), "--vnnlib", str(spec),
                          "--timeout", str(timeout), *extra], capture_output=True, text=True, timeout=timeout + 60)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def test_verify_answers_robustness_specs_on_a_resnet(files, tmp_path):
    model = load_onnx(files["resnet"])
    x = np.random.default_rng(0).uniform(0, 1, model.n_inputs).astype(np.float32)
    label = int(np.argmax(run_onnxruntime(model, x[None])[0]))
    got = {eps: _verify(files["resnet"], robustness_spec(tmp_path / f"s{eps}.vnnlib", x, label, 10, eps))
           for eps in (0.01, 0.1, 0.4)}
    assert got == {0.01: "unsat", 0.1: "unsat", 0.4: "sat"}


def test_milp_decides_a_resnet_spec_the_bounds_leave_open(files, tmp_path):
    model = load_onnx(files["resnet"])
    x = np.random.default_rng(0).uniform(0, 1, model.n_inputs).astype(np.float32)
    label = int(np.argmax(run_onnxruntime(model, x[None])[0]))
    spec = robustness_spec(tmp_path / "s.vnnlib", x, label, 10, 0.1)
    assert _verify(files["resnet"], spec, 60, "--method", "alpha-crown") == "unknown"
    assert _verify(files["resnet"], spec, 60, "--method", "milp") == "unsat"


def test_vnncomp_scripts_accept_a_resnet(files, tmp_path):
    model = load_onnx(files["resnet"])
    x = np.random.default_rng(0).uniform(0, 1, model.n_inputs).astype(np.float32)
    label = int(np.argmax(run_onnxruntime(model, x[None])[0]))
    spec = robustness_spec(tmp_path / "s.vnnlib", x, label, 10, 0.01)
    tools = REPO / "tools" / "vnncomp"
    prep = subprocess.run(["bash", str(tools / "prepare_instance.sh"), "v1", "resnet", str(files["resnet"]), str(spec)],
                          capture_output=True, text=True, timeout=120)
    assert prep.returncode == 0, prep.stderr
    result = tmp_path / "result.txt"
    run = subprocess.run(["bash", str(tools / "run_instance.sh"), "v1", "resnet", str(files["resnet"]), str(spec),
                          str(result), "60"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert result.read_text().splitlines()[0] == "unsat"


def test_leaky_relu_end_to_end(files, tmp_path, rng):
    """The operator added through one module: forward, bounds, MILP and verify."""
    from vnnx.milp import output_range

    model = load_onnx(files["zoo_pwl"])
    g = from_onnx(model)
    assert any(n.op.kind == "LeakyRelu" for n in g.nodes[1:])
    lo = rng.uniform(0, 0.8, g.n_inputs)
    hi = lo + 0.05
    mn, mx = output_range(g, lo, hi, np.eye(g.n_outputs)[0])
    vals = g.forward(_samples(rng, lo, hi))[:, 0]
    assert mn <= vals.min() + 1e-6 and mx >= vals.max() - 1e-6
    crown = GraphEngine(g).compute(lo, hi, "crown")
    assert crown.lower[0] <= mn + 1e-9 and crown.upper[0] >= mx - 1e-9
    centre = ((lo + hi) / 2).astype(np.float32)
    label = int(np.argmax(run_onnxruntime(model, centre[None])[0]))
    assert _verify(files["zoo_pwl"], robustness_spec(tmp_path / "z.vnnlib", centre, label, 5, 0.001)) == "unsat"


def _cli(*args, timeout=120):
    run = subprocess.run([sys.executable, "-m", "vnnx.cli", *args], capture_output=True, text=True, timeout=timeout)
    return run.returncode, run.stdout, run.stderr


def test_bounds_engines_on_the_command_line(shared):
    import json

    net = shared / "benchmarks" / "capm_overlap_case" / "capm_net.onnx"
    spec = shared / "benchmarks" / "capm_overlap_case" / "capm_prop.vnnlib"
    docs = {}
    for engine, method in (("graph", "crown"), ("graph", "alpha-crown"), ("lirpa", "crown")):
        rc, out, err = _cli("bounds", "--onnx", str(net), "--vnnlib", str(spec), "--engine", engine,
                            "--method", method, "--timeout", "60", "--compact")
        assert rc == 0, err
        docs[engine, method] = json.loads(out)
    assert docs["graph", "crown"]["engine"] == "graph" and docs["lirpa", "crown"]["engine"] == "auto_LiRPA"
    g, a = docs["graph", "crown"], docs["graph", "alpha-crown"]
    widths = lambda d: np.subtract(d["upper"], d["lower"])  # noqa: E731
    assert np.all(widths(a) <= widths(g) + 1e-9) and np.any(widths(a) < widths(g) - 1e-6)
    # Both engines bound the same quantity: their intervals intersect on every row.
    li = docs["lirpa", "crown"]
    assert np.all(np.maximum(g["lower"], li["lower"]) <= np.minimum(g["upper"], li["upper"]) + 1e-7)


def test_lirpa_engine_refuses_a_resnet_in_one_line(files, tmp_path):
    model = load_onnx(files["resnet"])
    x = np.full(model.n_inputs, 0.5, np.float32)
    spec = robustness_spec(tmp_path / "s.vnnlib", x, 0, 10, 0.01)
    rc, out, err = _cli("bounds", "--onnx", str(files["resnet"]), "--vnnlib", str(spec), "--engine", "lirpa")
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--engine graph" in err


def test_verify_with_the_graph_engine_on_a_chain(shared):
    d = shared / "benchmarks" / "test"
    for name, expected in (("test_sat.onnx", "sat"), ("test_unsat.onnx", "unsat")):
        assert _verify(d / name, d / "test_prop.vnnlib", 60) == expected


def test_device_flag(files, tmp_path):
    import torch

    model = load_onnx(files["resnet"])
    x = np.full(model.n_inputs, 0.5, np.float32)
    label = int(np.argmax(run_onnxruntime(model, x[None])[0]))
    spec = robustness_spec(tmp_path / "s.vnnlib", x, label, 10, 0.005)
    assert _verify(files["resnet"], spec, 60, "--device", "cpu") == "unsat"
    rc, out, err = _cli("verify", "--onnx", str(files["resnet"]), "--vnnlib", str(spec), "--device", "tpu")
    assert rc == 2 and "unknown device" in err
    if not torch.cuda.is_available():
        rc, out, err = _cli("verify", "--onnx", str(files["resnet"]), "--vnnlib", str(spec), "--device", "cuda")
        assert rc == 2 and "no CUDA GPU" in err


def test_stage_batches_grow_on_a_gpu():
    from types import SimpleNamespace

    from vnnx.stages import GPU_BATCH_FACTOR, device_batch

    assert device_batch(SimpleNamespace(device="cpu"), 256) == 256
    assert device_batch(SimpleNamespace(device="cuda"), 256) == device_batch(SimpleNamespace(device="cuda:1"), 256) \
        == 256 * GPU_BATCH_FACTOR


def test_device_auto_picks_cuda_only_when_torch_sees_a_gpu(monkeypatch):
    import torch

    from vnnx.verify import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert check_device("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert check_device("auto") == "cuda" and check_device("cuda:1") == "cuda:1"


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bounds_equal_cpu_bounds(files, rng):
    g = from_onnx(load_onnx(files["resnet"]))
    centre = rng.uniform(0, 1, g.n_inputs)
    cpu = GraphEngine(g).compute(centre - 0.02, centre + 0.02, "crown")
    gpu = GraphEngine(g, device="cuda").compute(centre - 0.02, centre + 0.02, "crown")
    np.testing.assert_allclose(gpu.lower, cpu.lower, atol=1e-9)
    np.testing.assert_allclose(gpu.upper, cpu.upper, atol=1e-9)


@pytest.mark.parametrize("case", ["resnet", "zoo_pwl", "capm_default", "capm_chain"])
def test_sparse_back_end_gives_the_dense_bounds(files, rng, shared, case):
    """Refinements of one box start on the sparse back end where the operator is local
    (convolutions, pooling, residual sums): the bounds equal the dense back end's, and the sparse
    back end really ran."""
    relax = {}
    if case.startswith("capm"):
        model = load_onnx(shared / "benchmarks" / "capm_overlap_case" / "capm_net.onnx")
        if case == "capm_chain":
            from vnnx.cli import relaxations_for
            relax = relaxations_for("capm")
    else:
        model = load_onnx(files[case])
    g = from_onnx(model)
    centre = rng.uniform(0.2, 0.8, g.n_inputs)
    C = rng.normal(size=(4, g.n_outputs))
    sparse = GraphEngine(g, relaxations=relax)
    dense = GraphEngine(g, relaxations=relax, sparse=False)
    for eps in (0.01, 0.05):
        a = sparse.compute(centre - eps, centre + eps, "crown", C)
        b = dense.compute(centre - eps, centre + eps, "crown", C)
        np.testing.assert_allclose(a.lower, b.lower, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(a.upper, b.upper, rtol=1e-9, atol=1e-9)
        for k in a.pre_activation:
            np.testing.assert_allclose(a.pre_activation[k][0], b.pre_activation[k][0], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(a.pre_activation[k][1], b.pre_activation[k][1], rtol=1e-9, atol=1e-9)
    if case != "zoo_pwl":
        assert any(sparse._local_nodes.values())
    assert not any(dense._local_nodes.values())
    if case == "resnet":
        # Under a small memory cap the filled-in rest of a pass runs in blocks of rows.
        capped = GraphEngine(g, max_entries=2000).compute(centre - 0.05, centre + 0.05, "crown", C)
        np.testing.assert_allclose(capped.lower, b.lower, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("case", ["capm_overlap", "pool_cnn"])
def test_as_splittable_computes_the_same_function_with_sound_bounds(files, rng, shared, tmp_path, case):
    """vnnx.graph.as_splittable: every MaxPool as Select + (Sub, ReLU, Add) steps. Every node
    of the original and its image compute the same values (padded, overlapping and ceil-mode
    windows), CROWN on the rewritten graph is sound by sampling, and the MILP on it gives the
    original's exact range."""
    from nets import random_cnn

    from vnnx.graph import as_splittable
    from vnnx.milp import output_range

    if case == "capm_overlap":
        g = from_onnx(load_onnx(shared / "benchmarks" / "capm_overlap_case" / "capm_net.onnx"))
    else:
        net = random_cnn(np.random.default_rng(5), maxpool=True, pool_kernel=(3, 3), pool_stride=(2, 2),
                         pool_padding=(1, 1, 1, 1))
        network_to_onnx(net, tmp_path / "pool.onnx")
        g = from_onnx(load_onnx(tmp_path / "pool.onnx"))
    relus, node_map = as_splittable(g)
    assert not any(n.op.kind == "MaxPool" for n in relus.nodes[1:])
    assert sum(n.op.kind == "Relu" for n in relus.nodes[1:]) > sum(n.op.kind == "Relu" for n in g.nodes[1:])
    x = rng.uniform(0, 1, (64, g.n_inputs))
    import torch
    with torch.no_grad():
        a = g.run(torch.as_tensor(x).reshape((64,) + g.input_shape))
        b = relus.run(torch.as_tensor(x).reshape((64,) + g.input_shape))
    for k, j in node_map.items():
        np.testing.assert_allclose(a[k].numpy(), b[j].numpy(), atol=1e-12)
    centre = rng.uniform(0.2, 0.8, g.n_inputs)
    lo, hi = centre - 0.02, centre + 0.02
    res = GraphEngine(relus).compute(lo, hi, "crown")
    ys = g.forward(_samples(rng, lo, hi, 2000))
    assert np.all(ys >= res.lower - TOL) and np.all(ys <= res.upper + TOL)
    if case == "pool_cnn":
        c = np.eye(g.n_outputs)[0] - np.eye(g.n_outputs)[1]
        exact = output_range(g, lo, hi, c, time_limit=60)
        rewritten = output_range(relus, lo, hi, c, time_limit=60)
        np.testing.assert_allclose(rewritten, exact, atol=1e-6)
    # A graph with nothing to rewrite comes back as it is.
    plain = from_onnx(load_onnx(files["resnet"]))
    same, none = as_splittable(plain)
    assert same is plain and none is None
