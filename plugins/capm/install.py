"""Switching auto_LiRPA's ``onnx::MaxPool`` between CAPM and the library's own operator.

Prefer the per-model form, which changes no global state::

    BoundedModule(model, x, custom_ops=capm.custom_ops())

:func:`install` / :func:`uninstall` / :func:`use_capm` register the operator globally with
``auto_LiRPA.register_custom_op`` for code that cannot pass ``custom_ops``.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

from vnnx._compat import import_auto_lirpa

import_auto_lirpa()  # compat patches before auto_LiRPA's modules load
from auto_LiRPA.bound_op_map import bound_op_map, register_custom_op, unregister_custom_op

from .operator import BoundCapmMaxPool

OP_NAME = "onnx::MaxPool"
_MISSING = object()
_saved: list = []


def custom_ops() -> dict:
    """``{'onnx::MaxPool': BoundCapmMaxPool}``, for ``BoundedModule(..., custom_ops=...)``."""
    return {OP_NAME: BoundCapmMaxPool}


def is_installed() -> bool:
    return bound_op_map.get(OP_NAME) is BoundCapmMaxPool


def install() -> bool:
    """Register CAPM for ``onnx::MaxPool`` in every BoundedModule built from now on.

    Returns False (and changes nothing) if it is already installed. Affects only models built
    after the call: a BoundedModule keeps the operators it was built with.
    """
    if is_installed():
        return False
    _saved.append(bound_op_map.get(OP_NAME, _MISSING))
    register_custom_op(OP_NAME, BoundCapmMaxPool)
    return True


def uninstall() -> bool:
    """Undo the matching :func:`install`, restoring whatever was registered before it."""
    if not is_installed() or not _saved:
        return False
    previous = _saved.pop()
    if previous is _MISSING:
        unregister_custom_op(OP_NAME)
    else:
        register_custom_op(OP_NAME, previous)
    return True


@contextlib.contextmanager
def use_capm(enabled: bool = True) -> Iterator[None]:
    """``with use_capm(): BoundedModule(...)`` builds models with the CAPM MaxPool.

    ``use_capm(False)`` builds them with auto_LiRPA's own ``BoundMaxPool`` even when CAPM is
    installed; the previous registration is restored on exit either way.
    """
    previous = bound_op_map.get(OP_NAME, _MISSING)
    if enabled:
        register_custom_op(OP_NAME, BoundCapmMaxPool)
    elif previous is not _MISSING:
        unregister_custom_op(OP_NAME)
    try:
        yield
    finally:
        if previous is _MISSING:
            bound_op_map.pop(OP_NAME, None)
        else:
            register_custom_op(OP_NAME, previous)
