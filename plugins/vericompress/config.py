"""The typed config of ``vnnx compress``: a flat YAML mapping; ``--budget`` and ``--epsilon`` on
the command line override ``budget`` and ``epsilon``. Unknown keys and wrongly typed values are
:class:`~vnnx.errors.ConfigError` naming the key and the file."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional, Union

from vnnx.config import config_from_dict as _config_from_dict
from vnnx.config import load_config as _load_config
from vnnx.config import setting
from vnnx.errors import ConfigError


@dataclass
class CompressConfig:
    """One VeriCompress run (see ``specs/configs/vericompress_mnist.yaml``)."""

    seed: int = setting(0, "seed of the initial weights, the random sub-network and the batch order")
    data_dir: str = setting("../shared/data/mnist", "MNIST idx files (train on test images 1000-9999, evaluate on 0-999)")
    n_train: Optional[int] = setting(None, "use only the first N training images (default: all)")
    n_eval: int = setting(1000, "standard accuracy on the first N evaluation images")
    n_verify: int = setting(200, "verified accuracy (IBP, CROWN) on the first N evaluation images")
    backbone: str = setting("cnn4", "backbone: cnn4 (4-layer CNN), cnn7 (7-layer CNN), fc (fully connected)")
    arch: dict = setting({}, "keyword arguments of the backbone factory, e.g. {hidden: [256, 256]} for fc")
    budget: Optional[int] = setting(None, "parameter budget K (default: budget_fraction of the backbone)")
    budget_fraction: float = setting(0.1, "K as a fraction of the backbone's parameters when budget is not given")
    unit_counts: Optional[list] = setting(None, "units kept per hidden layer, e.g. [9, 18, 13] (null: from the ERK "
                                          "shares, budget.unit_counts); must fit in the budget")
    epsilon: float = setting(0.1, "eps_max, the L-inf radius of training and verification (model-input units)")
    epochs: int = setting(10, "T, the number of training epochs")
    eps_start: int = setting(1, "s: epsilon is 0 before this epoch (the paper's MNIST run: s = T/10)")
    eps_length: int = setting(6, "l: epsilon ramps from 0 to eps_max over this many epochs (the paper: l = 0.6 T)")
    explore_every: int = setting(1, "T-exp: deactivate the least important nodes/filters every this many epochs")
    freeze_last: Optional[int] = setting(None, "the last this many epochs train the final "
                                         "sub-network with a frozen mask (null: T - s - l, so that exploration "
                                         "lasts until epsilon reaches eps_max)")
    batch_size: int = setting(64, "samples per step")
    lr: float = setting(1e-3, "Adam learning rate")
    lr_gamma: float = setting(0.6, "per-epoch learning-rate decay once epsilon has reached eps_max")
    robust_weight: float = setting(1.0, "weight of the CROWN-IBP robust cross-entropy")
    kappa_end: Optional[float] = setting(0.0, "CROWN-IBP's kappa at eps_max: the loss is kappa * clean CE + (1 - kappa) "
                                         "* robust CE, kappa linear in epsilon from 1 to kappa_end; 0 gives the "
                                         "paper's worst-case loss (Eq. 1); null: clean CE with weight 1 throughout")
    grad_clip: Optional[float] = setting(10.0, "clip the gradients' global L2 norm to this (CROWN-IBP's 10); null: none")
    input_range: list = setting([0.0, 1.0], "domain of every input value, [low, high]")
    timing_runs: int = setting(200, "single-sample onnxruntime runs for the CPU inference time")
    time_limit: Optional[float] = setting(None, "stop training after this many seconds")
    progress: bool = setting(True, "show a tqdm progress bar")

    def frozen_epochs(self) -> int:
        """The epochs trained with a frozen mask: ``freeze_last``, or ``T - s - l`` (at most T - 1)."""
        if self.freeze_last is not None:
            return int(self.freeze_last)
        return max(0, min(self.epochs - 1, self.epochs - self.eps_start - self.eps_length))

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate(cfg: CompressConfig, source: str) -> None:
    from .schedule import check_schedule

    checks = [
        (cfg.budget is None or cfg.budget >= 1, "budget must be >= 1"),
        (0 < cfg.budget_fraction <= 1, "budget_fraction must lie in (0, 1]"),
        (cfg.epsilon >= 0, "epsilon must be >= 0"),
        (cfg.explore_every >= 1, "explore_every must be >= 1"),
        (cfg.freeze_last is None or 0 <= cfg.freeze_last < cfg.epochs, "freeze_last must lie in [0, epochs - 1]"),
        (cfg.kappa_end is None or 0 <= cfg.kappa_end <= 1, "kappa_end must lie in [0, 1]"),
        (cfg.grad_clip is None or cfg.grad_clip > 0, "grad_clip must be > 0"),
        (cfg.batch_size >= 1 and cfg.lr > 0, "batch_size and lr must be positive"),
        (0 < cfg.lr_gamma <= 1, "lr_gamma must lie in (0, 1]"),
        (cfg.robust_weight >= 0, "robust_weight must be >= 0"),
        (cfg.n_eval >= 1 and cfg.n_verify >= 0 and cfg.timing_runs >= 1, "n_eval, timing_runs >= 1, n_verify >= 0"),
        (len(cfg.input_range) == 2 and cfg.input_range[0] <= cfg.input_range[1], "input_range must be [low, high]"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{source}: {message}")
    try:
        check_schedule(cfg.epochs, cfg.eps_start, cfg.eps_length)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def config_from_dict(values: dict, source: str = "<config>", base: Optional[CompressConfig] = None) -> CompressConfig:
    """A CompressConfig from ``values`` over ``base`` (or the defaults)."""
    return _config_from_dict(CompressConfig, values, source, base, validate)


def load_config(path: Union[str, os.PathLike], overrides: Optional[dict] = None) -> CompressConfig:
    """Read a YAML config; ``overrides`` (None values ignored) win."""
    return _load_config(CompressConfig, path, overrides, validate)
