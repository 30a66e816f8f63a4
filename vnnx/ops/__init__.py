"""One module per operator kind (DESIGN.md: an operator's whole behaviour lives in one file).

Each module defines an :class:`~vnnx.ops.base.Operator` subclass and registers how it is built
from ONNX nodes with :func:`onnx_builder`. A builder gets the ONNX node, its attributes and its
arguments (numpy arrays for constants, :class:`Var` for tensors that depend on the network
input) and returns the operator and the :class:`Var` arguments it reads, in order.

Adding an operator = one module here (plus its import in :data:`MODULES`) and its tests.

Plugins replace an operator kind's relaxation by announcing a :class:`~vnnx.ops.base.Relaxation`
(its dense and sparse backward steps) for that kind in their :class:`vnnx.registry.Plugin`
(``extras["relaxations"]``, CAPM's MaxPool chain); the engine is given the chosen ones
(:class:`vnnx.engine.GraphEngine` ``relaxations``), never probes attributes.

Operators without an ONNX builder are made by graph passes: ``select`` (entries picked by index,
:func:`vnnx.graph.as_splittable`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from vnnx.ops.base import Activation, LinearOperator, Operator  # noqa: F401

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Var:
    """An argument that depends on the network input: node ``index`` of the graph, per-sample
    ``shape`` (ONNX shape, batch dim of 1 included)."""

    index: int
    shape: Shape


#: ONNX op_type -> builder(node, attrs, args, label) -> (operator, [Var, ...]).
ONNX_BUILDERS: dict[str, Callable] = {}
#: ONNX op_types that are the identity on their first argument.
ALIASES = frozenset({"Identity", "Dropout", "Cast"})

MODULES = ("linear", "conv", "batchnorm", "elementwise", "add", "concat", "reshape", "transpose", "pad",
           "avgpool", "maxpool", "relu", "leaky_relu", "sigmoid", "tanh", "select")


def onnx_builder(*op_types: str):
    """Decorator: register a builder for the given ONNX op types."""
    def deco(fn):
        for t in op_types:
            ONNX_BUILDERS[t] = fn
        return fn
    return deco


def load_all() -> None:
    for name in MODULES:
        importlib.import_module(f"vnnx.ops.{name}")


def attributes(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
