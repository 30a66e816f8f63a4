"""The typed config of ``vnnx train``: one flat YAML mapping whose keys are the CLI flags
(``rs_weight`` in YAML is ``--rs-weight`` on the command line; a flag overrides the file).

Unknown keys and values of the wrong type are :class:`~vnnx.errors.ConfigError` naming the
key and the file. Relative paths are relative to the working directory, as flags are.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import typing
from dataclasses import dataclass
from typing import Optional, Union

from vnnx.config import config_from_dict as _config_from_dict
from vnnx.config import load_config as _load_config
from vnnx.config import setting, setting_type
from vnnx.errors import ConfigError


@dataclass
class TrainConfig:
    """Everything one ``vnnx train`` run needs. Defaults follow Xiao et al. (ICLR 2019) where
    they fit a CPU budget; see ``specs/configs/`` for complete examples."""

    seed: int = setting(0, "seed of weights, batch order and PGD starts")
    # data
    data_dir: str = setting("../shared/data/mnist", "MNIST idx files; with only the test set, training uses "
                                                  "test images 1000-9999 and evaluation 0-999")
    n_train: Optional[int] = setting(None, "use only the first N training images (default: all)")
    n_eval: int = setting(1000, "evaluate on the first N evaluation images")
    n_report: int = setting(100, "compute unstable-ReLU counts on the first N evaluation images")
    # model
    architecture: str = setting("mnist-cnn", "a name from vnnx.architectures (mlp, mnist-cnn, conv-small, "
                                        "conv-maxpool, conv-maxpool-overlap)")
    arch: dict = setting({}, "keyword arguments of the architecture, e.g. {hidden: [50, 50]}")
    # optimisation
    epochs: int = setting(10, "passes over the training set")
    batch_size: int = setting(64, "samples per step")
    lr: float = setting(1e-3, "Adam learning rate")
    time_limit: Optional[float] = setting(None, "stop training after this many seconds")
    progress: bool = setting(True, "show a tqdm progress bar")
    # adversarial training
    adversarial: bool = setting(True, "PGD adversarial training (false: plain training, the baseline)")
    epsilon: float = setting(0.1, "L-inf radius of training attacks and of the RS-loss boxes (model-input units)")
    pgd_steps: int = setting(8, "PGD steps per training batch")
    pgd_step_size: Optional[float] = setting(None, "PGD step (default 2.5 * epsilon / steps)")
    ramp_start: float = setting(0.01, "epsilon at the first step of the linear ramp")
    ramp_fraction: float = setting(0.5, "fraction of the epochs over which epsilon ramps up to its value")
    # regularisers
    l1_weight: float = setting(0.0, "weight of the L1 penalty (paper: 2e-5)")
    l1_reuse_weighted: bool = setting(True, "count each conv weight once per output position, as the paper's code")
    rs_weight: float = setting(0.0, "weight of the RS loss (paper: 1e-4 to 12e-4)")
    rs_bounds: str = setting("naive", "bounds for the RS loss: naive | improved | crown-ibp")
    rs_epsilon: Optional[float] = setting(None, "radius of the RS-loss boxes (default: epsilon, from the first step)")
    rs_layer_weights: Optional[list] = setting(None, "per-ReLU-layer multipliers of the RS loss")
    # passes
    prune_weights: bool = setting(False, "after training, zero weights with |w| < weight_threshold")
    weight_threshold: float = setting(1e-3, "small-weight pruning threshold")
    prune_relus: bool = setting(False, "after training, make mostly-active ReLUs identity and mostly-inactive ones zero")
    relu_active_threshold: float = setting(0.9, "a ReLU active on at least this fraction of inputs becomes identity")
    relu_inactive_threshold: float = setting(0.1, "a ReLU active on at most this fraction becomes zero")
    relu_prune_samples: Optional[int] = setting(None, "training images used to count activations (default: all)")
    relu_prune_perturbed: bool = setting(True, "count activations on PGD-perturbed training images")
    input_range: list = setting([0.0, 1.0], "domain of every input value, [low, high]")
    # evaluation
    eval_epsilon: Optional[float] = setting(None, "radius of the evaluation attack and reports (default: epsilon)")
    eval_pgd_steps: int = setting(40, "PGD steps of the evaluation attack")
    report_methods: list = setting(["ibp", "improved-ia"], "bound methods of the unstable-ReLU counts in the metrics")

    @property
    def resolved_eval_epsilon(self) -> float:
        return float(self.epsilon if self.eval_epsilon is None else self.eval_epsilon)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def validate(cfg: TrainConfig, source: str) -> None:
    """Range checks that types alone do not catch; raise ConfigError naming ``source``."""
    from .losses import RS_BOUNDS

    checks = [
        (cfg.epochs >= 1, "epochs must be >= 1"),
        (cfg.batch_size >= 1, "batch_size must be >= 1"),
        (cfg.lr > 0, "lr must be > 0"),
        (cfg.epsilon >= 0, "epsilon must be >= 0"),
        (cfg.pgd_steps >= 1, "pgd_steps must be >= 1"),
        (0.0 <= cfg.ramp_fraction <= 1.0, "ramp_fraction must lie in [0, 1]"),
        (cfg.l1_weight >= 0 and cfg.rs_weight >= 0, "l1_weight and rs_weight must be >= 0"),
        (cfg.rs_bounds in RS_BOUNDS, f"rs_bounds must be one of {', '.join(RS_BOUNDS)}"),
        (0.0 <= cfg.relu_inactive_threshold < cfg.relu_active_threshold <= 1.0,
         "need 0 <= relu_inactive_threshold < relu_active_threshold <= 1"),
        (len(cfg.input_range) == 2 and cfg.input_range[0] <= cfg.input_range[1],
         "input_range must be [low, high] with low <= high"),
        (cfg.n_eval >= 1 and cfg.n_report >= 0, "n_eval must be >= 1 and n_report >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{source}: {message}")
    from .report import REPORT_METHODS

    bad = [m for m in cfg.report_methods if m not in REPORT_METHODS]
    if bad:
        raise ConfigError(f"{source}: report_methods has unknown method(s) {bad}; choose from "
                          f"{', '.join(REPORT_METHODS)}")


def config_from_dict(values: dict, source: str = "<config>", base: Optional[TrainConfig] = None) -> TrainConfig:
    """A TrainConfig from ``values`` (keys are field names), over ``base`` or the defaults."""
    return _config_from_dict(TrainConfig, values, source, base, validate)


def load_config(path: Union[str, os.PathLike], overrides: Optional[dict] = None) -> TrainConfig:
    """Read a YAML config; ``overrides`` (e.g. from CLI flags, None values ignored) win."""
    return _load_config(TrainConfig, path, overrides, validate)


# ----------------------------------------------------------------------------------- flags
def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key (``--rs-weight``, ``--no-adversarial``, ...), default None so
    that only flags actually given override the file."""
    import yaml

    for f in dataclasses.fields(TrainConfig):
        base, _ = setting_type(typing.get_type_hints(TrainConfig)[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f"{f.metadata['help']} (default: {default})"
        name = flag_name(f.name)
        if base is bool:
            parser.add_argument(name, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif base is list:
            parser.add_argument(name, dest=f.name, nargs="+", type=yaml.safe_load, default=None, help=help_text)
        elif base is dict:
            parser.add_argument(name, dest=f.name, type=yaml.safe_load, default=None,
                                help=help_text + "; YAML flow syntax, e.g. '{hidden: [50, 50]}'")
        else:
            parser.add_argument(name, dest=f.name, type=base, default=None, help=help_text,
                                metavar=base.__name__.upper())


def overrides_from_args(args: argparse.Namespace) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)
            if getattr(args, f.name, None) is not None}
