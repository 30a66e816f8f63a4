"""Project exceptions. The CLI turns any :class:`VnnxError` into one line and exit code 2."""
from __future__ import annotations


class VnnxError(Exception):
    """Base of every error vnnx raises on purpose. The message names the file, node or row."""


class InputFileError(VnnxError):
    """A file is missing, unreadable or malformed."""


class UnsupportedOpError(VnnxError):
    """The network uses an operator (or an attribute of one) vnnx cannot handle."""


class ShapeMismatchError(VnnxError):
    """Two things that must agree in size do not (spec vs network, data vs network)."""


class SolverError(VnnxError):
    """An LP/MILP back end failed, or is unavailable."""


class ConfigError(VnnxError):
    """A YAML config or a flag value is invalid."""
