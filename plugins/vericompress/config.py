"""The typed config of ``vnnx compress``: a flat YAML mapping; ``--budget`` and ``--epsilon`` on
the command line override ``budget`` and ``epsilon``. Unknown keys and wrongly typed values are
:class:`~vnnx.errors.ConfigError` naming the key and the file."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from vnnx.errors import ConfigError


def _f(default: Any, help: str) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class CompressConfig:
    """One VeriCompress run (see ``specs/configs/vericompress_mnist.yaml``)."""

    seed: int = _f(0, "seed of the initial weights, the random sub-network and the batch order")
    data_dir: str = _f("../shared/data/mnist", "MNIST idx files (train on test images 1000-9999, evaluate on 0-999)")
    n_train: Optional[int] = _f(None, "use only the first N training images (default: all)")
    n_eval: int = _f(1000, "standard accuracy on the first N evaluation images")
    n_verify: int = _f(200, "verified accuracy (IBP, CROWN) on the first N evaluation images")
    backbone: str = _f("cnn4", "backbone: cnn4 (4-layer CNN), cnn7 (7-layer CNN), fc (fully connected)")
    arch: dict = _f({}, "keyword arguments of the backbone factory, e.g. {hidden: [256, 256]} for fc")
    budget: Optional[int] = _f(None, "parameter budget K (default: budget_fraction of the backbone)")
    budget_fraction: float = _f(0.1, "K as a fraction of the backbone's parameters when budget is not given")
    epsilon: float = _f(0.1, "eps_max, the L-inf radius of training and verification (model-input units)")
    epochs: int = _f(10, "T, the number of training epochs")
    eps_start: int = _f(1, "s: epsilon is 0 before this epoch")
    eps_length: int = _f(5, "l: epsilon ramps from 0 to eps_max over this many epochs")
    explore_every: int = _f(1, "T-exp: deactivate the least important nodes/filters every this many epochs")
    explore_fraction: Optional[float] = _f(0.2, "most of a layer's live units swapped per deactivation, annealed "
                                                "linearly to 0 by the last epoch (null: no limit)")
    batch_size: int = _f(64, "samples per step")
    lr: float = _f(1e-3, "Adam learning rate")
    lr_gamma: float = _f(0.6, "per-epoch learning-rate decay once epsilon has reached eps_max")
    robust_weight: float = _f(1.0, "weight of the CROWN-IBP robust cross-entropy (the clean one has weight 1)")
    input_range: list = _f([0.0, 1.0], "domain of every input value, [low, high]")
    timing_runs: int = _f(200, "single-sample onnxruntime runs for the CPU inference time")
    time_limit: Optional[float] = _f(None, "stop training after this many seconds")
    progress: bool = _f(True, "show a tqdm progress bar")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


def _coerce(key: str, value: Any, f: dataclasses.Field, source: str) -> Any:
    tp = str(f.type)
    optional = tp.startswith("Optional")
    base = _TYPES[tp.replace("Optional[", "").rstrip("]")]
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{source}: key {key!r} must not be null")
    if base is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
    elif base is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif base is not float and base is not int and isinstance(value, base):
        return value
    raise ConfigError(f"{source}: key {key!r} must be of type {base.__name__}, got {value!r}")


def validate(cfg: CompressConfig, source: str) -> None:
    from .schedule import check_schedule

    checks = [
        (cfg.budget is None or cfg.budget >= 1, "budget must be >= 1"),
        (0 < cfg.budget_fraction <= 1, "budget_fraction must lie in (0, 1]"),
        (cfg.epsilon >= 0, "epsilon must be >= 0"),
        (cfg.explore_every >= 1, "explore_every must be >= 1"),
        (cfg.explore_fraction is None or 0 <= cfg.explore_fraction <= 1, "explore_fraction must lie in [0, 1]"),
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
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(CompressConfig)}
    unknown = sorted(k for k in values if k not in fields)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; known keys: {', '.join(fields)}")
    merged = dataclasses.asdict(base) if base is not None else {}
    for key, value in values.items():
        merged[key] = _coerce(key, value, fields[key], source)
    cfg = CompressConfig(**merged)
    validate(cfg, source)
    return cfg


def load_config(path: Union[str, os.PathLike], overrides: Optional[dict] = None) -> CompressConfig:
    """Read a YAML config; ``overrides`` (None values ignored) win."""
    from vnnx.config import load_yaml

    cfg = config_from_dict(load_yaml(path) or {}, str(path))
    if overrides:
        cfg = config_from_dict({k: v for k, v in overrides.items() if v is not None}, "command line", cfg)
    return cfg
