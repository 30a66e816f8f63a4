"""LP bound tightening on the graph (vnnx.graph_lp): sound by sampling, never looser than CROWN or
the given bounds, strictly tighter somewhere, sound when stopped by the time limit."""
from __future__ import annotations

import numpy as np
import pytest

import vnnx  # noqa: F401
from vnnx.errors import UnsupportedOpError, VnnxError
from vnnx.graph_lp import tighten_bounds_lp
from vnnx.graph_milp import node_bounds
from vnnx.network import Dense, MaxPool, Network, Relu, Sigmoid

from tests.nets import random_cnn, random_mlp


def _samples(rng, lo, hi, n):
    """Uniform points of the box, half of them corners."""
    u = rng.random((n, lo.size))
    u[: n // 2] = u[: n // 2] > 0.5
    return lo + (hi - lo) * u


def _dense_maxpool(rng) -> Network:
    """Dense 3->12 -> ReLU -> Dense 12->32 as a (2, 4, 4) image -> MaxPool 2x2 -> Dense 8->3:
    the MaxPool reads a node whose interval bounds are not exact, so the LPs tighten it."""
    return Network((1, 3), (1, 3), [
        Dense(rng.normal(size=(12, 3)), rng.normal(size=12) * 0.3, (3,), (12,)), Relu((12,)),
        Dense(rng.normal(size=(32, 12)) / 3, rng.normal(size=32) * 0.3, (12,), (32,)),
        MaxPool((2, 4, 4), (2, 2), (2, 2), (0, 0, 0, 0)),
        Dense(rng.normal(size=(3, 8)), rng.normal(size=3) * 0.3, (8,), (3,))])


def _nets():
    yield "dense-maxpool", _dense_maxpool(np.random.default_rng(0))
    yield "mlp", random_mlp(np.random.default_rng(1), sizes=(4, 16, 16, 16, 3))
    yield "cnn-maxpool", random_cnn(np.random.default_rng(2))
    yield "cnn-overlap", random_cnn(np.random.default_rng(3), pool_kernel=(3, 3), pool_stride=(1, 1),
                                    pool_padding=(1, 1, 1, 1))


@pytest.mark.parametrize("name,net", list(_nets()), ids=[n for n, _ in _nets()])
def test_lp_bounds_sound_never_looser_than_crown_and_tighter_somewhere(name, net):
    rng = np.random.default_rng(7)
    graph = net.to_graph()
    x = rng.random(net.n_inputs)
    lo, hi = x - 0.4, x + 0.4
    crown = node_bounds(graph, lo, hi)
    tight = tighten_bounds_lp(graph, lo, hi)
    assert len(tight) == len(graph.nodes)
    xs = _samples(rng, lo, hi, 4000)
    values = graph.forward(xs, return_all=True)          # index k: node k + 1
    gained = 0.0
    for k in range(1, len(graph.nodes)):
        (cl, cu), (tl, tu), y = crown[k], tight[k], values[k - 1]
        assert np.all(tl >= cl) and np.all(tu <= cu), f"node {k} got looser than CROWN"
        assert np.all(y >= tl - 1e-9) and np.all(y <= tu + 1e-9), f"node {k} unsound"
        if k in graph.nonlinear_inputs():
            gained += float(np.sum((cu - cl) - (tu - tl)))
    assert gained > 1e-3, "the LPs tightened nothing"
    # The nodes after a tightened one are re-derived: a ReLU's bounds follow its input's.
    for k, node in enumerate(graph.nodes[1:], 1):
        if node.op.kind == "Relu":
            (il, iu), (ol, ou) = tight[node.inputs[0]], tight[k]
            assert np.all(ol >= np.maximum(il, 0) - 1e-12) and np.all(ou <= np.maximum(iu, 0) + 1e-12)


def test_lp_bounds_respect_given_bounds_and_reject_contradicting_ones():
    net = random_mlp(np.random.default_rng(4), sizes=(3, 10, 10, 2))
    graph = net.to_graph()
    lo, hi = -np.ones(3), np.ones(3)
    rng = np.random.default_rng(5)
    values = graph.forward(_samples(rng, lo, hi, 4000), return_all=True)
    crown = node_bounds(graph, lo, hi)
    # Given bounds: CROWN shrunk towards the sampled range, with a margin (still sound).
    given = {k: (np.maximum(crown[k][0], values[k - 1].min(0) - 0.05),
                 np.minimum(crown[k][1], values[k - 1].max(0) + 0.05)) for k in range(1, len(graph.nodes))}
    tight = tighten_bounds_lp(graph, lo, hi, given)
    for k, (gl, gu) in given.items():
        assert np.all(tight[k][0] >= gl) and np.all(tight[k][1] <= gu), f"node {k} looser than given"
        assert np.all(values[k - 1] >= tight[k][0] - 1e-9) and np.all(values[k - 1] <= tight[k][1] + 1e-9)
    k = graph.nonlinear_inputs()[0]
    with pytest.raises(VnnxError, match="contradict"):
        tighten_bounds_lp(graph, lo, hi, {k: (crown[k][0] + 100.0, crown[k][1] + 100.0)})


def test_lp_bounds_at_time_limit_are_crown_bounds():
    net = random_mlp(np.random.default_rng(6), sizes=(4, 16, 16, 3))
    graph = net.to_graph()
    lo, hi = -np.ones(4), np.ones(4)
    crown = node_bounds(graph, lo, hi)
    stopped = tighten_bounds_lp(graph, lo, hi, time_limit=0.0)
    for (cl, cu), (sl, su) in zip(crown, stopped):
        np.testing.assert_array_equal(sl, cl)
        np.testing.assert_array_equal(su, cu)


def test_lp_tightening_rejects_non_piecewise_linear_graphs():
    rng = np.random.default_rng(8)
    net = Network((1, 2), (1, 2), [Dense(rng.normal(size=(3, 2)), np.zeros(3), (2,), (3,)), Sigmoid((3,)),
                                   Dense(rng.normal(size=(2, 3)), np.zeros(2), (3,), (2,))])
    with pytest.raises(UnsupportedOpError, match="piecewise linear"):
        tighten_bounds_lp(net.to_graph(), -np.ones(2), np.ones(2))
