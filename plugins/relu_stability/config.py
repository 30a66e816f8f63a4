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
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from vnnx.errors import ConfigError


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    """Everything one ``vnnx train`` run needs. Defaults follow Xiao et al. (ICLR 2019) where
    they fit a CPU budget; see ``specs/configs/`` for complete examples."""

    seed: int = _f(0, "seed of weights, batch order and PGD starts")
    # data
    data_dir: str = _f("../shared/data/mnist", "MNIST idx files; with only the test set, training uses "
                                                  "test images 1000-9999 and evaluation 0-999")
    n_train: Optional[int] = _f(None, "use only the first N training images (default: all)")
    n_eval: int = _f(1000, "evaluate on the first N evaluation images")
    n_report: int = _f(100, "compute unstable-ReLU counts on the first N evaluation images")
    # model
    architecture: str = _f("mnist-cnn", "a name from vnnx.architectures (mlp, mnist-cnn, conv-small, "
                                        "conv-maxpool, conv-maxpool-overlap)")
    arch: dict = _f({}, "keyword arguments of the architecture, e.g. {hidden: [50, 50]}")
    # optimisation
    epochs: int = _f(10, "passes over the training set")
    batch_size: int = _f(64, "samples per step")
    lr: float = _f(1e-3, "Adam learning rate")
    time_limit: Optional[float] = _f(None, "stop training after this many seconds")
    progress: bool = _f(True, "show a tqdm progress bar")
    # adversarial training
    adversarial: bool = _f(True, "PGD adversarial training (false: plain training, the baseline)")
    epsilon: float = _f(0.1, "L-inf radius of training attacks and of the RS-loss boxes (model-input units)")
    pgd_steps: int = _f(8, "PGD steps per training batch")
    pgd_step_size: Optional[float] = _f(None, "PGD step (default 2.5 * epsilon / steps)")
    ramp_start: float = _f(0.01, "epsilon at the first step of the linear ramp")
    ramp_fraction: float = _f(0.5, "fraction of the epochs over which epsilon ramps up to its value")
    # regularisers
    l1_weight: float = _f(0.0, "weight of the L1 penalty (paper: 2e-5)")
    l1_reuse_weighted: bool = _f(True, "count each conv weight once per output position, as the paper's code")
    rs_weight: float = _f(0.0, "weight of the RS loss (paper: 1e-4 to 12e-4)")
    rs_bounds: str = _f("naive", "bounds for the RS loss: naive | improved | crown-ibp")
    rs_epsilon: Optional[float] = _f(None, "radius of the RS-loss boxes (default: epsilon, from the first step)")
    rs_layer_weights: Optional[list] = _f(None, "per-ReLU-layer multipliers of the RS loss")
    # passes
    prune_weights: bool = _f(False, "after training, zero weights with |w| < weight_threshold")
    weight_threshold: float = _f(1e-3, "small-weight pruning threshold")
    prune_relus: bool = _f(False, "after training, make mostly-active ReLUs identity and mostly-inactive ones zero")
    relu_active_threshold: float = _f(0.9, "a ReLU active on at least this fraction of inputs becomes identity")
    relu_inactive_threshold: float = _f(0.1, "a ReLU active on at most this fraction becomes zero")
    relu_prune_samples: Optional[int] = _f(None, "training images used to count activations (default: all)")
    relu_prune_perturbed: bool = _f(True, "count activations on PGD-perturbed training images")
    input_range: list = _f([0.0, 1.0], "domain of every input value, [low, high]")
    # evaluation
    eval_epsilon: Optional[float] = _f(None, "radius of the evaluation attack and reports (default: epsilon)")
    eval_pgd_steps: int = _f(40, "PGD steps of the evaluation attack")
    report_methods: list = _f(["ibp", "improved-ia"], "bound methods of the unstable-ReLU counts in the metrics")

    @property
    def resolved_eval_epsilon(self) -> float:
        return float(self.epsilon if self.eval_epsilon is None else self.eval_epsilon)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def _base(tp: Any) -> tuple[Any, bool]:
    """``(T, optional)`` for ``T`` or ``Optional[T]``; ``list[X]``/``dict`` reduce to list/dict."""
    optional = False
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    origin = typing.get_origin(tp)
    return (origin or tp), optional


def _coerce(key: str, value: Any, tp: Any, source: str) -> Any:
    base, optional = _base(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: key {key!r} must not be null")
    if base is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: key {key!r} must be true or false, got {value!r}")
    if base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{source}: key {key!r} must be an integer, got {value!r}")
    if base is float:
        # YAML 1.1 reads "1e-4" (no dot) as a string; accept any number spelling.
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{source}: key {key!r} must be a number, got {value!r}")
    if base is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{source}: key {key!r} must be a string, got {value!r}")
    if base is list:
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ConfigError(f"{source}: key {key!r} must be a list, got {value!r}")
    if base is dict:
        if isinstance(value, dict):
            return dict(value)
        raise ConfigError(f"{source}: key {key!r} must be a mapping, got {value!r}")
    raise ConfigError(f"{source}: key {key!r} has an unsupported type")  # pragma: no cover


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
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    hints = _hints()
    unknown = sorted(k for k in values if k not in hints)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"known keys: {', '.join(hints)}")
    merged = dataclasses.asdict(base) if base is not None else {}
    for key, value in values.items():
        merged[key] = _coerce(key, value, hints[key], source)
    cfg = TrainConfig(**merged)
    validate(cfg, source)
    return cfg


def load_config(path: Union[str, os.PathLike], overrides: Optional[dict] = None) -> TrainConfig:
    """Read a YAML config; ``overrides`` (e.g. from CLI flags, None values ignored) win."""
    from vnnx.config import load_yaml

    doc = load_yaml(path)
    cfg = config_from_dict(doc or {}, str(path))
    if overrides:
        cfg = config_from_dict({k: v for k, v in overrides.items() if v is not None}, "command line", cfg)
    return cfg


# ----------------------------------------------------------------------------------- flags
def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key (``--rs-weight``, ``--no-adversarial``, ...), default None so
    that only flags actually given override the file."""
    import yaml

    for f in dataclasses.fields(TrainConfig):
        base, _ = _base(_hints()[f.name])
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
