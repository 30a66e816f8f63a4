"""The core's sparse CROWN engine (vnnx.sparse_crown) on networks without MaxPool."""
import numpy as np
import pytest

from nets import random_cnn, random_mlp
from vnnx.bab import crown_layer_bounds, relu_chain
from vnnx.errors import UnsupportedOpError
from vnnx.network import Dense, Network, Relu, Sigmoid
from vnnx.sparse_crown import SparseCrown


def test_equals_dense_crown_layer_by_layer():
    """Without MaxPool the engine is CROWN on every neuron: the core's dense
    crown_layer_bounds is the reference, layer by layer, and the keys match relu_chain's."""
    rng = np.random.default_rng(4)
    for net in (random_cnn(rng, maxpool=False), random_mlp(rng, sizes=(6, 12, 10, 8, 3))):
        chain = relu_chain(net)
        lo = rng.normal(size=net.n_inputs)
        hi = lo + 0.5
        ref = dict(zip(chain.layer_index, crown_layer_bounds(chain, lo, hi)))
        ours = SparseCrown(net).pre_activation_bounds(lo, hi)
        assert sorted(ours) == sorted(ref)
        for k, (l1, u1) in ours.items():
            np.testing.assert_allclose(l1, ref[k][0], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(u1, ref[k][1], rtol=1e-9, atol=1e-9)


def test_sound_by_sampling_with_alpha():
    rng = np.random.default_rng(8)
    for net in (random_cnn(rng, maxpool=False), random_mlp(rng, sizes=(5, 16, 16, 4))):
        eng = SparseCrown(net)
        lo = rng.normal(size=net.n_inputs)
        hi = lo + 1.0
        C = rng.normal(size=(4, net.n_outputs))
        crown = eng.bound(lo, hi, C)
        alpha = eng.bound(lo, hi, C, alpha_iterations=20)
        assert (alpha >= crown - 1e-12).all() and (alpha > crown + 1e-9).any()
        xs = rng.uniform(lo, hi, size=(5000, net.n_inputs))
        acts = net.forward(xs, return_all=True)
        assert (acts[-1] @ C.T >= alpha - 1e-9).all()
        for k, (l, u) in eng.pre_activation_bounds(lo, hi).items():
            assert (acts[k] >= l - 1e-9).all() and (acts[k] <= u + 1e-9).all()


def test_rejects_what_it_cannot_bound():
    eye = Dense(np.eye(2), np.zeros(2), (2,), (2,))
    with pytest.raises(UnsupportedOpError, match="Sigmoid"):
        SparseCrown(Network((1, 2), (1, 2), [eye, Sigmoid((2,)), eye]))
    with pytest.raises(UnsupportedOpError, match="affine"):
        SparseCrown(Network((1, 2), (1, 2), [eye, Relu((2,))]))
    with pytest.raises(UnsupportedOpError, match="MaxPool"):
        SparseCrown(random_cnn(np.random.default_rng(0), maxpool=True))
    eng = SparseCrown(random_mlp(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="entries"):
        eng.bound(np.zeros(3), np.ones(3))


def test_refuses_coefficient_matrices_beyond_the_memory_cap(monkeypatch):
    import vnnx.sparse_crown as sc

    net = random_cnn(np.random.default_rng(1), maxpool=False)
    eng = SparseCrown(net)
    lo = np.zeros(net.n_inputs)
    monkeypatch.setattr(sc, "MAX_NNZ", 5)
    with pytest.raises(UnsupportedOpError, match="too large"):
        eng.bound(lo, lo + 0.1)
