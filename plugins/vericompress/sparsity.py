"""Budgeted dynamic structured sparsity: explicit masks, a random start, L2-norm deactivation of
nodes / filters, and exploration (dormant elements keep receiving gradients).

State (a training run has real state, so this is a class):

* ``live[l]``: bool (n_units,), the live units of hidden layer ``l``; the output layer is
  always live. Element masks (:meth:`DynamicSparsity.masks`) follow from them, keyed like the
  backbone's ``state_dict`` (``"0.weight"``, ``"0.bias"``, ...): a weight entry is active iff its
  output unit and its input unit are both live.
* ``dense``: the full weights, including the values of dormant elements.

How dormant elements keep receiving gradients: the forward pass masks each layer's *input side*
only (columns / input channels of dead units of the previous layer), so a dormant unit still
computes a (shadow) activation while contributing nothing to the output. Its outgoing weights are
zero in the forward pass, but after each optimiser step the update the optimiser made to them is
added to ``dense`` (a straight-through estimate through the mask), so they grow when connecting
the unit would lower the loss. Deactivation ranks units by the L2 norm of their dense incoming and
outgoing weights, so a grown dormant unit can replace a live one. The model's outputs always
equal those of the compact network (:mod:`.compact`).
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence

import torch
from torch import nn

from vnnx.errors import ConfigError

from .budget import budget_counts
from .structure import PrunableLayer, Structure, analyse


def _assign(p: nn.Parameter, value: torch.Tensor) -> None:
    # New storage rather than copy_: auto_LiRPA keeps views of the parameters from the last
    # bound computation, and an in-place write would invalidate them for autograd.
    p.data = value.detach().clone()


class DynamicSparsity:
    """Masks and dense weights of one backbone under a parameter budget.

    ``start``: 'random' (a random sub-network, the paper's start) or 'magnitude' (the units of
    largest L2 norm, the prune-after-training baseline). ``explore``: whether dormant units
    receive gradients (False freezes the sub-network: plain masked fine-tuning).

    Example::

        sparsity = DynamicSparsity(model, (1, 28, 28), budget=8960, seed=0)
        train(model, x, y, on_step_end=[sparsity.after_step],
              on_epoch_end=[sparsity.every(2)], ...)
        sparsity.finalize()
    """

    def __init__(self, model: nn.Sequential, input_shape: Sequence[int], budget: int, *, seed: int = 0,
                 start: Literal["random", "magnitude"] = "random", explore: bool = True,
                 counts: Optional[Sequence[int]] = None) -> None:
        self.model = model
        self.structure: Structure = analyse(model, input_shape)
        self.budget = int(budget)
        self.counts = budget_counts(self.structure, self.budget, counts)
        self.explore = explore
        self.dense = {name: p.detach().clone() for name, p in self._params()}
        if start == "random":
            gen = torch.Generator().manual_seed(seed)
            self.live = []
            for layer, c in zip(self.structure.hidden, self.counts):
                keep = torch.randperm(layer.n_units, generator=gen)[:c]
                self.live.append(self._mask_of(keep, layer.n_units))
        elif start == "magnitude":
            self.live = [torch.ones(l.n_units, dtype=torch.bool) for l in self.structure.hidden]
            self.deactivate()
        else:
            raise ConfigError(f"unknown start {start!r}; use 'random' or 'magnitude'")
        self.apply()

    # ------------------------------------------------------------------------- masks
    @staticmethod
    def _mask_of(keep: torch.Tensor, n: int) -> torch.Tensor:
        m = torch.zeros(n, dtype=torch.bool)
        m[keep] = True
        return m

    def _params(self):
        for layer in self.structure.layers:
            yield f"{layer.index}.weight", layer.module.weight
            if layer.module.bias is not None:
                yield f"{layer.index}.bias", layer.module.bias

    def _unit_masks(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(out mask, in mask) per layer, as float vectors; the in mask is expanded over the
        ``spatial`` columns each input unit owns after a Flatten."""
        out = []
        prev = torch.ones(self.structure.layers[0].n_in, dtype=torch.bool)
        for i, layer in enumerate(self.structure.layers):
            own = self.live[i] if i < len(self.live) else torch.ones(layer.n_units, dtype=torch.bool)
            inp = prev.repeat_interleave(layer.spatial)
            out.append((own.float(), inp.float()))
            prev = own
        return out

    def _element(self, layer: PrunableLayer, out_m: torch.Tensor, in_m: torch.Tensor) -> torch.Tensor:
        w = layer.module.weight
        shape = (w.shape[0], w.shape[1]) + (1,) * (w.dim() - 2)
        return (out_m[:, None] * in_m[None, :]).reshape(shape).expand_as(w).to(w.dtype)

    def masks(self) -> dict[str, torch.Tensor]:
        """The explicit 0/1 masks of the active sub-network, one per parameter (state_dict keys)."""
        out: dict[str, torch.Tensor] = {}
        for layer, (o, i) in zip(self.structure.layers, self._unit_masks()):
            out[f"{layer.index}.weight"] = self._element(layer, o, i).clone()
            if layer.module.bias is not None:
                out[f"{layer.index}.bias"] = o.to(layer.module.bias.dtype).clone()
        return out

    def forward_masks(self) -> dict[str, torch.Tensor]:
        """Masks applied in the forward pass: with exploration, the input side only (see module doc)."""
        if not self.explore:
            return self.masks()
        out: dict[str, torch.Tensor] = {}
        for layer, (_o, i) in zip(self.structure.layers, self._unit_masks()):
            ones = torch.ones(layer.n_units)
            out[f"{layer.index}.weight"] = self._element(layer, ones, i).clone()
            if layer.module.bias is not None:
                out[f"{layer.index}.bias"] = torch.ones_like(layer.module.bias)
        return out

    def active_parameters(self) -> int:
        """Number of active parameters: the sum of :meth:`masks`, equal to the compact size."""
        return int(sum(int(m.sum()) for m in self.masks().values()))

    # --------------------------------------------------------------------- training
    @torch.no_grad()
    def apply(self) -> None:
        """Write ``dense * forward mask`` into the model's parameters."""
        self._fmasks = self.forward_masks()
        for name, p in self._params():
            _assign(p, self.dense[name] * self._fmasks[name])

    @torch.no_grad()
    def after_step(self, model: Optional[nn.Module] = None) -> None:
        """A :data:`vnnx.training.StepHook`: fold the optimiser's update (dormant entries
        included) into ``dense``, then mask again. Before the step the parameters held
        ``dense * mask``, so the update is ``p - dense * mask``."""
        for name, p in self._params():
            m = self._fmasks[name]
            self.dense[name] += p - self.dense[name] * m
            _assign(p, self.dense[name] * m)

    def unit_scores(self) -> list[torch.Tensor]:
        """L2 norm of each hidden unit's dense incoming weights, bias and outgoing weights."""
        scores = []
        layers = self.structure.layers
        for i, layer in enumerate(layers[:-1]):
            w = self.dense[f"{layer.index}.weight"]
            sq = w.reshape(w.shape[0], -1).pow(2).sum(1)
            if layer.module.bias is not None:
                sq = sq + self.dense[f"{layer.index}.bias"].pow(2)
            nxt = layers[i + 1]
            wn = self.dense[f"{nxt.index}.weight"]
            cols = wn.transpose(0, 1).reshape(layer.n_units, -1)  # (units * spatial, ...) -> per unit
            sq = sq + cols.pow(2).sum(1)
            scores.append(sq.sqrt())
        return scores

    @torch.no_grad()
    def deactivate(self, max_swap_fraction: Optional[float] = None) -> list[int]:
        """Keep, layer by layer, the ``counts[l]`` units of largest :meth:`unit_scores`; the
        others become dormant (zero in the forward pass, values kept in ``dense``).

        ``max_swap_fraction``: at most this fraction of a layer's live units (rounded down) is
        replaced per call, the strongest newcomers replacing the weakest
        incumbents; None: no limit. Returns the number of units swapped in per layer.
        """
        swapped = []
        for i, (score, c) in enumerate(zip(self.unit_scores(), self.counts)):
            old = self.live[i]
            new = self._mask_of(torch.topk(score, c, sorted=False).indices, len(score))
            incoming = torch.nonzero(new & ~old).flatten()
            if max_swap_fraction is not None and len(incoming) > 0:
                limit = int(max(0.0, max_swap_fraction) * c)
                if len(incoming) > limit:
                    incoming = incoming[torch.argsort(score[incoming], descending=True)[:limit]]
                    outgoing = torch.nonzero(old & ~new).flatten()
                    outgoing = outgoing[torch.argsort(score[outgoing])[:limit]]
                    new = old.clone()
                    new[outgoing] = False
                    new[incoming] = True
            swapped.append(len(incoming))
            self.live[i] = new
        if hasattr(self, "_fmasks"):
            self.apply()
        return swapped

    def every(self, period: int, swap_fraction: Optional[float] = None, total_epochs: Optional[int] = None):
        """A :data:`vnnx.training.EpochHook` that deactivates after every ``period``-th epoch.

        With ``swap_fraction`` and ``total_epochs``, at most ``swap_fraction * (1 - (epoch + 1) /
        total_epochs)`` of each layer's units are swapped per call (annealed to 0, as RigL anneals
        its update fraction), so the final sub-network gets trained; the swaps are recorded in
        ``self.swaps``.
        """
        if period < 1:
            raise ConfigError(f"deactivation period must be >= 1 epoch, got {period}")
        self.swaps: list[list[int]] = []

        def hook(model: nn.Module, epoch: int) -> None:
            if (epoch + 1) % period == 0:
                frac = None
                if swap_fraction is not None:
                    frac = swap_fraction * (1 - (epoch + 1) / total_epochs) if total_epochs else swap_fraction
                self.swaps.append(self.deactivate(frac))
        return hook

    @torch.no_grad()
    def finalize(self) -> None:
        """Zero every inactive entry (dormant rows too): the model is now exactly the masked
        sub-network, with :meth:`active_parameters` possibly non-zero entries."""
        masks = self.masks()
        for name, p in self._params():
            _assign(p, self.dense[name] * masks[name])
        self._fmasks = masks
