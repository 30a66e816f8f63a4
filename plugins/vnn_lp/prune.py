"""Magnitude-based pruning (MBP), the paper's baseline: zero each layer's smallest weights.

No guarantee of any kind: that is the point of the comparison.
"""
from __future__ import annotations

from typing import Mapping, Optional, Union

import numpy as np

from vnnx.errors import ConfigError
from vnnx.network import Conv, Dense, Network

from .patterns import split_segments


def prune_magnitude(network: Network, rate: Optional[float] = None, layers: Union[str, int] = "all",
                    keep: Optional[Mapping[int, int]] = None) -> Network:
    """Zero the smallest-magnitude weights of each selected affine layer (biases untouched).

    Args:
        network: plain view.
        rate: fraction in [0, 1] of each layer's weights set to zero (ties broken by position).
        layers: 'all' or k (the first k affine layers).
        keep: instead of ``rate``, {layer index: number of non-zero weights AND biases to keep},
            e.g. the counts a VNN run reached, so both methods are compared at equal sparsity;
            the layer's non-zero biases count against it.

    Returns:
        A new network; the input is not modified.

    Example: ``prune_magnitude(net, rate=0.5)`` halves every layer's non-zero weights.
    """
    if (rate is None) == (keep is None):
        raise ConfigError("prune-magnitude: give exactly one of rate and keep")
    if rate is not None and not 0.0 <= rate <= 1.0:
        raise ConfigError(f"prune-magnitude: rate must be in [0, 1], got {rate}")
    _, segments = split_segments(network)
    if layers == "all":
        chosen = [s.affine for s in segments]
    else:
        k = int(layers)
        if not 1 <= k <= len(segments):
            raise ConfigError(f"prune-magnitude: layers must be 'all' or 1..{len(segments)}, got {layers}")
        chosen = [s.affine for s in segments[:k]]
    out = list(network.layers)
    for k in chosen:
        layer = out[k]
        w = layer.weight.ravel().copy()
        if keep is not None:
            if k not in keep:
                continue
            n_keep = max(0, int(keep[k]) - int(np.count_nonzero(layer.bias)))
            n_zero = w.size - min(n_keep, w.size)
        else:
            n_zero = int(round(rate * w.size))
        if n_zero > 0:
            order = np.argsort(np.abs(w), kind="stable")
            w[order[:n_zero]] = 0.0
        w = w.reshape(layer.weight.shape)
        if isinstance(layer, Dense):
            out[k] = Dense(w, layer.bias.copy(), layer.in_shape, layer.out_shape)
        elif isinstance(layer, Conv):
            out[k] = Conv(w, layer.bias.copy(), layer.in_shape, layer.out_shape, layer.stride, layer.padding,
                          layer.dilation, layer.groups)
    return Network(network.input_shape, network.output_shape, out)
