"""Tiny seeded networks in the plain view, for unit properties."""
from __future__ import annotations

import numpy as np

from vnnx.network import Conv, Dense, MaxPool, Network, Relu


def random_mlp(rng: np.random.Generator, sizes=(4, 8, 8, 3), final_relu: bool = False) -> Network:
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Dense(rng.normal(size=(b, a)) / np.sqrt(a), rng.normal(size=b) * 0.3, (a,), (b,)))
        if i < len(sizes) - 2 or final_relu:
            layers.append(Relu((b,)))
    return Network((1, sizes[0]), (1, sizes[-1]), layers)


def random_cnn(rng: np.random.Generator, maxpool: bool = True, pool_kernel=(2, 2), pool_stride=(2, 2),
               pool_padding=(0, 0, 0, 0), relu_before_pool: bool = True) -> Network:
    """Conv(1->3, 3x3) on 1x6x6 [-> ReLU] [-> MaxPool] -> Dense 8 -> ReLU -> Dense 3."""
    conv = Conv(rng.normal(size=(3, 1, 3, 3)) / 3, rng.normal(size=3) * 0.3, (1, 6, 6), (3, 4, 4))
    layers = [conv]
    shape = (3, 4, 4)
    if relu_before_pool:
        layers.append(Relu((48,)))
    if maxpool:
        pool = MaxPool(shape, pool_kernel, pool_stride, pool_padding)
        layers.append(pool)
        shape = pool.out_shape
    n = int(np.prod(shape))
    layers += [Dense(rng.normal(size=(8, n)) / np.sqrt(n), rng.normal(size=8) * 0.3, (n,), (8,)), Relu((8,)),
               Dense(rng.normal(size=(3, 8)) / np.sqrt(8), rng.normal(size=3) * 0.3, (8,), (3,))]
    return Network((1, 1, 6, 6), (1, 3), layers)
