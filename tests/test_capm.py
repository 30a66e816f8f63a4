"""CAPM MaxPool operator: sampling soundness (IBP, CROWN, α-CROWN) over many pool geometries,
exact-MILP comparison, edge cases, and the MaxPool → Conv/ReLU rewrite against onnxruntime."""
import numpy as np
import pytest
import torch

import vnnx  # noqa: F401  - compat patches first
from vnnx._compat import import_auto_lirpa
from vnnx.bounds import BoundComputer
from vnnx.errors import VnnxError
from vnnx.network import Conv, Dense, MaxPool, Network, Relu
from vnnx_plugins import capm
from vnnx_plugins.capm import BoundCapmMaxPool, PaddedMaxPool2d, PoolSpec, relax_windows, reluify_maxpool

TOL = 1e-9

# (kernel, stride, pads (top, left, bottom, right), ceil_mode)
POOLS = [
    ((2, 2), (2, 2), (0, 0, 0, 0), False),      # auto_LiRPA's own case
    ((3, 3), (2, 2), (0, 0, 0, 0), False),      # overlapping windows
    ((3, 3), (1, 1), (1, 1, 1, 1), False),      # overlapping, symmetric padding
    ((2, 2), (1, 1), (0, 0, 0, 0), False),
    ((3, 2), (2, 1), (1, 0, 0, 1), True),       # asymmetric kernel, stride and pads, ceil_mode
    ((2, 3), (2, 2), (0, 1, 1, 0), True),
    ((3, 3), (2, 2), (0, 0, 0, 0), True),       # ceil_mode overhang
    ((4, 4), (3, 3), (2, 1, 0, 2), False),
    ((2, 2), (3, 3), (0, 0, 0, 0), True),       # stride > kernel
    ((1, 1), (1, 1), (0, 0, 0, 0), False),      # K = 1: the max is the identity
]


def pool_cnn(rng, pool, *, cin=2, hw=(6, 7), cmid=3, relu_before=False, second_conv=False) -> Network:
    """Conv(3x3, no ReLU: pool inputs of any sign) -> MaxPool -> [Conv 2x2 ->] Dense 6 -> ReLU -> Dense 3."""
    kernel, stride, pads, ceil = pool
    h, w = hw
    shape = (cmid, h - 2, w - 2)
    layers = [Conv(rng.normal(size=(cmid, cin, 3, 3)) / 3, rng.normal(size=cmid) * 0.5, (cin, h, w), shape)]
    if relu_before:
        layers.append(Relu((int(np.prod(shape)),)))
    mp = MaxPool(shape, kernel, stride, pads, ceil)
    layers.append(mp)
    shape = mp.out_shape
    if second_conv and min(shape[1:]) >= 2:
        out = (2, shape[1] - 1, shape[2] - 1)
        layers.append(Conv(rng.normal(size=(2, shape[0], 2, 2)) / 2, rng.normal(size=2) * 0.3, shape, out))
        shape = out
    n = int(np.prod(shape))
    layers += [Dense(rng.normal(size=(6, n)) / np.sqrt(n), rng.normal(size=6) * 0.3, (n,), (6,)), Relu((6,)),
               Dense(rng.normal(size=(3, 6)) / np.sqrt(6), rng.normal(size=3) * 0.3, (6,), (3,))]
    return Network((1, cin, h, w), (1, 3), layers)


def samples(rng, lo, hi, n=2000):
    xs = rng.uniform(lo, hi, size=(n, lo.size))
    xs[:200] = np.where(rng.random((200, lo.size)) < 0.5, lo, hi)   # vertices, where maxima often are
    return xs


def assert_sound(net, lo, hi, res, rng, C=None):
    acts = net.forward(samples(rng, lo, hi), return_all=True)
    y = acts[-1] if C is None else acts[-1] @ C.T
    assert (y >= res.lower - TOL).all(), f"lower bound violated by {np.max(res.lower - y.min(0)):.3g}"
    assert (y <= res.upper + TOL).all(), f"upper bound violated by {np.max(y.max(0) - res.upper):.3g}"
    for k, (l, u) in res.pre_activation.items():
        assert (acts[k] >= l - TOL).all() and (acts[k] <= u + TOL).all(), f"layer {k}"


@pytest.mark.parametrize("pool", POOLS, ids=lambda p: "k%d%ds%d%dp%d%d%d%dc%d" % (*p[0], *p[1], *p[2], p[3]))
def test_sampling_soundness_all_methods(pool):
    for seed in range(3):
        rng = np.random.default_rng(100 + seed)
        net = pool_cnn(rng, pool, relu_before=seed == 2, second_conv=seed == 1)
        bc = BoundComputer(net, capm.custom_ops(), alpha_iterations=5)
        center = rng.normal(size=net.n_inputs)
        eps = [0.05, 0.3, 1.0][seed]
        lo, hi = center - eps, center + eps
        C = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0], [-1.0, 0.0, 1.0]])
        widths = {}
        for method in ("ibp", "crown", "alpha-crown"):
            res = bc.compute(lo, hi, method)
            assert_sound(net, lo, hi, res, rng)
            widths[method] = float(np.mean(res.upper - res.lower))
            assert_sound(net, lo, hi, bc.compute(lo, hi, method, C=C), rng, C=C)
        assert widths["alpha-crown"] <= widths["crown"] + 1e-7


def test_random_networks_many_seeds():
    """Random geometry, random sizes: the broad net under CROWN and α-CROWN."""
    rng = np.random.default_rng(7)
    for _ in range(12):
        kh, kw = rng.integers(1, 4, size=2)
        sh, sw = rng.integers(1, 4, size=2)
        pads = tuple(int(rng.integers(0, k)) for k in (kh, kw, kh, kw))
        pool = ((int(kh), int(kw)), (int(sh), int(sw)), pads, bool(rng.integers(2)))
        try:
            net = pool_cnn(rng, pool, cin=1, hw=(int(rng.integers(5, 9)), int(rng.integers(5, 9))),
                           cmid=int(rng.integers(1, 4)))
        except Exception:   # a window of padding only, or an empty output: not a pool ONNX allows
            continue
        bc = BoundComputer(net, capm.custom_ops(), alpha_iterations=5)
        lo = rng.uniform(-2, 1, net.n_inputs)
        hi = lo + rng.uniform(0, 1, net.n_inputs)
        for method in ("crown", "alpha-crown"):
            assert_sound(net, lo, hi, bc.compute(lo, hi, method), rng)


def test_relaxation_is_sound_pointwise():
    """The window relaxation alone, any α in [0, 1], random padding masks."""
    g = torch.Generator().manual_seed(0)
    B, C, P, K = 2, 3, 40, 6
    lower = torch.randn(B, C, P, K, generator=g, dtype=torch.float64) * 2
    upper = lower + torch.rand(B, C, P, K, generator=g, dtype=torch.float64) * 3
    upper[..., 1] = lower[..., 1]                              # a point interval
    valid = torch.rand(P, K, generator=g) < 0.7
    valid[:, 2] = True
    for order in ("lower", "natural"):
        for params in (None, "random"):
            a = b = None
            if params:
                a = torch.rand(4, B, C, P, K - 1, generator=g, dtype=torch.float64)
                b = torch.rand(4, B, C, P, K - 1, generator=g, dtype=torch.float64)
            rel = relax_windows(lower, upper, valid, lower_slope=a, upper_mix=b, order=order)
            x = lower + (upper - lower) * torch.rand(500, B, C, P, K, generator=g, dtype=torch.float64)
            x = torch.where(torch.rand_like(x) < 0.3, torch.where(torch.rand_like(x) < 0.5, lower, upper), x)
            true_max = x.masked_fill(~valid, float("-inf")).amax(-1)              # (N, B, C, P)
            xs = torch.gather(x, -1, rel.order.expand_as(x))                      # sorted slots
            w_lo, w_up, b_up = rel.w_lower, rel.w_upper, rel.b_upper
            if params is None:                                                    # a spec dim of 1
                w_lo, w_up, b_up = w_lo.unsqueeze(0), w_up.unsqueeze(0), b_up.unsqueeze(0)
            lin_lo = (w_lo * xs.unsqueeze(1)).sum(-1)                             # (N, S, B, C, P)
            lin_up = (w_up * xs.unsqueeze(1)).sum(-1) + b_up
            ref = true_max.unsqueeze(1)
            assert (lin_lo <= ref + TOL).all() and (ref <= lin_up + TOL).all()
            # padding slots carry no weight
            inval = ~torch.gather(valid.expand_as(lower), -1, rel.order)
            assert (w_lo * inval).abs().max() == 0 and (w_up * inval).abs().max() == 0


def test_crown_choices_same_on_numpy_and_torch():
    """CROWN's step choices run on numpy on the CPU and on torch elsewhere (CUDA, gradients):
    both give the same choices, with and without one of the two parameters given."""
    from vnnx_plugins.capm import relaxation

    g = torch.Generator().manual_seed(7)
    shape = (2, 3, 11, 5)
    mid, s, t, const = (torch.rand(shape, generator=g, dtype=torch.float64) for _ in range(4))
    phase = torch.randint(0, 3, shape, generator=g)
    active, unstable = phase == 0, phase == 1
    mid = torch.cat([torch.rand(shape[:-1] + (1,), generator=g, dtype=torch.float64), mid], -1)
    given = torch.rand(shape, generator=g, dtype=torch.float64)
    for a, b in ((None, None), (given, None), (None, given)):
        out = [relaxation._crown_choices(mid, s, t, const, active, unstable, a, b, backend=k)
               for k in ("numpy", "torch")]
        for x, y in zip(*out):
            assert torch.equal(x, y)
        # The choices are 0/1 where CROWN made them, so both means were followed step by step.
        if a is None:
            assert set(out[0][0].unique().tolist()) <= {0.0, 1.0}


def test_dominant_input_gives_exact_bound():
    """A window in which one cell's lower bound is above every other upper bound: the bound of
    its max is that cell's own bound, exactly, whatever its position in the window."""
    rng = np.random.default_rng(3)
    mp = MaxPool((2, 4, 4), (2, 2), (2, 2))
    n = mp.out_shape[0] * mp.out_shape[1] * mp.out_shape[2]
    W = rng.normal(size=(3, n))
    net = Network((1, 2, 4, 4), (1, 3), [mp, Dense(W, np.zeros(3), (n,), (3,))])
    lo = rng.uniform(-3, -2, 32)
    hi = lo + rng.uniform(0, 0.5, 32)
    dom = np.array([rng.choice(c) for c in mp.windows()])
    lo[dom] += 5.0
    hi[dom] += 5.0
    exact_lo = np.maximum(W, 0) @ lo[dom] + np.minimum(W, 0) @ hi[dom]
    exact_hi = np.maximum(W, 0) @ hi[dom] + np.minimum(W, 0) @ lo[dom]
    bc = BoundComputer(net, capm.custom_ops())
    for method in ("ibp", "crown", "alpha-crown"):
        res = bc.compute(lo, hi, method)
        np.testing.assert_allclose(res.lower, exact_lo, atol=1e-10)
        np.testing.assert_allclose(res.upper, exact_hi, atol=1e-10)


def test_windows_touching_padding_use_minus_infinity():
    """All-negative inputs next to padding: zero padding would let 0 win; −∞ padding must not."""
    mp = MaxPool((1, 4, 5), (3, 3), (2, 2), (1, 2, 1, 0), True)
    n = int(np.prod(mp.out_shape))
    net = Network((1, 1, 4, 5), (1, n), [mp, Dense(np.eye(n), np.zeros(n), (n,), (n,))])
    lo, hi = np.full(20, -2.0), np.full(20, -1.0)
    bc = BoundComputer(net, capm.custom_ops())
    for method in ("ibp", "crown", "alpha-crown"):
        res = bc.compute(lo, hi, method)
        np.testing.assert_allclose(res.lower, -2.0, atol=1e-12)
        np.testing.assert_allclose(res.upper, -1.0, atol=1e-12)
    # the torch pool (what Network.to_torch emits) agrees with the plain view
    x = np.random.default_rng(0).uniform(-2, -1, size=(5, 20))
    y = PaddedMaxPool2d((3, 3), (2, 2), (1, 2, 1, 0), True)(torch.as_tensor(x).reshape(5, 1, 4, 5))
    np.testing.assert_array_equal(y.reshape(5, -1).numpy(), mp.apply(x))


@pytest.mark.parametrize("pool", [POOLS[1], POOLS[4], POOLS[7]], ids=["overlap", "asym-ceil", "pad"])
def test_bounds_contain_exact_milp_range(pool):
    from vnnx.milp import output_range

    rng = np.random.default_rng(11)
    net = pool_cnn(rng, pool, cin=1, hw=(5, 5), cmid=2)
    lo = rng.uniform(-1, 1, net.n_inputs)
    hi = lo + 0.25
    bc = BoundComputer(net, capm.custom_ops(), alpha_iterations=20)
    results = {m: bc.compute(lo, hi, m) for m in ("ibp", "crown", "alpha-crown")}
    for i in range(3):
        exact = output_range(net, lo, hi, np.eye(3)[i], time_limit=20)
        for m, res in results.items():
            assert res.lower[i] <= exact[0] + 1e-6 and res.upper[i] >= exact[1] - 1e-6, (m, i, exact)
    # the MILP on the rewritten (MaxPool-free) net gives the same exact range
    flat = reluify_maxpool(net)
    assert not any(isinstance(layer, MaxPool) for layer in flat.layers)
    c = np.array([1.0, -1.0, 0.0])
    a, b = output_range(net, lo, hi, c, time_limit=20)
    a2, b2 = output_range(flat, lo, hi, c, time_limit=20)
    assert abs(a - a2) < 1e-5 and abs(b - b2) < 1e-5


def _bounded(model, x, **opts):
    lirpa = import_auto_lirpa()
    return lirpa.BoundedModule(model, (x,), bound_opts=opts, custom_ops=capm.custom_ops()), lirpa


@pytest.mark.parametrize("conv_mode", ["patches", "matrix"])
def test_torch_model_patches_mode_and_input_pool(conv_mode):
    """Straight auto_LiRPA use (float32, default patches mode): a pool on the input, a pool
    followed by a convolution (its A arrives as Patches), and a pool as the last layer."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        PaddedMaxPool2d((2, 2), (1, 1), (0, 1, 1, 0)),                 # on the input itself
        torch.nn.Conv2d(2, 3, 3), PaddedMaxPool2d((3, 3), (2, 2), (1, 1, 1, 1), True),
        torch.nn.Conv2d(3, 4, 2), torch.nn.ReLU(), PaddedMaxPool2d((2, 2), (1, 1)),
        torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x = torch.randn(2, 2, 7, 7)
    bm, lirpa = _bounded(model, x, conv_mode=conv_mode)
    assert sum(isinstance(n, BoundCapmMaxPool) for n in bm.modules()) == 3
    eps = 0.2
    bx = lirpa.BoundedTensor(x, lirpa.PerturbationLpNorm(norm=np.inf, eps=eps))
    xs = x.unsqueeze(0) + eps * (2 * torch.rand(2000, *x.shape) - 1)
    with torch.no_grad():
        ys = model(xs.reshape(-1, *x.shape[1:])).reshape(2000, 2, 3)
    for method in ("IBP", "CROWN", "CROWN-Optimized"):
        lb, ub = bm.compute_bounds(x=(bx,), method=method)
        assert (ys >= lb.detach() - 1e-5).all() and (ys <= ub.detach() + 1e-5).all(), method


def test_stock_maxpool_refuses_what_it_cannot_bound():
    """``--maxpool lirpa`` on overlapping windows must fail loudly, never give a bound."""
    rng = np.random.default_rng(0)
    net = pool_cnn(rng, POOLS[1])
    lo = rng.normal(size=net.n_inputs)
    with pytest.raises(VnnxError):
        BoundComputer(net, {}).compute(lo, lo + 0.1, "crown")


def test_from_onnx_attrs_rejects_unsupported():
    with pytest.raises(VnnxError, match="dilation"):
        PoolSpec.from_onnx_attrs({"kernel_shape": [2, 2], "dilations": [2, 2]})
    with pytest.raises(VnnxError, match="auto_pad"):
        PoolSpec.from_onnx_attrs({"kernel_shape": [2, 2], "auto_pad": b"SAME_UPPER"})
    spec = PoolSpec.from_onnx_attrs({"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 0, 1],
                                     "ceil_mode": 1})
    assert spec == PoolSpec((3, 2), (2, 1), (1, 0, 0, 1), True)


def test_registration_and_cli_default():
    from vnnx.cli import build_parser, custom_ops_for

    assert capm.PLUGIN.extras["custom_ops"] == {"onnx::MaxPool": BoundCapmMaxPool}
    assert custom_ops_for("capm") == {"onnx::MaxPool": BoundCapmMaxPool}
    assert custom_ops_for("lirpa") == {}
    parser = build_parser()
    assert parser.parse_args(["bounds", "--onnx", "a", "--vnnlib", "b"]).maxpool == "capm"
    assert parser.parse_args(["bounds", "--onnx", "a", "--vnnlib", "b", "--maxpool", "lirpa"]).maxpool == "lirpa"
    verify = parser.parse_args(["verify", "--onnx", "a", "--vnnlib", "b", "--maxpool", "lirpa"])
    assert verify.maxpool == "lirpa"
    was = capm.is_installed()
    with capm.use_capm():
        assert capm.is_installed()
    assert capm.is_installed() == was
    if not was:
        assert capm.install() and capm.is_installed() and capm.uninstall() and not capm.is_installed()


# ------------------------------------------------------------------------ reluify vs onnxruntime

@pytest.mark.parametrize("pool", POOLS, ids=lambda p: "k%d%ds%d%dp%d%d%d%dc%d" % (*p[0], *p[1], *p[2], p[3]))
def test_reluify_matches_onnxruntime_exactly(pool, tmp_path):
    """The pool on the input, dyadic inputs: every float operation of the rewrite is exact, so the
    rewritten net must equal onnxruntime's MaxPool bit for bit (and the plain view too)."""
    from vnnx.io.onnx import network_to_onnx, run_onnxruntime

    kernel, stride, pads, ceil = pool
    mp = MaxPool((2, 6, 7), kernel, stride, pads, ceil)
    n = int(np.prod(mp.out_shape))
    net = Network((1, 2, 6, 7), (1, n), [mp, Dense(np.eye(n), np.zeros(n), (n,), (n,))])
    flat = reluify_maxpool(net)
    assert not any(isinstance(layer, MaxPool) for layer in flat.layers)
    network_to_onnx(net, tmp_path / "pool.onnx")
    network_to_onnx(flat, tmp_path / "relu.onnx")
    rng = np.random.default_rng(5)
    x = rng.integers(-64, 65, size=(50, net.n_inputs)) / 16.0
    x[0] = -1.0                                          # ties everywhere, all negative
    ort_pool = run_onnxruntime(tmp_path / "pool.onnx", x)
    np.testing.assert_array_equal(run_onnxruntime(tmp_path / "relu.onnx", x), ort_pool)
    np.testing.assert_array_equal(flat.forward(x), ort_pool)
    np.testing.assert_array_equal(net.forward(x), ort_pool)


def test_reluify_random_cnn_close_to_onnxruntime(tmp_path):
    from vnnx.io.onnx import network_to_onnx, run_onnxruntime

    rng = np.random.default_rng(9)
    for pool in POOLS[1:8:2]:
        net = pool_cnn(rng, pool)
        network_to_onnx(net, tmp_path / "net.onnx")
        x = rng.normal(size=(20, net.n_inputs))
        np.testing.assert_allclose(reluify_maxpool(net).forward(x), run_onnxruntime(tmp_path / "net.onnx", x),
                                   rtol=1e-5, atol=1e-5)
