"""CROWN bounds for Algorithm 1 on vnnx's graph engine, with chosen ReLU neurons on fixed lines.

Algorithm 1 ranks the ReLUs by the width ``u - l`` of their CROWN pre-activation bounds, so every
ReLU input is refined here, stable or not (the engine's default refines only the unstable ones
and leaves the others at their interval bounds, which would change the ranking). The refined
bounds are not intersected with the interval ones: they are then CROWN's bounds as the sparse
engine this replaces computed them (to round-off), and a replaced neuron's bounds do not depend
on whether the substitute is folded (``fixed_lines``, tested).

``linear`` puts chosen ReLU neurons on fixed lines ``slope·z + intercept`` (a local substitute,
bounded without building it): those neurons are affine, so the network bounded is the
substitute itself, and their pre-activations get interval bounds only (their lines do not depend
on them).

Example::

    eng = SubstituteBounds(network)
    pre = eng.pre_activation_bounds(lo, hi, {k: (mask, slope, intercept)})   # {k: (l, u)}
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from vnnx.engine import GraphEngine
from vnnx.errors import VnnxError
from vnnx.network import Network, Relu
from vnnx.ops.relu import Relu as ReluOp


class FixedLineRelu(ReluOp):
    """A ReLU whose entries in ``mask`` are the exact line ``slope·z + intercept`` (a replaced
    neuron of a substitute); every other entry asks for CROWN-refined input bounds, stable or not.

    ``mask``, ``slope``, ``intercept``: float64 / bool tensors of the node's shape, or None (a
    plain ReLU). Any slope sign is handled (the interval rule takes the min and max of the line)."""

    def __init__(self) -> None:
        self.mask: Optional[torch.Tensor] = None
        self.slope: Optional[torch.Tensor] = None
        self.intercept: Optional[torch.Tensor] = None

    def set_lines(self, mask=None, slope=None, intercept=None) -> None:
        """Fix the lines (flattened (n,) arrays; ``mask`` None or all False: a plain ReLU)."""
        # A relaxation memoised for the old lines must not be served for the new ones.
        self.__dict__.pop("_memo", None)
        if mask is None or not np.any(mask):
            self.mask = self.slope = self.intercept = None
            return
        shape = tuple(self.out_shape)
        n = int(np.prod(shape))
        mask = np.asarray(mask, dtype=bool).ravel()
        if mask.size != n:
            raise ValueError(f"mask has {mask.size} entries, the ReLU layer has {n}")
        slope = np.where(mask, np.broadcast_to(np.asarray(slope, np.float64).ravel(), (n,)), 0.0)
        icpt = np.where(mask, np.broadcast_to(np.asarray(intercept, np.float64).ravel(), (n,)), 0.0)
        self.mask = torch.as_tensor(mask).reshape(shape)
        self.slope = torch.as_tensor(slope).reshape(shape)
        self.intercept = torch.as_tensor(icpt).reshape(shape)

    def _lines(self, like: torch.Tensor):
        dev = like.device
        return self.mask.to(dev), self.slope.to(dev, like.dtype), self.intercept.to(dev, like.dtype)

    def function(self, x):
        if self.mask is None:
            return torch.relu(x)
        m, a, c = self._lines(x)
        return torch.where(m, a * x + c, torch.relu(x))

    def interval(self, bounds):
        lo, hi = bounds
        out_lo, out_hi = torch.relu(lo), torch.relu(hi)
        if self.mask is None:
            return out_lo, out_hi
        m, a, c = self._lines(lo)
        ends = (a * lo + c, a * hi + c)
        return (torch.where(m, torch.minimum(*ends), out_lo), torch.where(m, torch.maximum(*ends), out_hi))

    def relax(self, lo, hi, alpha=None):
        lw, lb, uw, ub = super().relax(lo, hi, alpha)
        if self.mask is None:
            return lw, lb, uw, ub
        m, a, c = self._lines(lo)
        zero = torch.zeros_like(c)
        return (torch.where(m, a, lw), torch.where(m, c, zero), torch.where(m, a, uw), torch.where(m, c, ub))

    def needs_tight_input(self, lo, hi):
        # Every ReLU on its own relaxation, stable ones too (Algorithm 1 ranks them by width).
        if self.mask is None:
            return torch.ones_like(lo, dtype=torch.bool)
        return (~self.mask.to(lo.device)).expand_as(lo)

    def milp(self, builder, cols, bounds, out_bounds):
        raise VnnxError("a ReLU with fixed lines has no MILP encoding: fold the substitute first "
                        "(plugins/substitute/fold.py)")


class SubstituteBounds:
    """CROWN bounds of a chain (:class:`vnnx.network.Network`) on :class:`vnnx.engine.GraphEngine`,
    for Algorithm 1: every ReLU input refined, not intersected with the interval bounds, and
    optional fixed lines (module notes). Results are keyed by layer index like
    :class:`vnnx.bounds.BoundsResult.pre_activation`: ``k`` for each layer whose next layer is a
    ReLU. Works on every network :meth:`Network.to_graph` takes (MaxPool with the engine's own
    relaxation)."""

    def __init__(self, network: Network, device: str = "cpu") -> None:
        self.network = network
        graph = network.to_graph("substitute")
        self.relus: dict[int, FixedLineRelu] = {}
        for k, layer in enumerate(network.layers):
            if isinstance(layer, Relu):
                node = graph.nodes[graph.layer_nodes[k]]
                op = FixedLineRelu()
                op.in_shapes, op.out_shape = node.op.in_shapes, node.op.out_shape
                node.op = op
                self.relus[k] = op
        self.graph = graph
        self.engine = GraphEngine(graph, device=device, intersect_interval=False)

    def set_lines(self, linear: Optional[dict] = None) -> None:
        """``linear``: ``{layer index k: (mask, slope, intercept)}``, each (n,) over the output of
        ``layers[k]``: the ReLU after that layer is the line ``slope·z + intercept`` on ``mask``.
        Layers not named are plain ReLUs again."""
        linear = linear or {}
        for k in linear:
            if k + 1 not in self.relus:
                raise ValueError(f"layer {k} does not feed a ReLU of this network")
        for k, op in self.relus.items():
            op.set_lines(*linear.get(k - 1, (None, None, None)))

    def layer_bounds(self, x_lower: np.ndarray, x_upper: np.ndarray,
                     linear: Optional[dict] = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Flattened float64 ``(lower, upper)`` of every layer's output over the box (each
        (n_inputs,)); the inputs of ReLUs CROWN-refined, the rest interval bounds."""
        self.set_lines(linear)
        lo, hi = self.engine._box(np.asarray(x_lower, np.float64).reshape(1, -1),
                                  np.asarray(x_upper, np.float64).reshape(1, -1))
        bounds = self.engine.intermediate(lo, hi, "crown")
        return [(bounds[n][0].reshape(-1).cpu().numpy(), bounds[n][1].reshape(-1).cpu().numpy())
                for n in self.graph.layer_nodes]

    def pre_activation_bounds(self, x_lower: np.ndarray, x_upper: np.ndarray,
                              linear: Optional[dict] = None) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """CROWN bounds ``{k: (lower, upper)}`` of each layer ``k`` that feeds a ReLU."""
        out = self.layer_bounds(x_lower, x_upper, linear)
        return {k - 1: out[k - 1] for k in self.relus if k >= 1}

    def bound(self, x_lower: np.ndarray, x_upper: np.ndarray, C: np.ndarray, method: str = "crown",
              linear: Optional[dict] = None) -> np.ndarray:
        """Lower bounds (rows,) of ``C @ y`` over the box, ``C``: (rows, n_outputs); ``method``
        'crown' or 'alpha-crown' (the graph engine's, on these intermediate bounds)."""
        self.set_lines(linear)
        return self.engine.compute(x_lower, x_upper, method, np.asarray(C, np.float64)).lower
