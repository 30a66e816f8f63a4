"""YAML configs that mirror CLI flags. Unknown keys are errors, never silently ignored."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
