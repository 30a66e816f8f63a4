"""How verification-friendly a network is (Xiao et al., ICLR 2019, Tables 1, 4 and 7).

:func:`friendliness_report` counts, per ReLU layer and averaged over samples, the unstable
ReLUs (``l < 0 < u``) over each sample's ε-box under a chosen bound method, together with the
bound widths, the MaxPool binaries, the number of MILP binaries these imply (Tjeng et al.:
one per unstable ReLU, one per possible winner of a MaxPool window that has several), and
the weight sparsity. The numbers are ordinary floating point, meant for comparing networks;
the verdicts themselves come from :mod:`vnnx.milp`.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch

from vnnx.errors import ConfigError, VnnxError
from vnnx.network import AFFINE, MaxPool, Network, Relu

from .bounds import input_box, maxpool_binaries, step_bounds
from .chain import PoolStep, chain_from_network

#: report methods: naive IA ('ibp'), improved IA (Appendix C, the plugin's own estimate), CROWN and
#: alpha-CROWN (the graph engine, :class:`vnnx.engine.ChainBounds`), LP-tightened (:mod:`vnnx.graph_lp`).
REPORT_METHODS = ("ibp", "improved-ia", "crown", "alpha-crown", "lp")

LayerBounds = dict[int, tuple[np.ndarray, np.ndarray]]


def _layer_bounds_ia(network: Network, lo: np.ndarray, hi: np.ndarray, method: str,
                     chunk_size: int) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per sample, one (lower, upper) per layer output, by the plugin's naive or improved IA
    (float64): the estimates the RS loss trains with (:mod:`.bounds`)."""
    chain = chain_from_network(network)
    with torch.no_grad():
        outs = step_bounds(chain, torch.from_numpy(lo), torch.from_numpy(hi),
                           "naive" if method == "ibp" else "improved", chunk_size)
    return [[(l[i].numpy(), u[i].numpy()) for l, u in outs] for i in range(len(lo))]


def _per_sample(chain, bounds: list, i: int) -> LayerBounds:
    """Sample ``i``'s bounds of the nodes the activations read, keyed by the layer before them."""
    return {k: (bounds[node][0][i].reshape(-1).numpy(), bounds[node][1][i].reshape(-1).numpy())
            for k, node in chain.pre_nodes.items()}


def _layer_bounds_engine(network: Network, lo: np.ndarray, hi: np.ndarray, method: str) -> list[LayerBounds]:
    """Per sample, ``{k: (lower, upper)}`` of the output of each layer k that feeds a ReLU or
    MaxPool, by the graph engine: IBP (all samples in one batch), CROWN, or alpha-CROWN (the
    intermediate bounds' lower slopes optimised too)."""
    from vnnx.engine import ChainBounds

    chain = ChainBounds(network)
    lo_t, hi_t = torch.from_numpy(lo), torch.from_numpy(hi)
    if method == "ibp":
        bounds = chain.engine.intermediate(lo_t, hi_t, "ibp")
        return [_per_sample(chain, bounds, i) for i in range(len(lo))]
    out = []
    for i in range(len(lo)):
        bounds = chain.engine.intermediate(lo_t[i:i + 1], hi_t[i:i + 1], "crown", optimise=method == "alpha-crown")
        out.append(_per_sample(chain, bounds, 0))
    return out


def _layer_bounds_lp(network: Network, lo: np.ndarray, hi: np.ndarray,
                     time_limit: Optional[float]) -> tuple[list[LayerBounds], int]:
    """LP-tightened bounds per sample (:func:`vnnx.graph_lp.tighten_bounds_lp`, starting from
    CROWN) and how many samples ran out of ``time_limit`` (their bounds are sound but only
    partly tightened)."""
    from vnnx.engine import ChainBounds
    from vnnx.graph_lp import tighten_bounds_lp

    chain = ChainBounds(network)
    out, timed_out = [], 0
    for i in range(len(lo)):
        start = time.monotonic()
        bounds = tighten_bounds_lp(chain.graph, lo[i], hi[i], time_limit=time_limit)
        out.append({k: bounds[node] for k, node in chain.pre_nodes.items()})
        # tighten_bounds_lp returns its (sound, partly tightened) bounds when time runs out.
        timed_out += time_limit is not None and time.monotonic() - start >= 0.98 * time_limit
    return out, timed_out


def friendliness_report(network: Network, x: np.ndarray, epsilon: float, method: str = "improved-ia", *,
                        clip: Optional[tuple[float, float]] = (0.0, 1.0), chunk_size: int = 8,
                        lp_time_limit: Optional[float] = None) -> dict:
    """Unstable ReLUs, bound widths, MILP binaries and sparsity of ``network`` around ``x``.

    ``x``: (N, ...) samples in model-input space (flattened to the network's inputs);
    ``epsilon``: L∞ radius, boxes clipped to ``clip``. ``method``: 'ibp' (naive IA, the graph
    engine's interval pass), 'improved-ia' (Appendix C, the plugin's own estimate, as the RS
    loss computes it), 'crown' / 'alpha-crown' (the graph engine, :class:`vnnx.engine.ChainBounds`)
    or 'lp' (CROWN, then LP tightening of every unstable neuron with
    :func:`vnnx.graph_lp.tighten_bounds_lp`, slow; ``lp_time_limit`` seconds per sample). Returns a JSON-ready dict; per-sample counts are
    averaged over the N samples.

    Example: ``friendliness_report(net, x_eval[:100], 0.1, "improved-ia")["milp_binaries"]``.
    """
    if method not in REPORT_METHODS:
        raise ConfigError(f"unknown report method {method!r}; choose one of {', '.join(REPORT_METHODS)}")
    x = np.asarray(x, dtype=np.float64)
    if len(x) == 0:
        raise ConfigError("report: no samples")
    if int(np.prod(x.shape[1:])) != network.n_inputs:
        raise ConfigError(f"report: samples have {int(np.prod(x.shape[1:]))} values, the network takes "
                          f"{network.n_inputs}")
    if not network.is_piecewise_linear:
        raise ConfigError("report: the network has activations other than ReLU and MaxPool")
    start = time.monotonic()
    lo_t, hi_t = input_box(torch.from_numpy(x), float(epsilon), clip)
    lo, hi = lo_t.numpy(), hi_t.numpy()
    n = len(x)
    relu_layers = [k for k, layer in enumerate(network.layers) if isinstance(layer, Relu)]
    pool_layers = [k for k, layer in enumerate(network.layers) if isinstance(layer, MaxPool)]

    def pre_of(sample_bounds, k: int, i: int):
        if k == 0:
            return lo[i], hi[i]
        b = sample_bounds.get(k - 1) if isinstance(sample_bounds, dict) else sample_bounds[k - 1]
        if b is None:
            raise VnnxError(f"report: no bounds for layer {k - 1} (feeding layer {k})")
        return np.asarray(b[0]).ravel(), np.asarray(b[1]).ravel()

    lp_timeouts = None
    if method == "improved-ia":
        per_sample = _layer_bounds_ia(network, lo, hi, method, chunk_size)
    elif method == "lp":
        per_sample, lp_timeouts = _layer_bounds_lp(network, lo, hi, lp_time_limit)
    else:
        per_sample = _layer_bounds_engine(network, lo, hi, method)

    relu_rows = []
    widths_all = []
    unstable_total = np.zeros(n)
    for k in relu_layers:
        unstable = np.zeros(n)
        active = np.zeros(n)
        inactive = np.zeros(n)
        widths = []
        for i in range(n):
            l, u = pre_of(per_sample[i], k, i)
            unstable[i] = np.count_nonzero((l < 0) & (u > 0))
            active[i] = np.count_nonzero((l >= 0) & (u > 0))
            inactive[i] = np.count_nonzero(u <= 0)
            widths.append(u - l)
        w = np.concatenate(widths)
        widths_all.append(w)
        unstable_total += unstable
        relu_rows.append({"layer": k, "n_neurons": int(np.prod(network.layers[k].shape)),
                          "unstable": float(unstable.mean()), "stably_active": float(active.mean()),
                          "stably_inactive": float(inactive.mean()), "mean_width": float(w.mean())})
    pool_rows = []
    pool_total = np.zeros(n)
    for k in pool_layers:
        step = PoolStep(network.layers[k])
        counts = np.zeros(n)
        for i in range(n):
            l, u = pre_of(per_sample[i], k, i)
            counts[i] = float(maxpool_binaries(step, torch.from_numpy(l)[None], torch.from_numpy(u)[None])[0])
        pool_total += counts
        pool_rows.append({"layer": k, "n_windows": int(np.prod(network.layers[k].out_shape)),
                          "binaries": float(counts.mean())})
    weight_rows = []
    n_w = n_zero = 0
    for k, layer in enumerate(network.layers):
        if isinstance(layer, AFFINE):
            size, zeros = int(layer.weight.size), int(np.count_nonzero(layer.weight == 0))
            n_w, n_zero = n_w + size, n_zero + zeros
            weight_rows.append({"layer": k, "kind": type(layer).__name__, "n_weights": size,
                                "n_zero": zeros, "sparsity": zeros / max(size, 1)})
    return {
        "method": method, "epsilon": float(epsilon), "n_samples": n,
        "clip": None if clip is None else [float(clip[0]), float(clip[1])],
        "relu_layers": relu_rows, "maxpool_layers": pool_rows,
        "unstable_total": float(unstable_total.mean()),
        "milp_binaries": float((unstable_total + pool_total).mean()),
        "mean_bound_width": float(np.concatenate(widths_all).mean()) if widths_all else 0.0,
        "weights": weight_rows, "weight_sparsity": n_zero / max(n_w, 1),
        "seconds": time.monotonic() - start,
        **({} if lp_timeouts is None else {"lp_timeouts": int(lp_timeouts)}),
    }


def format_report_table(report: dict) -> str:
    """The report as a plain-text table (one row per ReLU / MaxPool layer, then totals)."""
    lines = [f"method {report['method']}, epsilon {report['epsilon']:g}, {report['n_samples']} samples "
             "(per-sample means)",
             f"{'layer':>5} {'kind':8} {'neurons':>8} {'unstable':>9} {'active':>9} {'inactive':>9} {'width':>9}"]
    for r in report["relu_layers"]:
        lines.append(f"{r['layer']:>5} {'ReLU':8} {r['n_neurons']:>8} {r['unstable']:>9.2f} "
                     f"{r['stably_active']:>9.2f} {r['stably_inactive']:>9.2f} {r['mean_width']:>9.4f}")
    for r in report["maxpool_layers"]:
        lines.append(f"{r['layer']:>5} {'MaxPool':8} {r['n_windows']:>8} {r['binaries']:>9.2f} (binaries)")
    lines.append(f"unstable ReLUs {report['unstable_total']:.2f}, MILP binaries {report['milp_binaries']:.2f}, "
                 f"mean bound width {report['mean_bound_width']:.4f}")
    sparsity = ", ".join(f"L{r['layer']} {100 * r['sparsity']:.1f}%" for r in report["weights"])
    if report.get("lp_timeouts"):
        lines.append(f"LP tightening ran out of time on {report['lp_timeouts']} of {report['n_samples']} samples "
                     "(their counts are upper bounds)")
    lines.append(f"zero weights {100 * report['weight_sparsity']:.1f}% ({sparsity})")
    return "\n".join(lines)
