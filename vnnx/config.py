"""YAML configs that mirror CLI flags. Unknown keys are errors, never silently ignored."""
from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar, Union

from vnnx.errors import ConfigError


def load_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file; a missing or malformed file is a :class:`ConfigError` naming it."""
    import yaml

    p = Path(path)
    try:
        return yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: malformed YAML: {' '.join(str(exc).split())}") from None


C = TypeVar("C")
# Config keys that name files or folders: relative values in a YAML file are read relative to it.
PATH_KEYS = frozenset({"data_dir", "mnist_dir"})


def setting(default: Any, help: str) -> Any:
    """A dataclass field of a typed config, with its ``help`` (list/dict defaults are copied)."""
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def setting_type(tp: Any) -> tuple[Any, bool]:
    """``(T, optional)`` for ``T`` or ``Optional[T]``; ``list[X]``/``dict`` reduce to list/dict."""
    optional = False
    if typing.get_origin(tp) is Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        tp = args[0]
    origin = typing.get_origin(tp)
    return (origin or tp), optional


def coerce_setting(key: str, value: Any, tp: Any, source: str) -> Any:
    """``value`` checked (and, for numbers, converted) against the annotation ``tp``."""
    base, optional = setting_type(tp)
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


def config_from_dict(cls: type[C], values: Any, source: str, base: Optional[C] = None,
                     validate: Optional[Callable[[C, str], None]] = None) -> C:
    """A ``cls`` (a dataclass of :func:`setting` fields) from ``values`` over ``base`` or the
    defaults. Unknown keys and wrongly typed values are a :class:`ConfigError` naming
    ``source``; ``validate(cfg, source)`` then runs the range checks."""
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: expected a mapping of settings, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    unknown = sorted(k for k in values if k not in hints)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"known keys: {', '.join(hints)}")
    merged = dataclasses.asdict(base) if base is not None else {}
    for key, value in values.items():
        merged[key] = coerce_setting(key, value, hints[key], source)
    cfg = cls(**merged)
    if validate is not None:
        validate(cfg, source)
    return cfg


def load_config(cls: type[C], path: str | os.PathLike, overrides: Optional[dict] = None,
                validate: Optional[Callable[[C, str], None]] = None) -> C:
    """Read a YAML config into ``cls``; ``overrides`` (e.g. CLI flags; None values ignored) win.

    Relative paths in the file (the keys in :data:`PATH_KEYS`) are relative to the file's own
    folder, wherever the user stands; paths given as overrides are relative to the working
    directory, as on any command line."""
    values = load_yaml(path) or {}
    if isinstance(values, dict):
        base = Path(path).parent
        values = {k: (os.path.normpath(base / v) if k in PATH_KEYS and isinstance(v, str) and v
                      and not Path(v).is_absolute() else v) for k, v in values.items()}
    cfg = config_from_dict(cls, values, str(path), validate=validate)
    if overrides:
        cfg = config_from_dict(cls, {k: v for k, v in overrides.items() if v is not None}, "command line",
                               cfg, validate)
    return cfg


class BenchmarkTable:
    """Settings per VNN-COMP benchmark name, with a ``default`` row for the others."""

    def __init__(self, rows: dict[str, dict], source: str) -> None:
        self.rows = rows
        self.source = source

    def get(self, benchmark: str) -> dict:
        merged = dict(self.rows.get("default", {}))
        merged.update(self.rows.get(benchmark, {}))
        return merged


def load_benchmark_table(path: str | os.PathLike, allowed: set[str]) -> BenchmarkTable:
    """Read a ``name -> {flag: value}`` table, rejecting flags outside ``allowed``."""
    doc = load_yaml(path) or {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of benchmark names to settings")
    for name, row in doc.items():
        if not isinstance(row, dict):
            raise ConfigError(f"{path}: benchmark {name!r} must map flags to values")
        unknown = set(row) - allowed
        if unknown:
            raise ConfigError(f"{path}: benchmark {name!r} has unknown key(s) {', '.join(sorted(unknown))}; "
                              f"allowed: {', '.join(sorted(allowed))}")
    return BenchmarkTable(doc, str(path))
