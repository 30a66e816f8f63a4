"""Branch and bound on Sigmoid / Tanh networks (vnnx.graph_bab splitting S-shaped activations):
bounds sound under random splits and β (sampling), every domain of a real search sound, answers
against a dense grid on 2-input nets, MNIST MLPs that CROWN leaves open closed by the search, a
confirmed counterexample, and no 'unsat' from domains it cannot split further."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.graph_nets import bounds_with_random_betas
from vnnx.engine import GraphEngine
from vnnx.graph_bab import GraphBab, split_nodes
from vnnx.network import Dense, Network, Sigmoid, Tanh
from vnnx.ops.sigmoid import Sigmoid as SigmoidOp
from vnnx.ops.tanh import Tanh as TanhOp

MODELS = Path(__file__).resolve().parents[1] / "specs" / "mnist_demo"
ACTS = {"sigmoid": Sigmoid, "tanh": Tanh}


def _net(seed: int, sizes, act: str = "sigmoid", scale: float = 2.0) -> Network:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(rng.normal(size=(b, a)) * scale / np.sqrt(a), rng.normal(size=b) * 0.5, (a,), (b,)))
        if i < len(sizes) - 2:
            layers.append(ACTS[act]((b,)))
    return Network((1, sizes[0]), (1, sizes[-1]), layers)


def _values(graph, x):
    with torch.no_grad():
        vals = graph.run(torch.as_tensor(x).reshape((len(x),) + graph.input_shape))
    return {k: v.reshape(len(x), -1).numpy() for k, v in enumerate(vals)}


def _in_domain(bab, dom, d, vals, n):
    """Mask of the n sampled points that satisfy domain d's split constraints."""
    keep = np.ones(n, dtype=bool)
    for k in bab.smooth_op:
        sp = dom.splits[k][d].reshape(-1).numpy()
        lo, hi = dom.lo[k][d].reshape(-1).numpy(), dom.hi[k][d].reshape(-1).numpy()
        ok = (((sp & 1) == 0) | (vals[k] >= lo)) & (((sp & 2) == 0) | (vals[k] <= hi))
        keep &= ok.all(1)
    return keep


@pytest.mark.parametrize("op", [SigmoidOp(), TanhOp()])
def test_split_point_is_inside_and_no_worse_than_the_midpoint(op):
    rng = np.random.default_rng(0)
    lo = torch.as_tensor(rng.uniform(-6, 3, 2000))
    hi = lo + torch.as_tensor(rng.uniform(0.01, 8, 2000))
    t = op.split_point(lo, hi)
    mid = (lo + hi) / 2
    assert torch.all((t >= lo + 0.25 * (hi - lo) - 1e-12) | (t == 0)) and torch.all(t <= hi - 0.25 * (hi - lo) + 1e-12)
    worse = torch.maximum(op.gap(lo, t), op.gap(t, hi))
    assert torch.all(worse <= torch.maximum(op.gap(lo, mid), op.gap(mid, hi)) + 1e-15)
    assert torch.all(worse < op.gap(lo, hi))


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
@pytest.mark.parametrize("seed", range(2))
def test_bounds_under_random_splits_and_betas_hold_on_sampled_points(act, seed):
    """Split entries of every layer at random points (one entry from both sides), on the side an
    anchor input takes, set random β >= 0, and bound: every sampled input of the domain has an
    objective at or above the bound, and β really changes it."""
    rng = np.random.default_rng(seed)
    g = _net(seed, (3, 8, 8, 2), act).to_graph()
    lo, up = -np.ones(3), np.ones(3)
    A, b = rng.normal(size=(1, 2)), rng.normal(size=1)
    bab = GraphBab(GraphEngine(g), lo, up, A, b, iterations=0)
    assert set(bab.smooth_op) == set(bab.split_keys) and len(bab.split_keys) == 2
    with torch.no_grad():
        dom = bab._root(None, None)
    anchor = _values(g, rng.uniform(lo, up, size=(1, 3)))
    for k in bab.split_keys:
        el, eh, sp = (t.reshape(-1) for t in (dom.lo[k][0], dom.hi[k][0], dom.splits[k][0]))
        for j in rng.permutation(8)[:4].tolist() + [0]:    # entry 0 may be split twice
            t = float(rng.uniform(el[j], eh[j]))
            if anchor[k][0, j] >= t:
                el[j], sp[j] = t, sp[j] | 1
            else:
                eh[j], sp[j] = t, sp[j] | 2
    bounds = bounds_with_random_betas(bab, dom, rng)
    assert abs(bounds["beta"] - bounds["beta0"]) > 1e-6
    x = np.vstack([rng.uniform(lo, up, size=(60000, 3)), np.where(rng.random((4000, 3)) < 0.5, lo, up)])
    vals = _values(g, x)
    keep = _in_domain(bab, dom, 0, vals, len(x))
    assert keep.sum() > 20
    obj = vals[g.output][keep] @ A[0] - b[0]
    assert obj.min() >= max(bounds.values()) - 1e-9


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_every_domain_of_a_search_is_sound_on_sampled_points(act, monkeypatch):
    """Record every domain a real search bounds (α/β optimised, split many times): its bound is
    below the objective at every sampled input that satisfies its splits, and its kept node
    bounds contain those inputs' values."""
    g = _net(7, (3, 10, 10, 1), act).to_graph()
    lo, up = -np.ones(3), np.ones(3)
    rng = np.random.default_rng(0)
    x = np.vstack([rng.uniform(lo, up, size=(8000, 3)), np.where(rng.random((1000, 3)) < 0.5, lo, up)])
    vals = _values(g, x)
    thr = float(vals[g.output].min()) - 0.002
    seen = []
    original = GraphBab._optimise

    def recording(self, dom, iterations):
        out = original(self, dom, iterations)
        if len(seen) < 25:
            seen.append(dom.clone())
        return out

    monkeypatch.setattr(GraphBab, "_optimise", recording)
    bab = GraphBab(GraphEngine(g), lo, up, np.array([[1.0]]), np.array([thr]), batch=64)
    bab.probe()     # the first Adam step imports torch's compiler: keep it out of the 2 s
    bab.run(deadline=time.monotonic() + 2)
    n_dom = n_split = 0
    for dom in seen:
        for d in range(len(dom)):
            keep = _in_domain(bab, dom, d, vals, len(x))
            n_split += int(sum(bool((dom.splits[k][d] != 0).any()) for k in bab.smooth_op))
            if not keep.any():
                continue
            n_dom += 1
            assert (vals[g.output][keep, 0] - thr).min() >= float(dom.bound[d]) - 1e-9
            for k in bab.keep[1:]:
                lo_k, hi_k = dom.lo[k][d].reshape(-1).numpy(), dom.hi[k][d].reshape(-1).numpy()
                assert np.all(vals[k][keep] >= lo_k - 1e-9) and np.all(vals[k][keep] <= hi_k + 1e-9)
    assert n_dom > 20 and n_split > 20


def _grid_min(net: Network, n: int = 401):
    """Dense-grid minimum of the single output on [-1, 1]^2, and a bound on how far the true
    minimum can be below it (Lipschitz constant from the weights' spectral norms times the
    largest distance to the grid)."""
    xs = np.stack(np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n)), -1).reshape(-1, 2)
    y = net.forward(xs)[:, 0]
    lip = 1.0
    for layer in net.layers:
        if isinstance(layer, Dense):
            lip *= np.linalg.norm(layer.weight, 2)
        else:
            lip *= 0.25 if isinstance(layer, Sigmoid) else 1.0
    return float(y.min()), lip * (2 / (n - 1)) * np.sqrt(2) / 2


@pytest.mark.parametrize("act,seed", [("sigmoid", 1), ("sigmoid", 2), ("sigmoid", 7), ("tanh", 1)])
def test_answers_agree_with_a_dense_grid_on_two_input_nets(act, seed):
    """Below the grid minimum by more than the grid can miss: unsat. Above it: never unsat, and
    a reported counterexample lies in the box and violates."""
    net = _net(seed, (2, 10, 10, 1), act)
    g = net.to_graph()
    m, miss = _grid_min(net)
    lo, up = -np.ones(2), np.ones(2)
    engine = GraphEngine(g)
    for thr, expected in ((m - miss - 0.03, "unsat"), (m + 0.02, "sat")):
        check = lambda x, thr=thr: bool(net.forward(x[None])[0, 0] <= thr)  # noqa: E731
        res = GraphBab(engine, lo, up, np.array([[1.0]]), np.array([thr]), check=check).run(
            deadline=time.monotonic() + 8)
        if expected == "unsat":
            assert res.status == "unsat", (act, seed, res)
        else:
            assert res.status != "unsat", (act, seed, res)
            if res.status == "sat":
                assert np.all(res.x >= lo) and np.all(res.x <= up) and check(res.x)


def test_domains_narrower_than_the_minimum_width_end_unknown_never_unsat(monkeypatch):
    """With every entry below the minimum width nothing can be split: the search ends 'unknown'
    (no MILP for a smooth graph), though the property holds."""
    from vnnx.ops.sshape import SShaped

    net = _net(0, (2, 10, 10, 1))
    g = net.to_graph()
    m, miss = _grid_min(net)
    monkeypatch.setattr(SShaped, "split_min_width", 1e9)
    res = GraphBab(GraphEngine(g), -np.ones(2), np.ones(2), np.array([[1.0]]), np.array([m - miss - 0.03])).run(
        deadline=time.monotonic() + 5)
    assert res.status == "unknown" and "fully split" in res.message


def test_split_nodes_include_sigmoid_and_tanh_inputs():
    g = _net(0, (3, 5, 5, 5, 2), "tanh").to_graph()
    nodes = split_nodes(g)
    assert sorted(nodes) == sorted(g.nodes[j].inputs[0] for j, n in enumerate(g.nodes[1:], 1) if n.op.kind == "Tanh")


def _mnist_property(index: int, eps: float):
    from vnnx.data import mnist_split
    from vnnx.io.vnnlib import Spec, robustness_property

    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if not data.exists():
        pytest.skip("../shared/data/mnist not available")
    _, evaluation = mnist_split(data)
    prop = robustness_property(evaluation.x[index].reshape(-1), eps, int(evaluation.y[index]), 10)
    return Spec(f"img{index}", 784, 10, [prop])


@pytest.mark.parametrize("name,index,eps", [("sigmoid_3x20", 12, 0.01), ("tanh_3x20", 7, 0.01)])
def test_mnist_mlp_crown_leaves_open_and_the_search_proves(name, index, eps):
    """The shipped small MLPs (tools/train_sigmoid.py): CROWN and α-CROWN say unknown, the
    branch and bound (alone and under auto) proves the property."""
    from vnnx.io.onnx import load_onnx
    from vnnx.verify import Verifier

    spec = _mnist_property(index, eps)
    verifier = Verifier(load_onnx(MODELS / f"mnist_{name}.onnx"))
    assert verifier.verify(spec, "crown", 30).verdict == "unknown"
    assert verifier.verify(spec, "alpha-crown", 30).verdict == "unknown"
    res = verifier.verify(spec, "bab", 30)
    assert res.verdict == "unsat" and res.decided_by == "relu-bab"
    assert verifier.verify(spec, "auto", 30).verdict == "unsat"


def test_mnist_mlp_counterexample_is_confirmed_by_onnxruntime():
    from vnnx.io.onnx import load_onnx, run_onnxruntime
    from vnnx.io.vnnlib import violates

    from vnnx.verify import Verifier

    spec = _mnist_property(0, 0.04)
    model = load_onnx(MODELS / "mnist_sigmoid_3x20.onnx")
    res = Verifier(model).verify(spec, "auto", 30)
    assert res.verdict == "sat"
    x = np.asarray(res.counterexample.x, dtype=np.float32)
    y = run_onnxruntime(model, x[None])[0]
    assert violates(spec.properties[0], x.astype(np.float64), y.astype(np.float64), tol=1e-4)
