"""Network architectures that vnnx trains. All take (N, 1, 28, 28) MNIST-shaped inputs in [0, 1]
unless stated, and use only ops the plain view (:mod:`vnnx.network`) and auto_LiRPA handle."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from vnnx.errors import ConfigError


def mlp(hidden: tuple[int, ...] = (50, 50), n_inputs: int = 784, n_classes: int = 10) -> nn.Sequential:
    """ERAN-style fully connected ReLU net: Flatten, then Linear+ReLU per hidden width, then Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = n_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def mnist_cnn(filters: tuple[int, int] = (16, 32), hidden: int = 100, kernel: int = 5,
              input_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10) -> nn.Sequential:
    """The MNIST CNN of Xiao et al. (ICLR 2019, Section 4): conv 16 5x5 stride 2 -> conv 32 5x5
    stride 2 -> FC 100 -> FC 10, ReLU after every hidden layer. 'Same'-style padding
    (``kernel // 2``), so 28x28 -> 14x14 -> 7x7 as in the paper's code."""
    c, h, w = input_shape
    pad = kernel // 2
    for _ in range(2):
        h, w = _conv_out(h, kernel, 2, pad), _conv_out(w, kernel, 2, pad)
    return nn.Sequential(
        nn.Conv2d(c, filters[0], kernel, stride=2, padding=pad), nn.ReLU(),
        nn.Conv2d(filters[0], filters[1], kernel, stride=2, padding=pad), nn.ReLU(),
        nn.Flatten(), nn.Linear(filters[1] * h * w, hidden), nn.ReLU(),
        nn.Linear(hidden, n_classes))


def conv_small(filters: tuple[int, int] = (16, 32), hidden: int = 100,
               input_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10) -> nn.Sequential:
    """ERAN's convSmall: conv 16 4x4 stride 2 -> conv 32 4x4 stride 2 -> FC 100 -> FC 10, no padding."""
    c, h, w = input_shape
    for _ in range(2):
        h, w = _conv_out(h, 4, 2, 0), _conv_out(w, 4, 2, 0)
    return nn.Sequential(
        nn.Conv2d(c, filters[0], 4, stride=2), nn.ReLU(),
        nn.Conv2d(filters[0], filters[1], 4, stride=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(filters[1] * h * w, hidden), nn.ReLU(),
        nn.Linear(hidden, n_classes))


def conv_maxpool(channels: tuple[int, ...] = (16, 32), hidden: int = 100, kernel: int = 3,
                 pool_kernel: int = 2, pool_stride: int = 2,
                 input_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10) -> nn.Sequential:
    """convSmall/convMed-like CNN with max pooling: per entry of ``channels``, conv ``kernel`` x
    ``kernel`` (stride 1, 'same' padding) -> ReLU -> MaxPool(``pool_kernel``, ``pool_stride``);
    then FC ``hidden`` -> ReLU -> FC ``n_classes``. With ``pool_stride < pool_kernel`` the pooling
    windows overlap (the case the CAPM bound operator exists for)."""
    c, h, w = input_shape
    pad = kernel // 2
    layers: list[nn.Module] = []
    for out_c in channels:
        layers += [nn.Conv2d(c, out_c, kernel, stride=1, padding=pad), nn.ReLU(),
                   nn.MaxPool2d(pool_kernel, pool_stride)]
        c = out_c
        h, w = _conv_out(h, kernel, 1, pad), _conv_out(w, kernel, 1, pad)
        h, w = _conv_out(h, pool_kernel, pool_stride, 0), _conv_out(w, pool_kernel, pool_stride, 0)
        if h < 1 or w < 1:
            raise ConfigError(f"conv_maxpool: input {input_shape} is too small for {len(channels)} pooling stages")
    layers += [nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU(), nn.Linear(hidden, n_classes)]
    return nn.Sequential(*layers)


def conv_maxpool_overlap(channels: tuple[int, ...] = (16, 32), hidden: int = 100,
                         input_shape: tuple[int, int, int] = (1, 28, 28), n_classes: int = 10) -> nn.Sequential:
    """:func:`conv_maxpool` with overlapping 3x3 stride-2 pooling windows (stride < kernel)."""
    return conv_maxpool(channels, hidden, kernel=3, pool_kernel=3, pool_stride=2,
                        input_shape=input_shape, n_classes=n_classes)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
    "mnist-cnn": mnist_cnn,
    "conv-small": conv_small,
    "conv-maxpool": conv_maxpool,
    "conv-maxpool-overlap": conv_maxpool_overlap,
}


def build(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture by name (a data table, not an if/elif chain).

    Raises ConfigError for an unknown name or keyword arguments the factory does not take."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    params = inspect.signature(factory).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"architecture {name!r} takes no argument(s) {', '.join(unknown)}; "
                          f"it takes: {', '.join(params)}")
    # YAML gives lists where the factories expect tuples.
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return factory(**kwargs)
