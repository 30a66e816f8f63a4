"""Sampling soundness of the auto_LiRPA facade: sampled points in the box stay inside every bound."""
import numpy as np
import pytest

from nets import random_cnn, random_mlp
from vnnx.bounds import BoundComputer, compute_bounds
from vnnx.errors import VnnxError

TOL = 1e-9


def _check_sound(net, lo, hi, res, rng, n=4000, C=None):
    xs = rng.uniform(lo, hi, size=(n, lo.size))
    xs[:2] = lo, hi  # the corners too
    acts = net.forward(xs, return_all=True)
    y = acts[-1] if C is None else acts[-1] @ C.T
    assert (y >= res.lower - TOL).all() and (y <= res.upper + TOL).all()
    assert (res.lower <= res.upper + TOL).all()
    for k, (l, u) in res.pre_activation.items():
        assert (acts[k] >= l - TOL).all() and (acts[k] <= u + TOL).all(), f"layer {k}"


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mlp_bounds_sound(method, seed):
    rng = np.random.default_rng(seed)
    net = random_mlp(rng, (5, 12, 12, 4))
    lo = rng.uniform(-1, 1, 5)
    hi = lo + rng.uniform(0.05, 0.8, 5)
    res = compute_bounds(net, lo, hi, method)
    _check_sound(net, lo, hi, res, rng)
    assert set(res.pre_activation) == set(net.pre_activation_indices())


@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_cnn_bounds_sound_with_spec_matrix(method, rng):
    net = random_cnn(rng, maxpool=False)
    lo = rng.uniform(0, 0.7, 36)
    hi = lo + 0.3
    C = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    res = compute_bounds(net, lo, hi, method, C=C)
    assert res.lower.shape == (2,)
    _check_sound(net, lo, hi, res, rng, C=C)


@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_cnn_with_lirpa_maxpool_sound(method, rng):
    # auto_LiRPA's own MaxPool handles stride == kernel; its alpha-CROWN path crashes on torch 2.
    net = random_cnn(rng, maxpool=True)
    lo = rng.uniform(0, 0.7, 36)
    hi = lo + 0.3
    res = compute_bounds(net, lo, hi, method)
    _check_sound(net, lo, hi, res, rng)


def test_tighter_methods_are_tighter(rng):
    net = random_mlp(rng, (4, 16, 16, 3))
    lo, hi = -0.5 * np.ones(4), 0.5 * np.ones(4)
    engine = BoundComputer(net)
    ibp, crown, alpha = (engine.compute(lo, hi, m) for m in ("ibp", "crown", "alpha-crown"))
    width = lambda r: float(np.sum(r.upper - r.lower))  # noqa: E731
    assert width(alpha) <= width(crown) + 1e-6
    assert width(crown) < width(ibp)


def test_bad_box_is_an_error(rng):
    net = random_mlp(rng)
    engine = BoundComputer(net)
    with pytest.raises(VnnxError, match="expects 4"):
        engine.compute(np.zeros(3), np.ones(3))
    with pytest.raises(VnnxError, match="empty"):
        engine.compute(np.ones(4), np.zeros(4))
    with pytest.raises(VnnxError, match="unknown bound method"):
        engine.compute(np.zeros(4), np.ones(4), method="deeppoly")


def test_batched_lower_bounds_match_single_and_are_sound(rng):
    from vnnx.bounds import BoundComputer

    net = random_mlp(rng, (4, 12, 12, 3))
    bc = BoundComputer(net)
    lo = rng.uniform(-1, 0.5, (40, 4))
    hi = lo + rng.uniform(0.01, 0.5, (40, 4))
    C = np.array([[1.0, -1.0, 0.0], [0.0, 1.0, -1.0]])
    batch = bc.lower_bounds_batch(lo, hi, C)
    single = np.array([bc.compute(lo[i], hi[i], "crown", C).lower for i in range(40)])
    np.testing.assert_allclose(batch, single, rtol=1e-9, atol=1e-9)
    for i in range(40):
        y = net.forward(rng.uniform(lo[i], hi[i], size=(500, 4)))
        assert np.all(y @ C.T >= batch[i] - 1e-9)


def test_alpha_crown_stops_at_its_deadline_with_sound_bounds(capsys):
    """A deadline already past: α-CROWN stops after its first step (the bounds of a one-step
    run, looser than a 30-step run), the bounds stay sound, and auto_LiRPA's "all verified"
    message does not reach stdout."""
    import time

    rng = np.random.default_rng(3)
    net = random_mlp(rng, (5, 24, 24, 3))
    x0 = rng.uniform(0, 1, 5)
    lo, hi = x0 - 0.3, x0 + 0.3
    stopped = BoundComputer(net, alpha_iterations=30).compute(lo, hi, "alpha-crown", deadline=time.monotonic())
    one = BoundComputer(net, alpha_iterations=1).compute(lo, hi, "alpha-crown")
    full = BoundComputer(net, alpha_iterations=30).compute(lo, hi, "alpha-crown")
    np.testing.assert_allclose(stopped.lower, one.lower, rtol=1e-9, atol=1e-12)
    assert (full.lower > stopped.lower + 1e-6).any()
    y = net.forward(rng.uniform(lo, hi, size=(4000, 5)))
    assert (y >= stopped.lower - 1e-9).all() and (y <= stopped.upper + 1e-9).all()
    assert "verified" not in capsys.readouterr().out
