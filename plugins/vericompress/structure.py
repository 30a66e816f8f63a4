"""The structured view of a backbone: which layers have prunable *units* (FC nodes, conv
filters) and how each unit's output is consumed by the next layer.

A backbone is an ``nn.Sequential`` of ``Conv2d``, ``Linear``, ``ReLU`` and ``Flatten`` (what
:mod:`vnnx.architectures` builds). Unit ``u`` of layer ``l`` is row ``u`` of a Linear weight
(a node) or output channel ``u`` of a Conv2d weight (a filter, the paper's "kernel"); in layer
``l+1`` it owns input column ``u`` (Linear), input channel ``u`` (Conv2d), or, after a Flatten,
the block of ``spatial`` columns ``u*spatial .. (u+1)*spatial - 1``. The output layer's units
(the classes) are never pruned.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from vnnx.errors import ConfigError

#: Modules that carry no parameters and map unit ``u`` to unit ``u`` (Flatten: to a block).
_PASS_THROUGH = (nn.ReLU, nn.Flatten, nn.Identity)


@dataclass(frozen=True)
class PrunableLayer:
    """One Linear/Conv2d of the backbone.

    ``index``: position in the Sequential; ``n_units``: out features / out channels;
    ``kernel``: kh*kw (1 for Linear); ``spatial``: how many input columns each unit of the
    previous layer owns (H*W after a Flatten, else 1); ``n_in``: input units (previous layer's
    units, or the input channels / features for the first layer).
    """

    index: int
    module: nn.Module
    n_units: int
    n_in: int
    kernel: int
    spatial: int
    has_bias: bool

    def param_count(self, units: int, in_units: int) -> int:
        """Parameters of this layer with ``units`` outputs fed by ``in_units`` input units."""
        return units * in_units * self.spatial * self.kernel + (units if self.has_bias else 0)

    @property
    def n_params(self) -> int:
        return self.param_count(self.n_units, self.n_in)


@dataclass(frozen=True)
class Structure:
    """The prunable layers of a backbone, in forward order; the last is the output layer."""

    layers: tuple[PrunableLayer, ...]
    input_shape: tuple[int, ...]

    @property
    def hidden(self) -> tuple[PrunableLayer, ...]:
        return self.layers[:-1]

    def param_count(self, units: Sequence[int]) -> int:
        """Parameters of the compact network with ``units[l]`` units in hidden layer ``l``."""
        if len(units) != len(self.hidden):
            raise ConfigError(f"need {len(self.hidden)} unit counts, got {len(units)}")
        total, prev = 0, self.layers[0].n_in
        for layer, c in zip(self.layers, list(units) + [self.layers[-1].n_units]):
            total += layer.param_count(int(c), prev)
            prev = int(c)
        return total

    @property
    def n_params(self) -> int:
        return self.param_count([l.n_units for l in self.hidden])

    @property
    def min_params(self) -> int:
        """One unit per hidden layer: the least that still connects input to output."""
        return self.param_count([1] * len(self.hidden))


def analyse(model: nn.Module, input_shape: Sequence[int]) -> Structure:
    """The :class:`Structure` of ``model`` on per-sample inputs of ``input_shape`` ((C, H, W) or (n,)).

    Raises ConfigError for modules other than Linear, Conv2d, ReLU, Flatten, or a backbone
    without a hidden layer.
    """
    if not isinstance(model, nn.Sequential):
        raise ConfigError(f"VeriCompress needs an nn.Sequential backbone, got {type(model).__name__}")
    input_shape = tuple(int(d) for d in input_shape)
    shapes: dict[int, tuple[int, ...]] = {}
    x = torch.zeros((1,) + input_shape)
    with torch.no_grad():
        for i, m in enumerate(model):
            if not isinstance(m, (nn.Linear, nn.Conv2d) + _PASS_THROUGH):
                raise ConfigError(f"VeriCompress backbone: module {i} ({type(m).__name__}) is not supported; "
                                  f"use Linear, Conv2d, ReLU and Flatten")
            shapes[i] = tuple(x.shape[1:])
            x = m(x)
    layers: list[PrunableLayer] = []
    spatial = 1
    prev_units = input_shape[0]
    for i, m in enumerate(model):
        if isinstance(m, nn.Flatten):
            in_shape = shapes[i]
            spatial *= int(math.prod(in_shape[1:])) if len(in_shape) > 1 else 1
        elif isinstance(m, (nn.Linear, nn.Conv2d)):
            if isinstance(m, nn.Conv2d):
                if m.groups != 1:
                    raise ConfigError(f"VeriCompress backbone: grouped conv at module {i} is not supported")
                n_units, kernel = m.out_channels, int(math.prod(m.kernel_size))
            else:
                n_units, kernel = m.out_features, 1
            layers.append(PrunableLayer(i, m, n_units, prev_units, kernel, spatial, m.bias is not None))
            prev_units, spatial = n_units, 1
    if len(layers) < 2:
        raise ConfigError("VeriCompress backbone needs at least one hidden Linear/Conv2d layer")
    return Structure(tuple(layers), input_shape)
