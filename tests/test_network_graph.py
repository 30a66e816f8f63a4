"""The layer chain as a bound graph (Network.to_graph) and the graph engine keyed by layer
(vnnx.engine.ChainBounds), the bridge the plugins bound through."""
from __future__ import annotations

import numpy as np
import pytest

from nets import random_cnn, random_mlp
from vnnx.engine import ChainBounds, GraphEngine
from vnnx.graph import from_onnx
from vnnx.io.onnx import load_onnx, network_to_onnx, to_network
from vnnx.network import Network, Sigmoid, Tanh


def _nets(rng):
    mlp = random_mlp(rng)
    s = random_mlp(rng, sizes=(4, 6, 6, 2))
    smooth = Network(s.input_shape, s.output_shape, [s.layers[0], Sigmoid((6,)), s.layers[2], Tanh((6,)), s.layers[4]])
    return {"mlp": mlp, "smooth": smooth,
            "cnn": random_cnn(rng),
            "padded_pool": random_cnn(rng, pool_kernel=(3, 3), pool_stride=(2, 2), pool_padding=(1, 1, 1, 1)),
            "pool_first": random_cnn(rng, relu_before_pool=False)}


@pytest.mark.parametrize("name", ["mlp", "smooth", "cnn", "padded_pool", "pool_first"])
def test_chain_bounds_are_sound_and_keyed_by_layer(rng, name):
    net = _nets(rng)[name]
    cb = ChainBounds(net)
    x = rng.uniform(-1, 1, (500, net.n_inputs))
    assert np.allclose(cb.graph.forward(x), net.forward(x), atol=1e-12)
    lo, hi = x[0] - 0.2, x[0] + 0.2
    res = cb.compute(lo, hi, "crown")
    pre = [k for k in range(len(net.layers) - 1) if not hasattr(net.layers[k + 1], "weight")]
    assert sorted(res.pre_activation) == pre
    pts = rng.uniform(lo, hi, (3000, net.n_inputs))
    outs = net.forward(pts, return_all=True)
    for k, (l, u) in res.pre_activation.items():
        assert np.all(outs[k] >= l - 1e-9) and np.all(outs[k] <= u + 1e-9), k
    assert np.all(outs[-1] >= res.lower - 1e-9) and np.all(outs[-1] <= res.upper + 1e-9)
    layers = cb.layer_bounds(lo, hi)
    assert len(layers) == len(net.layers)
    for k, (l, u) in enumerate(layers):
        assert np.all(outs[k] >= l - 1e-9) and np.all(outs[k] <= u + 1e-9), k
    for k in res.pre_activation:
        assert np.allclose(layers[k][0], res.pre_activation[k][0])
    # Batched bounds, with the input coefficients the input-split search reads.
    C = np.eye(net.n_outputs)
    info = {}
    batch = cb.lower_bounds_batch(lo[None], hi[None], C, info=info)
    assert np.allclose(batch, cb.lower_bounds_batch(lo[None], hi[None], C))
    assert info["input"].shape == (1, net.n_outputs, net.n_inputs)


def test_chain_bounds_equal_the_onnx_graphs(tmp_path, rng):
    """The chain's graph and the graph read from the same network's ONNX file give the same
    CROWN bounds (the bridge adds nothing but reshapes)."""
    for name, net in _nets(rng).items():
        path = tmp_path / f"{name}.onnx"
        network_to_onnx(net, path)
        x = rng.uniform(-1, 1, net.n_inputs)
        a = ChainBounds(net).compute(x - 0.1, x + 0.1, "crown")
        b = GraphEngine(from_onnx(load_onnx(path))).compute(x - 0.1, x + 0.1, "crown")
        assert np.allclose(a.lower, b.lower, atol=1e-9) and np.allclose(a.upper, b.upper, atol=1e-9), name


def test_chain_bounds_match_auto_lirpa_on_eran(shared):
    """Same pre-activation keys and CROWN bounds as the auto_LiRPA facade on an ERAN net."""
    from vnnx.bounds import BoundComputer

    net = to_network(load_onnx(shared / "networks/eran-mnist/mnist_relu_3_50.onnx"))
    x = np.random.default_rng(1).uniform(0, 1, net.n_inputs)
    a = ChainBounds(net).compute(x - 0.01, x + 0.01, "crown")
    b = BoundComputer(net).compute(x - 0.01, x + 0.01, "crown")
    assert sorted(a.pre_activation) == sorted(b.pre_activation)
    for k in a.pre_activation:
        assert np.allclose(a.pre_activation[k][0], b.pre_activation[k][0], atol=1e-8)
    assert np.allclose(a.lower, b.lower, atol=1e-8)
