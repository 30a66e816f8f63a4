"""The plain view's own forward pass agrees with its canonical torch module, and with dense
matrices (Conv.matrix), for the pooling and convolution settings ONNX allows."""
import itertools

import numpy as np
import pytest
import torch

from vnnx.errors import ShapeMismatchError
from vnnx.network import Conv, Dense, MaxPool, Network, Relu


@pytest.mark.parametrize("h, k, s, pads, ceil", [
    (h, k, s, pads, ceil) for h, k, s, pads, ceil in itertools.product(
        [5, 6, 7], [2, 3], [1, 2, 3], [(0, 0, 0, 0), (1, 1, 1, 1), (0, 0, 1, 1), (1, 0, 0, 1)], [False, True])
    if max(pads) < k])
def test_maxpool_torch_matches_onnx_windows(h, k, s, pads, ceil):
    pool = MaxPool((2, h, 6), (k, k), (s, s), pads, ceil)
    net = Network((1, 2, h, 6), (1,) + pool.out_shape, [pool])
    x = np.random.default_rng(h * 100 + k * 10 + s).normal(size=(3, 2 * h * 6))
    ours = net.forward(x)
    theirs = net.to_torch(torch.float64)(torch.tensor(x)).detach().numpy()
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    # Every window holds at least one real cell: padding never wins (−∞ semantics).
    assert all(len(w) > 0 for w in pool.windows())


def test_conv_dense_matrix_matches_convolution(rng):
    conv = Conv(rng.normal(size=(4, 2, 3, 3)), rng.normal(size=4), (2, 7, 6), (4, 3, 3), stride=(2, 2),
                padding=(1, 0, 0, 1))
    W, b = conv.matrix()
    x = rng.normal(size=(5, 2 * 7 * 6))
    np.testing.assert_allclose(x @ W.T + b, conv.apply(x), rtol=0, atol=1e-12)
    net = Network((1, 2, 7, 6), (1, 36), [conv, Relu((36,))])
    np.testing.assert_allclose(net.to_torch(torch.float64)(torch.tensor(x)).detach().numpy(), net.forward(x), atol=1e-12)


def test_float64_module_keeps_exact_weights(rng):
    w = rng.normal(size=(3, 4))
    net = Network((1, 4), (1, 3), [Dense(w, np.zeros(3), (4,), (3,))])
    lin = net.to_torch(torch.float64)[0]
    assert np.array_equal(lin.weight.detach().numpy(), w)  # no float32 round trip


def test_shape_errors():
    with pytest.raises(ShapeMismatchError):
        Dense(np.zeros((3, 4)), np.zeros(3), (5,), (3,))
    with pytest.raises(ShapeMismatchError):
        MaxPool((1, 2, 2), (3, 3), (1, 1))
    net = Network((1, 4), (1, 3), [Dense(np.zeros((3, 4)), np.zeros(3), (4,), (3,))])
    with pytest.raises(ShapeMismatchError):
        net.forward(np.zeros((2, 5)))


@pytest.mark.parametrize("case", [
    (3, 4, 1, 3, 1, (1, 1, 1, 1), (1, 1), 7),     # same padding
    (4, 6, 2, 3, 2, (0, 1, 2, 0), (1, 1), 9),     # groups, stride, asymmetric pads
    (2, 2, 2, 2, 1, (0, 0, 0, 0), (2, 2), 6),     # dilation, depthwise
    (1, 16, 1, 5, 2, (2, 2, 2, 2), (1, 1), 28),   # the paper CNN's first layer
])
def test_sparse_matrix_equals_dense_matrix(case):
    """Conv.sparse_matrix (and Conv.matrix, its dense form) equal the convolution of the
    identity, entry for entry."""
    import torch

    c, o, groups, k, stride, pads, dil, h = case
    rng = np.random.default_rng(0)
    weight = rng.normal(size=(o, c // groups, k, k))
    weight[0, 0, 0, 0] = 0.0
    x = torch.zeros(1, c, h, h, dtype=torch.float64)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (pads[1], pads[3], pads[0], pads[2])),
                                   torch.tensor(weight), stride=stride, dilation=dil, groups=groups)
    conv = Conv(weight, rng.normal(size=o), (c, h, h), tuple(y.shape[1:]), (stride, stride), pads, dil, groups)
    n_in = int(np.prod(conv.in_shape))
    eye = torch.eye(n_in, dtype=torch.float64).reshape(n_in, *conv.in_shape)
    ref = torch.nn.functional.conv2d(torch.nn.functional.pad(eye, (pads[1], pads[3], pads[0], pads[2])),
                                     torch.tensor(weight), stride=stride, dilation=dil, groups=groups)
    ref = ref.reshape(n_in, -1).T.numpy()
    W, b = conv.matrix()
    S, bs = conv.sparse_matrix()
    np.testing.assert_array_equal(W, ref)
    np.testing.assert_array_equal(S.toarray(), W)
    np.testing.assert_array_equal(bs, b)
    assert S.nnz == np.count_nonzero(W)
    dense = Dense(W, b, (W.shape[1],), (W.shape[0],))
    np.testing.assert_array_equal(dense.sparse_matrix()[0].toarray(), W)


def test_window_table_matches_windows():
    pool = MaxPool((2, 5, 4), (3, 2), (2, 2), (1, 0, 1, 1), True)
    index, valid = pool.window_table()
    for p, cells in enumerate(pool.windows()):
        assert list(index[p][valid[p]]) == list(cells)
        assert (index[p][~valid[p]] == 0).all()


def test_matrix_cache_serves_each_layer_its_own_matrices(rng):
    import scipy.sparse as sp

    from vnnx.network import MatrixCache, layer_matrix

    conv = Conv(rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3), (2, 6, 6), (3, 4, 4))
    dense = Dense(rng.normal(size=(4, 48)), rng.normal(size=4), (48,), (4,))
    cache = MatrixCache()
    for layer in (conv, dense):
        W, b = cache.sparse(layer)
        Wd, bd = cache.dense(layer)
        assert sp.isspmatrix_csr(W) and isinstance(Wd, np.ndarray)
        np.testing.assert_array_equal(W.toarray(), Wd)
        np.testing.assert_array_equal(b, bd)
        assert cache.sparse(layer)[0] is W and cache.dense(layer)[0] is Wd   # served, not rebuilt
    np.testing.assert_array_equal(layer_matrix(conv)[0], conv.matrix()[0])
    # A matrix filed by the caller (e.g. the folding that wrote the layer) is the one served.
    other = Dense(np.zeros((4, 48)), np.zeros(4), (48,), (4,))
    filed = sp.csr_matrix(np.ones((4, 48)))
    cache.put(other, filed, np.ones(4))
    assert cache.sparse(other)[0] is filed
    assert not cache.dense(other)[0].any()   # dense and sparse entries are separate
