"""Post-training passes of Xiao et al. (ICLR 2019, Section 3.3): small-weight and ReLU pruning.

Each pass takes a plain :class:`vnnx.network.Network` and returns ``(network, report)``; the
input network is never modified. ONNX in, ONNX out is ``load_onnx`` -> ``to_network`` -> pass
-> ``network_to_onnx``; a trained torch model goes through :func:`.chain.sequential_to_network`.

ReLU pruning changes the function (that is the point: a ReLU active on 90% of the perturbed
training inputs is declared always active); how it is written back into a chain of layers:

* a whole ReLU layer whose neurons all become identity or zero disappears: its two affine
  neighbours fold into one Dense layer ``W_next · diag(keep) · W_prev`` (exact);
* otherwise zero neurons are deleted (rows of the layer before, columns of the layer after),
  and each identity neuron ``z`` stays a ReLU of ``z + s`` with ``s = max(0, −l)``, ``l`` a
  lower bound of ``z`` over the declared input domain (the graph engine's interval bounds),
  while the next layer's bias takes ``−W_next[:, i] · s``. Over the whole input domain ``relu(z + s) − s = z``, so the
  neuron is the identity there, and any verifier's bounds see it as stably active (no binary).
  A chain has no skip connection, so this is how "identity, folded into the next affine
  layer" is spelled without one. Conv layers next to a rewritten ReLU become Dense.

ReLUs that feed a MaxPool (or end the network) are left alone and reported as skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np

from vnnx.errors import ConfigError, ShapeMismatchError
from vnnx.network import AFFINE, Dense, Network, Relu


@dataclass
class PassReport:
    """What a pass did. ``layers``: one dict per layer it looked at (index in the *input*
    network and counts); ``modified``: whether the output differs from the input."""

    name: str
    modified: bool = False
    layers: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"pass": self.name, "modified": self.modified, "layers": self.layers}


# ------------------------------------------------------------------------- small weights
def prune_small_weights(network: Network, threshold: float = 1e-3) -> tuple[Network, PassReport]:
    """Set every weight with ``|w| < threshold`` to 0 in Dense and Conv layers (biases kept,
    as in the paper's code).

    Returns ``(network, report)``; report rows: ``layer, kind, n_weights, n_zeroed, n_nonzero``.
    Example: ``net2, rep = prune_small_weights(net, 1e-3)``.
    """
    if threshold < 0:
        raise ConfigError(f"small-weight threshold must be >= 0, got {threshold}")
    report = PassReport("prune-small-weights")
    layers = []
    for k, layer in enumerate(network.layers):
        if isinstance(layer, AFFINE):
            w = layer.weight
            small = (np.abs(w) < threshold) & (w != 0)
            new_w = np.where(small, 0.0, w)
            report.layers.append({"layer": k, "kind": type(layer).__name__, "n_weights": int(w.size),
                                  "n_zeroed": int(small.sum()), "n_nonzero": int(np.count_nonzero(new_w))})
            report.modified |= bool(small.any())
            layer = replace(layer, weight=new_w)
        layers.append(layer)
    return Network(network.input_shape, network.output_shape, layers), report


def prune_small_weights_torch(model, threshold: float = 1e-3) -> list[dict]:
    """In-place variant on a torch module: zero ``|w| < threshold`` in every Linear/Conv2d
    weight. Returns one row per layer (``n_weights, n_zeroed``)."""
    import torch
    from torch import nn

    rows = []
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                small = (m.weight.abs() < threshold) & (m.weight != 0)
                m.weight[small] = 0.0
                rows.append({"module": name, "n_weights": int(m.weight.numel()), "n_zeroed": int(small.sum())})
    return rows


# ---------------------------------------------------------------------------- ReLU pruning
def activation_frequency(network: Network, x: np.ndarray) -> dict[int, np.ndarray]:
    """For each ReLU layer index k, the fraction of samples on which each neuron is active
    (pre-activation > 0). ``x``: (N, n_inputs) in model-input space."""
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    outs = network.forward(x, return_all=True)
    freq = {}
    for k, layer in enumerate(network.layers):
        if isinstance(layer, Relu):
            pre = outs[k - 1] if k > 0 else x
            freq[k] = (pre > 0).mean(axis=0)
    return freq


def _as_dense(layer) -> Dense:
    if isinstance(layer, Dense):
        return layer
    w, b = layer.matrix()
    return Dense(np.asarray(w, dtype=np.float64), np.asarray(b, dtype=np.float64),
                 (int(np.prod(layer.in_shape)),), (int(np.prod(layer.out_shape)),))


def _box_lower_bounds(layers: Sequence, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Interval (naive IA) lower bound of the output of ``layers`` (a prefix ending in an affine
    layer) over the box ``lo <= x <= hi``, by the graph engine's interval pass."""
    from vnnx.engine import ChainBounds

    prefix = Network((1, lo.size), (1, int(np.prod(layers[-1].out_shape))), list(layers))
    return ChainBounds(prefix).layer_bounds(lo, hi, "ibp")[-1][0]


def prune_relus(network: Network, x: np.ndarray, *, active_threshold: float = 0.9,
                inactive_threshold: float = 0.1,
                input_range: tuple[float, float] = (0.0, 1.0)) -> tuple[Network, PassReport]:
    """ReLU pruning: a ReLU active (pre-activation > 0) on at least ``active_threshold`` of the
    samples ``x`` becomes the identity; one active on at most ``inactive_threshold`` becomes 0.

    ``x``: (N, n_inputs), the paper uses PGD-perturbed training inputs. ``input_range``: the
    domain every input coordinate lives in (MNIST pixels: [0, 1]); identity neurons are exact
    over that whole box (see the module docstring). Report rows per ReLU layer: ``layer,
    n_neurons, n_identity, n_zero, n_kept, action`` (``merged`` | ``rewritten`` | ``unchanged``
    | ``skipped: reason``).

    Example: ``net2, rep = prune_relus(net, x_adv, active_threshold=0.9, inactive_threshold=0.1)``.
    """
    if not 0.0 <= inactive_threshold < active_threshold <= 1.0:
        raise ConfigError(f"ReLU pruning thresholds must satisfy 0 <= inactive ({inactive_threshold}) "
                          f"< active ({active_threshold}) <= 1")
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    if x.shape[1] != network.n_inputs or len(x) == 0:
        raise ShapeMismatchError(f"ReLU pruning data has shape {x.shape}; the network takes "
                                 f"{network.n_inputs} inputs per sample")
    lo_in = np.full(network.n_inputs, float(input_range[0]))
    hi_in = np.full(network.n_inputs, float(input_range[1]))
    report = PassReport("prune-relus")
    freq = activation_frequency(network, x)
    layers = list(network.layers)
    # Position of each original layer in the evolving list (merges remove entries).
    position = list(range(len(layers)))
    for k in sorted(freq):
        f = freq[k]
        identity = f >= active_threshold
        zero = f <= inactive_threshold
        row = {"layer": k, "n_neurons": int(f.size), "n_identity": int(identity.sum()),
               "n_zero": int(zero.sum()), "n_kept": int((~identity & ~zero).sum())}
        report.layers.append(row)
        i = position[k]
        prev = layers[i - 1] if i > 0 else None
        nxt = layers[i + 1] if i + 1 < len(layers) else None
        if not isinstance(prev, AFFINE) or not isinstance(nxt, AFFINE):
            row["action"] = "skipped: " + ("not preceded by an affine layer" if not isinstance(prev, AFFINE)
                                           else "not followed by an affine layer")
            row["n_identity"] = row["n_zero"] = 0
            row["n_kept"] = int(f.size)
            continue
        if not (identity.any() or zero.any()):
            row["action"] = "unchanged"
            continue
        a, b = _as_dense(prev), _as_dense(nxt)
        if bool(np.all(identity | zero)):
            keep = identity.astype(np.float64)
            w = b.weight @ (keep[:, None] * a.weight)
            bias = b.weight @ (keep * a.bias) + b.bias
            merged = Dense(w, bias, a.in_shape, b.out_shape)
            layers[i - 1:i + 2] = [merged]
            position = [p if p < i - 1 else (i - 1 if p <= i + 1 else p - 2) for p in position]
            row["action"] = "merged"
        else:
            lower = _box_lower_bounds(layers[:i - 1] + [a], lo_in, hi_in)
            shift = np.where(identity, np.maximum(0.0, -lower), 0.0)
            a_bias = a.bias + shift
            b_bias = b.bias - b.weight @ shift
            keep = ~zero
            n = int(keep.sum())
            new_a = Dense(a.weight[keep], a_bias[keep], a.in_shape, (n,))
            new_b = Dense(b.weight[:, keep], b_bias, (n,), b.out_shape)
            layers[i - 1:i + 2] = [new_a, Relu((n,)), new_b]
            row["action"] = "rewritten"
            row["max_shift"] = float(shift.max(initial=0.0))
        report.modified = True
    return Network(network.input_shape, network.output_shape, layers), report


def adversarial_inputs(model, x: np.ndarray, y: np.ndarray, epsilon: float, *, steps: int = 8,
                       batch_size: int = 256, seed: int = 0,
                       clip: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """PGD-perturbed copies of ``x`` (the paper counts activations on these). ``model``: a torch
    module on ``x``'s shape; returns an array of ``x``'s shape (float32)."""
    import torch

    from vnnx.attack import pgd_linf

    gen = torch.Generator().manual_seed(seed)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    model.eval()
    out = [pgd_linf(model, xt[i:i + batch_size], yt[i:i + batch_size], epsilon, steps=steps,
                    clip=clip, generator=gen) for i in range(0, len(xt), batch_size)]
    return torch.cat(out).numpy()

