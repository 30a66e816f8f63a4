"""Network architectures that vnnx trains. All take (N, 1, 28, 28) MNIST-shaped inputs in [0, 1]
unless stated, and use only ops the plain view (:mod:`vnnx.network`) and auto_LiRPA handle."""
from __future__ import annotations

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


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": mlp,
}


def build(name: str, **kwargs) -> nn.Module:
    """Build a registered architecture by name (a data table, not an if/elif chain)."""
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    return factory(**kwargs)
