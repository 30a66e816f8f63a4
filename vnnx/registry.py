"""How plugins announce themselves.

A plugin is a package exposing one :class:`Plugin` object, named in the ``vnnx.plugins``
entry-point group (see ``setup.cfg``)::

    [options.entry_points]
    vnnx.plugins =
        capm = vnnx_plugins.capm:PLUGIN

Third-party packages add their own the same way. The CLI lists what is registered
(``vnnx plugins``) and lets each plugin add its subcommands through ``add_commands``.
Plugins are found by entry point, never by class name.
"""
from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass, field
from importlib import metadata
from typing import Callable, Optional

ENTRY_POINT_GROUP = "vnnx.plugins"

KINDS = ("bound-operator", "pass", "regularizer", "analysis")


@dataclass(frozen=True)
class Plugin:
    """What a plugin tells vnnx about itself.

    ``kind``: one of :data:`KINDS`. ``add_commands(subparsers)`` may add CLI subcommands; each
    subcommand must set ``func=handler(args) -> int`` via ``set_defaults``.
    """

    name: str
    kind: str
    summary: str
    add_commands: Optional[Callable[[argparse._SubParsersAction], None]] = None
    extras: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"plugin {self.name!r}: kind {self.kind!r} is not one of {KINDS}")


@dataclass(frozen=True)
class LoadFailure:
    name: str
    error: str


def discover() -> tuple[list[Plugin], list[LoadFailure]]:
    """Load every plugin in the entry-point group. A broken plugin is reported, not fatal."""
    plugins: list[Plugin] = []
    failures: list[LoadFailure] = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            # A plugin's imports must not change the process's warning filters (auto_LiRPA
            # sets simplefilter("once") at import), nor print their deprecation chatter.
            with warnings.catch_warnings(record=True):
                obj = ep.load()
        except Exception as exc:  # a third-party plugin must not take the CLI down
            failures.append(LoadFailure(ep.name, f"{type(exc).__name__}: {exc}"))
            continue
        if not isinstance(obj, Plugin):
            failures.append(LoadFailure(ep.name, f"{ep.value} is not a vnnx.registry.Plugin"))
            continue
        plugins.append(obj)
    return plugins, failures
