"""The one training loop of vnnx. Methods plug in as loss terms and input perturbations.

A *loss term* is a callable ``term(model, x, y, epsilon) -> scalar tensor`` (already weighted);
terms compose by summation, like optax transforms compose with ``chain``. An *attack* is a
callable ``attack(model, x, y, epsilon) -> x_adv`` that replaces the clean batch (PGD
adversarial training). An *epsilon schedule* maps ``(epoch, step_fraction)`` to the epsilon
of that step. Plugins (ReLU stability, VeriCompress) provide terms, attacks, schedules and
per-epoch hooks (``on_epoch_end(model, epoch)``, e.g. pruning); the loop stays here.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from vnnx.errors import ConfigError

LossTerm = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor, float], torch.Tensor]
EpochHook = Callable[[nn.Module, int], None]
StepHook = Callable[[nn.Module], None]


class EpsilonSchedule(Protocol):
    def __call__(self, epoch: int, fraction: float) -> float: ...


def constant_epsilon(epsilon: float) -> EpsilonSchedule:
    """ε fixed for the whole run."""
    return lambda epoch, fraction: float(epsilon)


def linear_ramp(start: float, end: float, ramp_epochs: float, warmup_epochs: float = 0.0) -> EpsilonSchedule:
    """ε = 0 until ``warmup_epochs``, then linear from ``start`` to ``end`` over ``ramp_epochs``.

    ``fraction`` is the position within the epoch, in [0, 1), so the ramp is per step.
    """
    def schedule(epoch: int, fraction: float) -> float:
        t = epoch + fraction - warmup_epochs
        if t < 0:
            return 0.0
        if ramp_epochs <= 0 or t >= ramp_epochs:
            return float(end)
        return float(start + (end - start) * t / ramp_epochs)
    return schedule


@dataclass
class TrainHistory:
    epochs: list[dict] = field(default_factory=list)

    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def train(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, *,
          epochs: int = 10, batch_size: int = 128, lr: float = 1e-3, seed: int = 0,
          loss_terms: Sequence[LossTerm] = (), attack: Optional[Attack] = None,
          epsilon: Optional[EpsilonSchedule] = None, on_epoch_end: Sequence[EpochHook] = (),
          on_step_end: Sequence[StepHook] = (),
          lr_schedule: Optional[Callable[[int], float]] = None, weight_decay: float = 0.0,
          clean_weight: Optional[Callable[[float], float]] = None, grad_clip: Optional[float] = None,
          progress: bool = True, time_limit: Optional[float] = None,
          x_val: Optional[np.ndarray] = None, y_val: Optional[np.ndarray] = None) -> TrainHistory:
    """Train ``model`` in place with Adam on cross-entropy plus ``loss_terms``.

    ``x``: (N, ...) float32 in model-input space; ``y``: (N,) int labels. ``attack`` (if any)
    replaces each batch by its perturbed version at the scheduled ε before the loss. ``lr_schedule``
    maps an epoch to a multiplier of ``lr``. Stops early (after a full step) at ``time_limit``
    seconds. ``on_step_end`` hooks run after every optimiser step (e.g. re-applying sparsity
    masks while keeping the dense weights they hide). ``clean_weight`` maps the step's ε to the
    weight of the clean cross-entropy (default 1; CROWN-IBP's κ, which goes to 0 so that the loss
    becomes the worst-case loss alone). ``grad_clip``: clip the gradients' global L2 norm to this
    before each step (default: no clipping). Returns per-epoch loss, accuracy (clean,
    on the training batches) and ε.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ConfigError(f"epochs, batch_size and lr must be positive (got {epochs}, {batch_size}, {lr})")
    from tqdm.auto import tqdm

    gen = seed_everything(seed)
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    if len(xt) != len(yt) or len(xt) == 0:
        raise ConfigError(f"training data: {len(xt)} inputs but {len(yt)} labels")
    eps_of = epsilon or constant_epsilon(0.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n_batches = math.ceil(len(xt) / batch_size)
    history = TrainHistory()
    start = time.monotonic()
    bar = tqdm(total=epochs * n_batches, desc="train", disable=not progress, leave=False)
    try:
        for epoch in range(epochs):
            if lr_schedule is not None:
                for group in opt.param_groups:
                    group["lr"] = lr * lr_schedule(epoch)
            model.train()
            order = torch.randperm(len(xt), generator=gen)
            tot_loss = tot_correct = 0.0
            eps = 0.0
            for b in range(n_batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                xb, yb = xt[idx], yt[idx]
                eps = eps_of(epoch, b / n_batches)
                if attack is not None and eps > 0:
                    model.eval()
                    xb_in = attack(model, xb, yb, eps).detach()
                    model.train()
                else:
                    xb_in = xb
                logits = model(xb_in)
                loss = nn.functional.cross_entropy(logits, yb)
                if clean_weight is not None:
                    loss = clean_weight(eps) * loss
                for term in loss_terms:
                    loss = loss + term(model, xb, yb, eps)
                opt.zero_grad()
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                opt.step()
                for step_hook in on_step_end:
                    step_hook(model)
                tot_loss += float(loss.detach()) * len(idx)
                tot_correct += float((logits.argmax(1) == yb).sum())
                bar.update(1)
                bar.set_postfix(epoch=epoch, loss=f"{float(loss.detach()):.3f}", eps=f"{eps:.3f}")
                if time_limit is not None and time.monotonic() - start > time_limit:
                    break
            model.eval()
            for hook in on_epoch_end:
                hook(model, epoch)
            record = {"epoch": epoch, "loss": tot_loss / len(xt), "train_acc": tot_correct / len(xt),
                      "epsilon": eps, "seconds": time.monotonic() - start}
            if x_val is not None and y_val is not None:
                record["val_acc"] = accuracy(model, x_val, y_val)
            history.epochs.append(record)
            if time_limit is not None and time.monotonic() - start > time_limit:
                break
    finally:
        bar.close()
        model.eval()
    return history


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
             batch_size: int = 1000) -> float:
    """Fraction of samples whose argmax logit equals the label."""
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    model.eval()
    correct = 0
    for i in range(0, len(xt), batch_size):
        correct += int((model(xt[i:i + batch_size]).argmax(1) == yt[i:i + batch_size]).sum())
    return correct / max(len(xt), 1)
