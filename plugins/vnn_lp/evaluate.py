"""Accuracy and verified robustness before and after, and the paper's Figure 1 plot.

A test sample counts as verified at radius δ when it is classified correctly and every
``y_label − y_j`` (j ≠ label) is proven positive over the L∞ box of radius δ around it,
clipped to the input range: with CROWN/α-CROWN bounds of the graph engine
(:class:`vnnx.engine.ChainBounds`) or exactly with the MILP (:func:`vnnx.milp.verify_milp`, under a time limit; a timeout counts as not
verified). CROWN plays the part of the paper's DeepPoly (both back-substitute linear bounds).
"""
from __future__ import annotations

import os
import time
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from vnnx.errors import ConfigError
from vnnx.network import Network

METHODS = ("crown", "alpha-crown", "milp")


def accuracy(network: Network, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x`` (N, n_inputs) classified as ``y`` (N,) by a float64 forward pass."""
    if len(x) == 0:
        return float("nan")
    pred = network.forward(np.asarray(x, dtype=np.float64).reshape(len(x), -1)).argmax(axis=1)
    return float(np.mean(pred == np.asarray(y)))


def _spec_matrix(label: int, n_outputs: int) -> np.ndarray:
    C = -np.eye(n_outputs)
    C[:, label] += 1.0
    return np.delete(C, label, axis=0)


def verified_robustness(network: Network, x: np.ndarray, y: np.ndarray, deltas: Sequence[float],
                        method: str = "crown", time_limit: Optional[float] = None,
                        clip: Optional[tuple[float, float]] = (0.0, 1.0),
                        relaxations: Optional[Mapping] = None, progress: bool = False,
                        backend: str = "highs") -> dict:
    """Verified robustness of ``network`` on ``x`` (N, n_inputs) with labels ``y`` (N,).

    Args:
        deltas: L∞ radii, in model-input units.
        method: 'crown' | 'alpha-crown' | 'milp'.
        time_limit: seconds per sample and radius (MILP only).
        clip: valid input range the box is intersected with (None: no clipping).
        relaxations: the graph engine's operator relaxations (operator kind -> relaxation, e.g.
            ``{"MaxPool": CapmMaxPool()}`` from the CAPM plugin); None: the engine's own.

    Returns:
        ``{delta: {'verified': fraction of all N, 'n_verified', 'n', 'seconds': mean seconds
        per correctly classified sample, 'timeouts': MILP timeouts}}`` (keys are floats).
    """
    if method not in METHODS:
        raise ConfigError(f"vnn-lp: verification method {method!r} is not one of {', '.join(METHODS)}")
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y).astype(np.int64)
    correct = network.forward(x).argmax(axis=1) == y if len(x) else np.zeros(0, bool)
    engine = None
    if method != "milp":
        from vnnx.engine import ChainBounds

        engine = ChainBounds(network, relaxations)
    out = {}
    jobs = [(float(d), i) for d in deltas for i in np.flatnonzero(correct)]
    if progress:
        from tqdm.auto import tqdm

        jobs = tqdm(jobs, desc=f"verify ({method})", leave=False)
    done: dict[float, list] = {float(d): [] for d in deltas}
    for delta, i in jobs:
        lo, hi = x[i] - delta, x[i] + delta
        if clip is not None:
            lo, hi = np.maximum(lo, clip[0]), np.minimum(hi, clip[1])
        t0 = time.perf_counter()
        if engine is not None:
            res = engine.compute(lo, hi, method, _spec_matrix(int(y[i]), network.n_outputs))
            ok, timeout = bool(np.all(res.lower > 0)), False
        else:
            from vnnx.io.vnnlib import Property
            from vnnx.milp import verify_milp

            C = _spec_matrix(int(y[i]), network.n_outputs)
            prop = Property(lo, hi, [(C[j:j + 1], np.zeros(1)) for j in range(len(C))])
            res = verify_milp(network, prop, time_limit=time_limit, backend=backend)
            ok, timeout = res.status == "unsat", res.status == "timeout"
        done[delta].append((ok, timeout, time.perf_counter() - t0))
    for d in deltas:
        rows = done[float(d)]
        n_ok = sum(r[0] for r in rows)
        out[float(d)] = {"verified": n_ok / max(len(x), 1), "n_verified": int(n_ok), "n": int(len(x)),
                         "seconds": float(np.mean([r[2] for r in rows])) if rows else 0.0,
                         "timeouts": int(sum(r[1] for r in rows))}
    return out


def evaluate(networks: Mapping[str, Network], x_test: np.ndarray, y_test: np.ndarray,
             deltas: Sequence[float] = (), methods: Sequence[str] = ("crown",),
             milp_time_limit: Optional[float] = None, clip: Optional[tuple[float, float]] = (0.0, 1.0),
             relaxations: Optional[Mapping] = None, progress: bool = False) -> dict:
    """Accuracy and verified robustness of several networks on one test set.

    Returns ``{'accuracy': {name: acc}, 'robustness': {name: {method: {delta: {...}}}},
    'n_test': N}`` (see :func:`verified_robustness`).
    """
    result = {"n_test": int(len(x_test)), "accuracy": {}, "robustness": {}}
    for name, net in networks.items():
        result["accuracy"][name] = accuracy(net, x_test, y_test)
        if deltas:
            result["robustness"][name] = {
                m: verified_robustness(net, x_test, y_test, deltas, m, milp_time_limit, clip, relaxations,
                                      progress)
                for m in methods}
    return result


def plot_robustness(robustness: Mapping, path: Union[str, os.PathLike], title: str = "") -> None:
    """Verified robustness (%) against δ, one line per network and method (the paper's
    Figure 1). ``robustness``: as in :func:`evaluate`. Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vnnx.util import atomic_path

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    styles = {"original": "o-", "vnn": "s-", "mbp": "^--"}
    for name, by_method in robustness.items():
        for method, by_delta in by_method.items():
            ds = sorted(float(d) for d in by_delta)
            vals = [100.0 * by_delta[d]["verified"] if d in by_delta else 100.0 * by_delta[str(d)]["verified"]
                    for d in ds]
            label = name if len(by_method) == 1 else f"{name} ({method})"
            ax.plot(ds, vals, styles.get(name.lower(), "o-"), label=label)
    ax.set_xlabel("δ (L∞ radius)")
    ax.set_ylabel("verified robustness (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
