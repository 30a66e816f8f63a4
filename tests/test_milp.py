"""The Tjeng MILP encoding of layer chains (through ``Network.to_graph``) and verify_milp.

Exactness is checked against an independent reference: enumerate every activation pattern
(ReLU on/off, MaxPool winner) region by region, and optimise the affine network of each
feasible region with scipy's LP solver. Soundness is checked by sampling.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.optimize import linprog

import vnnx  # noqa: F401
from vnnx.errors import UnsupportedOpError, VnnxError
from vnnx.engine import ChainBounds
from vnnx.milp import encode, output_range, verify_milp
from vnnx.network import Conv, Dense, MaxPool, Network, Relu, Sigmoid, Tanh

# --------------------------------------------------------------------------------------------
# tiny seeded networks


def dense(rng, n_in, n_out, in_shape=None, out_shape=None, scale=1.0):
    return Dense(rng.normal(size=(n_out, n_in)) * scale, rng.normal(size=n_out) * 0.5,
                 in_shape or (n_in,), out_shape or (n_out,))


def mlp(seed, sizes=(2, 6, 6, 3)):
    rng = np.random.default_rng(seed)
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(dense(rng, a, b))
        if i < len(sizes) - 2:
            layers.append(Relu((b,)))
    return Network((sizes[0],), (sizes[-1],), layers)


def lifted_maxpool_net(seed):
    """2 inputs -> Dense to a (1, 4, 4) image -> MaxPool 2x2 (inputs of both signs) -> ReLU ->
    Dense -> 2 outputs. Two inputs make a dense grid a strong check too."""
    rng = np.random.default_rng(seed)
    return Network((2,), (2,), [
        dense(rng, 2, 16, out_shape=(1, 4, 4)),
        MaxPool((1, 4, 4), (2, 2), (2, 2)),
        Relu((1, 2, 2)),
        dense(rng, 4, 2, in_shape=(1, 2, 2))])


def conv_net(seed, act=Relu):
    """(1, 5, 5) image -> Conv 3x3 pad 1 -> MaxPool 3x3 stride 2 pad 1 (no ReLU before: negative
    inputs) -> act -> Conv 2x2 -> Dense -> 3."""
    rng = np.random.default_rng(seed)
    c1 = Conv(rng.normal(size=(2, 1, 3, 3)), rng.normal(size=2) * 0.3, (1, 5, 5), (2, 5, 5), padding=(1, 1, 1, 1))
    mp = MaxPool((2, 5, 5), (3, 3), (2, 2), padding=(1, 1, 1, 1))
    c2 = Conv(rng.normal(size=(3, 2, 2, 2)), rng.normal(size=3) * 0.3, mp.out_shape, (3, 2, 2))
    return Network((1, 1, 5, 5), (1, 3), [c1, mp, act(mp.out_shape), c2, act((3, 2, 2)),
                                         dense(rng, 12, 3, in_shape=(3, 2, 2))])


def small_conv_maxpool_net(seed):
    """(1, 3, 3) -> Conv 2x2 (2 channels) -> MaxPool 2x2 stride 1 -> Dense -> 2."""
    rng = np.random.default_rng(seed)
    c1 = Conv(rng.normal(size=(2, 1, 2, 2)), rng.normal(size=2) * 0.3, (1, 3, 3), (2, 2, 2))
    mp = MaxPool((2, 2, 2), (2, 2), (1, 1))
    return Network((1, 3, 3), (2,), [c1, mp, dense(rng, 2, 2, in_shape=(2, 1, 1))])


def box_samples(rng, lo, up, n):
    """Uniform points plus random vertices of the box (where extremes of affine maps live)."""
    uni = rng.uniform(lo, up, size=(n, lo.size))
    corners = np.where(rng.random((n, lo.size)) < 0.5, lo, up)
    return np.vstack([uni, corners])


def grid_2d(lo, up, n=301):
    g = np.meshgrid(np.linspace(lo[0], up[0], n), np.linspace(lo[1], up[1], n))
    return np.stack(g, -1).reshape(-1, 2)


# --------------------------------------------------------------------------------------------
# independent exact reference: enumerate activation regions


def exact_range(net: Network, lo: np.ndarray, up: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """min and max of c @ net(x) over the box, by enumerating linear regions with LPs."""
    n = lo.size
    box = list(zip(lo, up))
    best = [np.inf, -np.inf]

    def lp(obj, G, h):
        return linprog(obj, A_ub=np.array(G) if G else None, b_ub=np.array(h) if h else None,
                       bounds=box, method="highs")

    def feasible(G, h):
        return lp(np.zeros(n), G, h).status == 0

    def layer_step(k, M, m, G, h):
        if k == len(net.layers):
            lo_r, hi_r = lp(c @ M, G, h), lp(-(c @ M), G, h)
            assert lo_r.status == 0 and hi_r.status == 0
            best[0] = min(best[0], lo_r.fun + c @ m)
            best[1] = max(best[1], -hi_r.fun + c @ m)
            return
        layer = net.layers[k]
        if isinstance(layer, (Dense, Conv)):
            W, b = layer.matrix()
            layer_step(k + 1, W @ M, W @ m + b, G, h)
        elif isinstance(layer, Relu):
            relu_step(k, 0, M.copy(), m.copy(), G, h)
        elif isinstance(layer, MaxPool):
            pool_step(k, layer.windows(), 0, M, m, [], [], G, h)
        else:
            raise AssertionError(type(layer))

    def relu_step(k, i, M, m, G, h):
        if i == M.shape[0]:
            return layer_step(k + 1, M, m, G, h)
        for on in (True, False):
            sign = -1.0 if on else 1.0        # on: -(M_i x + m_i) <= 0, off: M_i x + m_i <= 0
            G2, h2 = G + [sign * M[i]], h + [-sign * m[i]]
            if feasible(G2, h2):
                M2, m2 = M.copy(), m.copy()
                if not on:
                    M2[i], m2[i] = 0.0, 0.0
                relu_step(k, i + 1, M2, m2, G2, h2)

    def pool_step(k, wins, w, M, m, rows_M, rows_m, G, h):
        if w == len(wins):
            return layer_step(k + 1, np.array(rows_M), np.array(rows_m), G, h)
        for i in wins[w]:
            G2 = G + [M[j] - M[i] for j in wins[w] if j != i]     # x_j - x_i <= 0
            h2 = h + [m[i] - m[j] for j in wins[w] if j != i]
            if feasible(G2, h2):
                pool_step(k, wins, w + 1, M, m, rows_M + [M[i]], rows_m + [m[i]], G2, h2)

    layer_step(0, np.eye(n), np.zeros(n), [], [])
    return best[0], best[1]


def interval_bounds(net, lo, up):
    """The graph engine's interval bounds of every layer (the reference the MILP's bounds are
    compared with)."""
    return ChainBounds(net).layer_bounds(lo, up, "ibp")


def test_encode_rejects_bad_boxes_and_contradicting_bounds():
    net = mlp(0)
    with pytest.raises(VnnxError, match="empty input box"):
        encode(net, np.ones(2), np.zeros(2))
    with pytest.raises(VnnxError, match="expects 2"):
        encode(net, np.zeros(3), np.ones(3))
    lo, up = -np.ones(2), np.ones(2)
    bad = [(b[0] + 100.0, b[1] + 100.0) for b in interval_bounds(net, lo, up)]
    with pytest.raises(VnnxError, match="contradict"):
        encode(net, lo, up, bad)


# --------------------------------------------------------------------------------------------
# output_range is exact


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_output_range_matches_region_enumeration(seed):
    net = mlp(seed)
    lo, up = np.array([-1.0, -0.5]), np.array([1.0, 1.5])
    c = np.random.default_rng(seed).normal(size=3)
    ref = exact_range(net, lo, up, c)
    got = output_range(net, lo, up, c)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    vals = net.forward(grid_2d(lo, up)) @ c
    assert got[0] <= vals.min() + 1e-9 and got[1] >= vals.max() - 1e-9


@pytest.mark.parametrize("seed", [0, 1])
def test_output_range_with_maxpool_of_mixed_sign_inputs(seed):
    net = lifted_maxpool_net(seed)
    lo, up = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    pool_in = interval_bounds(net, lo, up)[0]
    assert np.any(pool_in[0] < 0) and np.any(pool_in[1] > 0)
    c = np.array([1.0, -0.7])
    ref = exact_range(net, lo, up, c)
    got = output_range(net, lo, up, c)
    np.testing.assert_allclose(got, ref, atol=1e-5)
    vals = net.forward(grid_2d(lo, up)) @ c
    assert got[0] <= vals.min() + 1e-9 and got[1] >= vals.max() - 1e-9


def test_output_range_conv_maxpool_matches_enumeration():
    net = small_conv_maxpool_net(5)
    rng = np.random.default_rng(5)
    x = rng.normal(size=9)
    lo, up = x - 0.4, x + 0.4
    c = np.array([1.0, 0.5])
    enc = encode(net, lo, up)
    assert enc.n_binaries > 0
    ref = exact_range(net, lo, up, c)
    np.testing.assert_allclose(output_range(net, lo, up, c), ref, atol=1e-5)


def test_output_range_on_conv_net_contains_samples():
    net = conv_net(7)
    rng = np.random.default_rng(7)
    x = rng.normal(size=25)
    lo, up = x - 0.15, x + 0.15
    c = np.array([1.0, -1.0, 0.0])
    lo_v, up_v = output_range(net, lo, up, c, time_limit=20)
    vals = net.forward(box_samples(rng, lo, up, 3000)) @ c
    assert lo_v <= vals.min() + 1e-9 and up_v >= vals.max() - 1e-9
    ibp = interval_bounds(net, lo, up)[-1]
    ibp_lo = np.maximum(c, 0) @ ibp[0] + np.minimum(c, 0) @ ibp[1]
    assert lo_v >= ibp_lo - 1e-9


def test_binaries_only_for_unstable_relus_and_contested_windows():
    rng = np.random.default_rng(3)
    W = rng.normal(size=(6, 2))
    b = np.array([10.0, 10.0, -10.0, -10.0, 0.0, 0.05])    # 2 active, 2 inactive, 2 unstable
    net = Network((2,), (1,), [Dense(W, b, (2,), (6,)), Relu((6,)), Dense(np.ones((1, 6)), np.zeros(1), (6,), (1,))])
    lo, up = -np.ones(2), np.ones(2)
    l1, u1 = interval_bounds(net, lo, up)[0]
    assert encode(net, lo, up).n_binaries == int(np.sum((l1 < 0) & (u1 > 0))) == 2
    # a window whose first cell always wins needs no binary; the other window needs 2
    pool = Network((1, 1, 4), (1, 1, 2), [Dense(np.eye(4), np.array([5.0, 0.0, 0.0, 0.0]), (1, 1, 4), (1, 1, 4)),
                                          MaxPool((1, 1, 4), (1, 2), (1, 2))])
    enc = encode(pool, -np.ones(4), np.ones(4))
    assert enc.n_binaries == 2
    got = output_range(pool, -np.ones(4), np.ones(4), np.array([1.0, 0.0]))
    np.testing.assert_allclose(got, [4.0, 6.0], atol=1e-7)


def test_sigmoid_is_rejected_with_the_layer_name():
    with pytest.raises(UnsupportedOpError, match=r"'layer2' \(Sigmoid\)"):
        encode(conv_net(0, Sigmoid), np.zeros(25), np.ones(25))


# --------------------------------------------------------------------------------------------
# verify_milp


def prop(lo, up, clauses):
    return SimpleNamespace(x_lower=lo, x_upper=up, clauses=[(np.atleast_2d(A), np.atleast_1d(b)) for A, b in clauses])


def test_verify_sat_returns_a_true_counterexample():
    net = mlp(20)
    lo, up = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    y_min, _ = exact_range(net, lo, up, np.array([1.0, 0.0, 0.0]))
    y_centre = net.forward(((lo + up) / 2)[None])[0]
    threshold = (y_min + y_centre[0]) / 2       # reachable, but not at the centre
    res = verify_milp(net, prop(lo, up, [(np.array([1.0, 0.0, 0.0]), threshold)]))
    assert res.status == "sat"
    assert np.all(res.x >= lo) and np.all(res.x <= up)
    y = net.forward(res.x[None])[0]
    np.testing.assert_allclose(res.y, y)
    assert y[0] <= threshold
    assert res.n_binaries > 0


def test_verify_unsat_when_enumeration_agrees():
    net = mlp(21)
    lo, up = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    c0, c1 = np.array([1.0, -1.0, 0.0]), np.array([0.0, 1.0, -1.0])
    m0, m1 = exact_range(net, lo, up, c0)[0], exact_range(net, lo, up, c1)[0]
    # unsafe iff y0 - y1 <= m0 - 0.05  OR  (y1 - y2 <= m1 - 0.05 AND y0 <= 1e9)
    p = prop(lo, up, [(c0, m0 - 0.05), (np.stack([c1, [1.0, 0, 0]]), np.array([m1 - 0.05, 1e9]))])
    res = verify_milp(net, p, time_limit=30)
    assert res.status == "unsat", res.message
    ys = net.forward(grid_2d(lo, up, 201))
    assert np.all(ys @ c0 > m0 - 0.05) and np.all(ys @ c1 > m1 - 0.05)
    # moving one threshold just past the true minimum flips the answer
    p_sat = prop(lo, up, [(c0, m0 - 0.05), (np.stack([c1, [1.0, 0, 0]]), np.array([m1 + 0.01, 1e9]))])
    res = verify_milp(net, p_sat, time_limit=30)
    assert res.status == "sat"
    assert res.y @ c1 <= m1 + 0.01


def test_verify_with_maxpool_and_tightening_agrees_with_enumeration():
    net = lifted_maxpool_net(22)
    lo, up = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    c = np.array([1.0, -1.0])
    m = exact_range(net, lo, up, c)[0]
    for tighten in (False, True):
        assert verify_milp(net, prop(lo, up, [(c, m - 1e-3)]), tighten=tighten).status == "unsat"
        res = verify_milp(net, prop(lo, up, [(c, m + 1e-3)]), tighten=tighten)
        assert res.status == "sat" and res.y @ c <= m + 1e-3


def test_verify_timeout_and_interval_shortcut():
    net = conv_net(23)
    rng = np.random.default_rng(23)
    x = rng.normal(size=25)
    lo, up = x - 0.3, x + 0.3
    yc = net.forward(x[None])[0]
    out_lo, out_up = interval_bounds(net, lo, up)[-1]
    # violated only far below the interval bound: proven without any MILP
    easy = verify_milp(net, prop(lo, up, [(np.array([1.0, 0, 0]), out_lo[0] - 1.0)]), time_limit=0.0)
    assert easy.status == "unsat"
    # a clause that needs the MILP, with no time for it
    hard = verify_milp(net, prop(lo, up, [(np.array([1.0, 0, 0]), (yc[0] + out_lo[0]) / 2)]), time_limit=0.0)
    assert hard.status == "timeout"


def test_maxpool_keeps_every_possible_winner():
    # y = max(x0, x1) - x1 over x0 in [-1, 0.6], x1 in [0.5, 1]: x0 wins only in a thin corner.
    net = Network((2,), (1,), [
        Dense(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 0.0]]), np.array([0.0, 0.0, 0.0, -10.0]),
              (2,), (1, 1, 4)),
        MaxPool((1, 1, 4), (1, 2), (1, 2)),
        Dense(np.array([[1.0, -1.0]]), np.zeros(1), (1, 1, 2), (1,))])
    lo, up = np.array([-1.0, 0.5]), np.array([0.6, 1.0])
    np.testing.assert_allclose(output_range(net, lo, up, np.array([1.0])), [0.0, 0.1], atol=1e-7)
    assert encode(net, lo, up).n_binaries == 2


# --------------------------------------------------------------------------------------------
# verify_milp's guards against solver results that prove nothing


@pytest.mark.parametrize("fake, expected", [
    (dict(status="time_limit", objective=5.0, bound=-1.0), "timeout"),   # incumbent > 0 is no proof
    (dict(status="optimal", objective=1e-9, bound=1e-9), "unknown"),     # inside the tolerance
    (dict(status="infeasible", objective=None, bound=np.inf), "unsat"),    # t <= tol is capped: no violation
    (dict(status="error", objective=None, bound=None), "unknown"),
    (dict(status="stopped", objective=None, bound=0.5), "unsat"),         # bound proof is enough
])
def test_verify_trusts_only_proven_bounds(monkeypatch, fake, expected):
    import vnnx.milp as milp
    from vnnx.solvers import Solution

    def fake_solve(problem, time_limit=None, backend="highs", **kw):
        return Solution(fake["status"], fake["objective"], None, fake["bound"], 0.0)

    monkeypatch.setattr(milp, "solve", fake_solve)
    net = mlp(30)
    lo, up = -np.ones(2), np.ones(2)
    yc = net.forward(np.zeros((1, 2)))[0]
    out_lo = interval_bounds(net, lo, up)[-1][0]
    res = verify_milp(net, prop(lo, up, [(np.array([1.0, 0, 0]), (yc[0] + out_lo[0]) / 2)]), time_limit=5)
    assert res.status == expected, res.message


def test_verify_rejects_a_spurious_solver_point(monkeypatch):
    """A MILP 'solution' with t <= 0 whose input does not really violate must not be 'sat'."""
    import vnnx.milp as milp
    from vnnx.solvers import Solution

    real_solve = milp.solve
    net = mlp(31)
    lo, up = -np.ones(2), np.ones(2)
    c = np.array([1.0, 0.0, 0.0])
    m = exact_range(net, lo, up, c)[0]

    def fake_solve(problem, time_limit=None, backend="highs", **kw):
        if problem.integrality is None:            # the polishing LP: let it run for real
            return real_solve(problem, time_limit, backend, **kw)
        return Solution("optimal", -1.0, np.zeros(problem.n_cols), -1.0, 0.0)

    monkeypatch.setattr(milp, "solve", fake_solve)
    res = verify_milp(net, prop(lo, up, [(c, m - 0.1)]), time_limit=5)    # truly unsat
    assert res.status == "unknown" and "re-evaluation" in res.message


def test_infeasible_proves_nothing_when_bounds_exclude_the_centre(monkeypatch):
    """'infeasible' reads as 'proven' only if the uncapped encoding is feasible; bounds that cut
    off the box centre's activations (unsound bounds) must give 'unknown', never 'unsat'."""
    import vnnx.milp as milp
    from vnnx.solvers import Solution

    monkeypatch.setattr(milp, "solve", lambda problem, time_limit=None, backend="highs", **kw:
                        Solution("infeasible", None, None, np.inf, 0.0))
    net = mlp(30)
    lo, up = -np.ones(2), np.ones(2)
    yc = net.forward(np.zeros((1, 2)))[0]
    bounds = interval_bounds(net, lo, up)
    first = net.forward(np.zeros((1, 2)), return_all=True)[0][0]
    broken = [None] * len(net.layers)
    ibp_up = bounds[0][1]
    broken[0] = (np.minimum(first + 1e-3, ibp_up), ibp_up)   # excludes the centre's first-layer output
    assert np.any(broken[0][0] > first + 1e-4)
    out_lo = bounds[-1][0]
    res = verify_milp(net, prop(lo, up, [(np.array([1.0, 0, 0]), (yc[0] + out_lo[0]) / 2)]),
                      layer_bounds=broken, time_limit=5)
    assert res.status == "unknown", res.message
