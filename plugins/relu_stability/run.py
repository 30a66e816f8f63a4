"""One ``vnnx train`` run: config -> data -> :func:`vnnx.training.train` -> passes -> metrics.

The training loop itself is :func:`vnnx.training.train`; this module only assembles its
arguments from a :class:`~.config.TrainConfig` (PGD attack, linear ε ramp, L1 and RS terms)
and runs the passes and the evaluation afterwards.
"""
from __future__ import annotations

import time
from typing import Optional

import torch
from torch import nn

from vnnx.architectures import build
from vnnx.attack import pgd_linf
from vnnx.data import Dataset
from vnnx.errors import ConfigError, ShapeMismatchError
from vnnx.network import Network
from vnnx.training import Attack, LossTerm, TrainHistory, accuracy, linear_ramp, train

from .chain import sequential_to_network
from .config import TrainConfig, validate
from .losses import l1_term, rs_term
from .passes import PassReport, adversarial_inputs, prune_relus, prune_small_weights
from .report import friendliness_report


def load_data(cfg: TrainConfig) -> tuple[Dataset, Dataset]:
    """Training and evaluation sets of ``cfg`` (see :func:`vnnx.data.mnist_split`), cut to
    ``n_train`` / ``n_eval``."""
    from vnnx.data import mnist_split

    train_set, eval_set = mnist_split(cfg.data_dir)
    n_train = len(train_set) if cfg.n_train is None else min(cfg.n_train, len(train_set))
    n_eval = min(cfg.n_eval, len(eval_set))
    return train_set.subset(0, n_train), eval_set.subset(0, n_eval)


def make_attack(cfg: TrainConfig) -> Optional[Attack]:
    """PGD with random start (Madry et al.), seeded from ``cfg.seed``; None for plain training."""
    if not cfg.adversarial:
        return None
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    lo, hi = cfg.input_range

    def attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        return pgd_linf(model, x, y, eps, steps=cfg.pgd_steps, step_size=cfg.pgd_step_size,
                        clip=(lo, hi), generator=gen)
    return attack


def make_loss_terms(cfg: TrainConfig) -> list[LossTerm]:
    """L1 and RS terms with non-zero weight. The RS boxes use ``rs_epsilon`` (default ``epsilon``)
    from the first step, as the paper's code does, not the ramped ε."""
    terms: list[LossTerm] = []
    if cfg.l1_weight > 0:
        terms.append(l1_term(cfg.l1_weight, reuse_weighted=cfg.l1_reuse_weighted))
    if cfg.rs_weight > 0:
        rs_eps = cfg.epsilon if cfg.rs_epsilon is None else cfg.rs_epsilon
        terms.append(rs_term(cfg.rs_weight, bounds=cfg.rs_bounds, epsilon=rs_eps,
                             clip=tuple(cfg.input_range), layer_weights=cfg.rs_layer_weights))
    return terms


def train_from_config(cfg: TrainConfig, train_data: Optional[Dataset] = None) -> tuple[nn.Module, TrainHistory]:
    """Build ``cfg.architecture`` and train it with :func:`vnnx.training.train`.

    Adversarial training: PGD (``pgd_steps``, random start) at ε ramped linearly from
    ``ramp_start`` to ``epsilon`` over the first ``ramp_fraction`` of the epochs; plain training
    when ``adversarial`` is false. ``train_data`` replaces the data named in ``cfg``.
    Returns the trained model (eval mode) and the per-epoch history.
    """
    validate(cfg, "config")
    data = train_data if train_data is not None else load_data(cfg)[0]
    torch.manual_seed(cfg.seed)
    model = build(cfg.architecture, **cfg.arch)
    with torch.no_grad():
        try:
            model(torch.as_tensor(data.x[:1]))
        except RuntimeError as exc:
            raise ShapeMismatchError(f"architecture {cfg.architecture!r} does not take inputs of shape "
                                     f"{tuple(data.x.shape[1:])}: {exc}") from None
    schedule = None
    if cfg.adversarial:
        schedule = linear_ramp(min(cfg.ramp_start, cfg.epsilon), cfg.epsilon, cfg.ramp_fraction * cfg.epochs)
    history = train(model, data.x, data.y, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                    seed=cfg.seed, loss_terms=make_loss_terms(cfg), attack=make_attack(cfg),
                    epsilon=schedule, progress=cfg.progress, time_limit=cfg.time_limit)
    return model, history


class NetworkModule(nn.Module):
    """A plain network as a torch module on (N, *input_shape) batches (float32)."""

    def __init__(self, network: Network) -> None:
        super().__init__()
        self.body = network.to_torch(torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(x.shape[0], -1))


def apply_passes(model: nn.Module, cfg: TrainConfig, train_data: Dataset) -> tuple[Network, list[PassReport]]:
    """The trained model as a plain network, with the passes ``cfg`` asks for, in the paper's
    order: small-weight pruning, then ReLU pruning (activations counted on PGD-perturbed
    training images when ``relu_prune_perturbed``)."""
    network = sequential_to_network(model, tuple(train_data.x.shape[1:]))
    reports: list[PassReport] = []
    if cfg.prune_weights:
        network, rep = prune_small_weights(network, cfg.weight_threshold)
        reports.append(rep)
    if cfg.prune_relus:
        n = len(train_data.x) if cfg.relu_prune_samples is None else min(cfg.relu_prune_samples, len(train_data.x))
        x, y = train_data.x[:n], train_data.y[:n]
        if cfg.relu_prune_perturbed and cfg.epsilon > 0:
            x = adversarial_inputs(NetworkModule(network), x, y, cfg.epsilon, steps=cfg.pgd_steps,
                                   seed=cfg.seed + 2, clip=tuple(cfg.input_range))
        network, rep = prune_relus(network, x.reshape(len(x), -1), active_threshold=cfg.relu_active_threshold,
                                   inactive_threshold=cfg.relu_inactive_threshold,
                                   input_range=tuple(cfg.input_range))
        reports.append(rep)
    return network, reports


def evaluate(network: Network, cfg: TrainConfig, eval_data: Dataset) -> dict:
    """Test accuracy, PGD accuracy (``eval_pgd_steps`` at the eval ε) and unstable-ReLU reports
    (``report_methods`` on the first ``n_report`` images) of a plain network."""
    if eval_data.x.reshape(len(eval_data.x), -1).shape[1] != network.n_inputs:
        raise ConfigError(f"evaluation data has {eval_data.x[0].size} values per sample, "
                          f"the network takes {network.n_inputs}")
    start = time.monotonic()
    module = NetworkModule(network).eval()
    eps = cfg.resolved_eval_epsilon
    x_adv = adversarial_inputs(module, eval_data.x, eval_data.y, eps, steps=cfg.eval_pgd_steps,
                               seed=cfg.seed + 3, clip=tuple(cfg.input_range))
    metrics: dict = {"n_eval": int(len(eval_data.x)), "eval_epsilon": eps,
                     "test_acc": accuracy(module, eval_data.x, eval_data.y),
                     "pgd_acc": accuracy(module, x_adv, eval_data.y)}
    n_report = min(cfg.n_report, len(eval_data.x))
    if n_report > 0:
        metrics["reports"] = {m: friendliness_report(network, eval_data.x[:n_report], eps, m,
                                                     clip=tuple(cfg.input_range))
                              for m in cfg.report_methods}
    metrics["seconds"] = time.monotonic() - start
    return metrics
