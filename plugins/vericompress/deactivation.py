"""VeriCompress's auxiliary network and its deactivation step as the paper writes them
(Kaur, Xiao, Salekin, AAAI 2024, Algorithm 1).

* **Start**: a random sub-network of the backbone with at most K non-zero parameters, spread
  over the layers by ERK (:func:`.budget.erk_budgets`) and chosen element by element at random,
  so every node and filter starts alive.
* **Between deactivations the auxiliary network trains unmasked** (Alg. 1, lines 5-7: "Since
  there is no restriction on the capacity of the auxiliary network M_θ′, it may comprise more than
  k′ parameters"): zero entries get gradients and grow, so it exceeds K.
* **Deactivation** (at an epoch's end): per hidden layer, keep the ``counts[l]`` units (FC nodes,
  conv filters) of largest L2 norm of their *own* weights (row or filter, and bias); "all the
  parameters associated with the least significant nodes/kernels are set to zero": the dormant
  unit's row or filter, its bias, and the next layer's inputs from it (its column, input channel
  or Flatten block). Right after a deactivation the auxiliary network therefore *is* the compact
  network (≤ K parameters, :mod:`.compact`). No cap on how many units change per call.
* **Freeze** (the last epochs): the mask is fixed and dormant entries are zeroed again after
  every optimiser step, so the final compact network is what gets trained.

A unit whose parameters are all zero computes 0; with ReLU's derivative 0 at 0 and its outgoing
weights 0, the clean loss and IBP send it no gradient. It can come back only through what Adam's
momentum still carries for its entries right after zeroing, and through CROWN-IBP's relaxation
while β > 0 (both give it small non-zero values, after which it trains like any other unit).
The paper does not say more; :attr:`AuxiliaryNetwork.log` records how many units change.

Example::

    aux = AuxiliaryNetwork(model, (1, 28, 28), budget=8960, seed=0)
    train(model, x, y, on_step_end=[aux.after_step], on_epoch_end=[aux.hook(epochs=16, freeze_last=4)])
    aux.finalize()          # then compact.export_compact(aux, "vc.onnx")
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from vnnx.errors import ConfigError

from .budget import budget_counts, erk_budgets
from .structure import Structure, analyse


def _assign(p: nn.Parameter, value: torch.Tensor) -> None:
    # New storage rather than copy_: auto_LiRPA keeps views of the parameters from the last
    # bound computation, and an in-place write would invalidate them for autograd.
    p.data = value.detach().clone()


class AuxiliaryNetwork:
    """The paper's auxiliary network M_θ′ over a backbone (trained in place) under a budget K.

    ``live[l]``: bool (n_units,), the units of hidden layer ``l`` kept by the last deactivation
    (all units before the first). ``log``: one dict per deactivation (epoch, non-zero parameters
    just before it, units that entered the kept set per layer).
    """

    def __init__(self, model: nn.Sequential, input_shape: Sequence[int], budget: int, *, seed: int = 0,
                 counts: Optional[Sequence[int]] = None) -> None:
        self.model = model
        self.structure: Structure = analyse(model, input_shape)
        self.budget = int(budget)
        self.counts = budget_counts(self.structure, self.budget, counts)
        self.live = [torch.ones(l.n_units, dtype=torch.bool) for l in self.structure.hidden]
        self.selected = False        # whether a deactivation has chosen the live units yet
        self.frozen = False
        self.log: list[dict] = []
        self._random_start(seed)

    # --------------------------------------------------------------------- parameters
    def _params(self):
        for layer in self.structure.layers:
            yield f"{layer.index}.weight", layer.module.weight
            if layer.module.bias is not None:
                yield f"{layer.index}.bias", layer.module.bias

    @property
    def dense(self) -> dict[str, torch.Tensor]:
        """The current parameters (state_dict keys); what :mod:`.compact` reads."""
        return {name: p.detach() for name, p in self._params()}

    def nonzero_parameters(self) -> int:
        """Non-zero entries of the auxiliary network's Linear/Conv2d weights and biases."""
        return int(sum(int((p != 0).sum()) for _, p in self._params()))

    @torch.no_grad()
    def _random_start(self, seed: int) -> None:
        """Keep floor(ERK share) random entries of each layer (weights and bias together), zero the rest."""
        gen = torch.Generator().manual_seed(seed)
        shares = erk_budgets(self.structure, float(self.budget))
        for layer, share in zip(self.structure.layers, shares):
            w, b = layer.module.weight, layer.module.bias
            n = w.numel() + (b.numel() if b is not None else 0)
            keep = torch.zeros(n, dtype=torch.bool)
            keep[torch.randperm(n, generator=gen)[:min(n, int(share))]] = True
            _assign(w, w * keep[:w.numel()].reshape(w.shape).to(w.dtype))
            if b is not None:
                _assign(b, b * keep[w.numel():].to(b.dtype))

    # -------------------------------------------------------------------------- masks
    def masks(self) -> dict[str, torch.Tensor]:
        """0/1 masks of the kept sub-network, one per parameter: an entry is kept iff its output
        unit and its input unit are both live (the output layer's units always are)."""
        out: dict[str, torch.Tensor] = {}
        prev = torch.ones(self.structure.layers[0].n_in, dtype=torch.bool)
        for i, layer in enumerate(self.structure.layers):
            own = self.live[i] if i < len(self.live) else torch.ones(layer.n_units, dtype=torch.bool)
            inp = prev.repeat_interleave(layer.spatial)
            w = layer.module.weight
            shape = (w.shape[0], w.shape[1]) + (1,) * (w.dim() - 2)
            out[f"{layer.index}.weight"] = (own[:, None] & inp[None, :]).reshape(shape).expand_as(w).to(w.dtype).clone()
            if layer.module.bias is not None:
                out[f"{layer.index}.bias"] = own.to(layer.module.bias.dtype).clone()
            prev = own
        return out

    def active_parameters(self) -> int:
        """Parameters of the kept sub-network (the sum of :meth:`masks`), the compact size."""
        return int(sum(int(m.sum()) for m in self.masks().values()))

    @torch.no_grad()
    def _zero_dormant(self) -> None:
        masks = self.masks()
        for name, p in self._params():
            _assign(p, p * masks[name])

    # --------------------------------------------------------------------- the algorithm
    def unit_scores(self) -> list[torch.Tensor]:
        """L2 norm of each hidden unit's own weights: its row (FC node) or filter, and its bias."""
        scores = []
        for layer in self.structure.hidden:
            w = layer.module.weight.detach()
            sq = w.reshape(w.shape[0], -1).pow(2).sum(1)
            if layer.module.bias is not None:
                sq = sq + layer.module.bias.detach().pow(2)
            scores.append(sq.sqrt())
        return scores

    @torch.no_grad()
    def deactivate(self, epoch: int = -1) -> list[int]:
        """Keep the ``counts[l]`` units of largest :meth:`unit_scores` per hidden layer and zero
        every parameter of the others (row/filter, bias, the next layer's inputs from them).
        Returns, per layer, how many units entered the kept set (0 at the first call)."""
        before = self.nonzero_parameters()
        entered = []
        for i, (score, c) in enumerate(zip(self.unit_scores(), self.counts)):
            new = torch.zeros(len(score), dtype=torch.bool)
            # stable ordering on ties (e.g. all-zero dormant units): lower index first
            order = torch.argsort(-score, stable=True)
            new[order[:c]] = True
            entered.append(int((new & ~self.live[i]).sum()) if self.selected else 0)
            self.live[i] = new
        self.selected = True
        self._zero_dormant()
        self.log.append({"epoch": epoch, "nonzero_before": before, "nonzero_after": self.nonzero_parameters(),
                         "entered": entered})
        return entered

    @torch.no_grad()
    def after_step(self, model: Optional[nn.Module] = None) -> None:
        """A :data:`vnnx.training.StepHook`: nothing while exploring (unmasked training); once
        frozen, zero the dormant entries again (Adam's momentum would move them)."""
        if self.frozen:
            self._zero_dormant()

    def freeze(self) -> None:
        """Fix the mask: from now on only the kept sub-network trains."""
        if not self.selected:
            self.deactivate()
        self.frozen = True

    def hook(self, epochs: int, freeze_last: int = 0, period: int = 1):
        """A :data:`vnnx.training.EpochHook`: deactivate after every ``period``-th epoch while
        exploring; the last ``freeze_last`` epochs train with a frozen mask (the deactivation
        closing the exploration happens at the end of epoch ``epochs - freeze_last - 1``)."""
        if period < 1:
            raise ConfigError(f"deactivation period must be >= 1 epoch, got {period}")
        if not 0 <= freeze_last < epochs:
            raise ConfigError(f"freeze_last must lie in [0, {epochs - 1}], got {freeze_last}")
        last_explore = epochs - freeze_last - 1

        def hook(model: nn.Module, epoch: int) -> None:
            if self.frozen:
                return
            if (epoch + 1) % period == 0 or epoch == last_explore:
                self.deactivate(epoch)
            if epoch == last_explore and freeze_last > 0:
                self.freeze()
        return hook

    @torch.no_grad()
    def finalize(self) -> None:
        """Zero every entry outside the kept sub-network (deactivating once more if training
        ended unmasked): the model is now exactly the compact network, padded with zeros."""
        if not self.frozen and (not self.selected or self.nonzero_parameters() > self.active_parameters()):
            self.deactivate()
        self._zero_dormant()
        self.frozen = True

