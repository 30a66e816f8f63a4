"""The bound graph: a network as a DAG of operator nodes (residual Adds, Concats, ...).

Node 0 is the network input; every other node applies one :mod:`vnnx.ops` operator to earlier
nodes (``inputs`` are node indices, so the list is in topological order). Shapes are per-sample
ONNX shapes, the file's batch dim of 1 included: ``(1, 3, 32, 32)``. Tensors flowing through
the graph carry a leading sample axis: ``(B, *shape)``.

:func:`from_onnx` builds the graph from an ONNX model: constant subgraphs (the exporter's
Shape/Gather/Concat plumbing) are evaluated, Identity/Dropout/Cast vanish, and a
BatchNormalization whose input is a Conv or Gemm read by nothing else is folded into it.

Example::

    graph = from_onnx(load_onnx("resnet.onnx"))
    y = graph.forward(x)               # x: (N, n_inputs) float64 -> (N, n_outputs)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from vnnx.errors import ShapeMismatchError, UnsupportedOpError, VnnxError
from vnnx.ops import ALIASES, ONNX_BUILDERS, Var, attributes, load_all
from vnnx.ops.base import Operator

Shape = tuple[int, ...]


@dataclass
class Node:
    """``op`` is None for the input node. ``name``: the ONNX node (or tensor) it came from."""

    name: str
    op: Optional[Operator]
    inputs: tuple[int, ...]
    shape: Shape


class Graph:
    """A DAG of operator nodes with one input (node 0) and one output (``output``)."""

    def __init__(self, nodes: list[Node], output: int, label: str = "network") -> None:
        self.nodes = nodes
        self.output = output
        self.label = label
        self._consumers: Optional[list[list[int]]] = None
        #: for a graph built by :meth:`vnnx.network.Network.to_graph`: the node of each layer
        self.layer_nodes: Optional[list[int]] = None

    # ------------------------------------------------------------------ structure
    @property
    def input_shape(self) -> Shape:
        return self.nodes[0].shape

    @property
    def output_shape(self) -> Shape:
        return self.nodes[self.output].shape

    @property
    def n_inputs(self) -> int:
        return int(math.prod(self.input_shape))

    @property
    def n_outputs(self) -> int:
        return int(math.prod(self.output_shape))

    @property
    def is_piecewise_linear(self) -> bool:
        return all(n.op is None or n.op.piecewise_linear for n in self.nodes)

    def consumers(self, k: int) -> list[int]:
        """Indices of the nodes that read node ``k``."""
        if self._consumers is None:
            cons: list[list[int]] = [[] for _ in self.nodes]
            for j, n in enumerate(self.nodes):
                for i in dict.fromkeys(n.inputs):
                    cons[i].append(j)
            self._consumers = cons
        return self._consumers[k]

    def nonlinear_inputs(self) -> list[int]:
        """Nodes read by a nonlinear operator (ReLU, MaxPool, ...): their bounds shape the
        relaxation, so the engine refines them."""
        return [k for k in range(len(self.nodes)) if any(not self.nodes[j].op.linear for j in self.consumers(k))]

    def ancestors(self, k: int) -> set[int]:
        seen, stack = {k}, [k]
        while stack:
            for i in self.nodes[stack.pop()].inputs:
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
        return seen

    def describe(self) -> str:
        lines = [f"{self.label}: input {self.input_shape}, output {self.output_shape}, {len(self.nodes) - 1} operators"]
        for k, n in enumerate(self.nodes[1:], 1):
            lines.append(f"  {k:3d} {n.op.describe():28s} <- {list(n.inputs)}  {n.shape}  ({n.name})")
        return "\n".join(lines)

    # ------------------------------------------------------------------ evaluation
    def run(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every node's value for ``x``: (B, *input_shape) torch (any float dtype, autograd ok)."""
        vals = [x]
        for n in self.nodes[1:]:
            vals.append(n.op.forward(*(vals[i] for i in n.inputs)))
        return vals

    def forward(self, x: np.ndarray, return_all: bool = False):
        """float64 evaluation: ``x``: (N, n_inputs) -> (N, n_outputs) numpy (or, with
        ``return_all``, every operator node's value flattened per sample: index k is node
        k + 1, as :meth:`vnnx.network.Network.forward` lists its layers)."""
        x = np.asarray(x, dtype=np.float64)
        x = x.reshape(len(x), -1)
        if x.shape[1] != self.n_inputs:
            raise ShapeMismatchError(f"{self.label}: expects {self.n_inputs} inputs per sample, got {x.shape[1]}")
        with torch.no_grad():
            vals = self.run(torch.from_numpy(x).reshape((len(x),) + self.input_shape))
        if return_all:
            return [v.reshape(len(x), -1).numpy() for v in vals[1:]]
        return vals[self.output].reshape(len(x), -1).numpy()

    def to_torch(self, dtype=None) -> torch.nn.Module:
        """A torch module on (N, n_inputs) flattened inputs -> (N, n_outputs), computing in
        float64 and returning ``dtype`` (default: the input's); differentiable (PGD)."""
        return GraphModule(self, dtype)


class GraphModule(torch.nn.Module):
    """:class:`Graph` as a torch module (see :meth:`Graph.to_torch`)."""

    def __init__(self, graph: Graph, dtype=None) -> None:
        super().__init__()
        self.graph = graph
        self.dtype = dtype

    def forward(self, x):
        out_dtype = self.dtype or x.dtype
        h = x.to(torch.float64).reshape((x.shape[0],) + self.graph.input_shape)
        return self.graph.run(h)[self.graph.output].reshape(x.shape[0], -1).to(out_dtype)


# ---------------------------------------------------------------------------- ONNX import
def from_onnx(model, label: Optional[str] = None) -> Graph:
    """The graph of a loaded model (:class:`vnnx.io.onnx.LoadedModel`) or an ONNX proto with a
    fixed input shape. Raises :class:`UnsupportedOpError` naming the operator and node."""
    import onnx

    load_all()
    if isinstance(model, onnx.ModelProto):
        from vnnx.io.onnx import _graph_input

        proto = model
        label = label or "model"
        input_name, input_shape, _ = _graph_input(proto, label)
    else:
        proto = model.onnx_model
        label = label or model.path
        input_name, input_shape = model.input_name, tuple(model.input_shape)
    g = proto.graph
    values: dict[str, object] = {t.name: onnx.numpy_helper.to_array(t) for t in g.initializer}
    nodes = [Node(input_name, None, (), tuple(input_shape))]
    values[input_name] = Var(0, tuple(input_shape))
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    opsets = list(proto.opset_import)

    for idx, node in enumerate(g.node):
        name = node.name or f"{node.op_type}_{idx}"
        if not node.name:   # builders name the node in their errors
            named = onnx.NodeProto()
            named.CopyFrom(node)
            named.name = name
            node = named
        args = []
        for i in node.input:
            if i == "":
                args.append(None)
            elif i not in values:
                raise VnnxError(f"{label}: node '{name}' reads '{i}', which nothing produces")
            else:
                args.append(values[i])
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(f"{label}: operator {node.domain}.{node.op_type} (node '{name}') is not supported")
        has_var = any(isinstance(a, Var) for a in args)
        if node.op_type == "Shape" and has_var:
            shape = np.array(args[0].shape, dtype=np.int64)
            a = attributes(node)
            values[node.output[0]] = shape[a.get("start", 0):a.get("end", len(shape))]
            continue
        if not has_var:
            for out, val in zip(node.output, _evaluate_constant(node, args, opsets, label, name)):
                values[out] = val
            continue
        if node.op_type in ALIASES:
            values[node.output[0]] = args[0]
            continue
        builder = ONNX_BUILDERS.get(node.op_type)
        if builder is None:
            raise UnsupportedOpError(f"{label}: operator {node.op_type} (node '{name}') is not supported by the "
                                     f"bound graph; supported: {', '.join(sorted(ONNX_BUILDERS))}")
        attrs = attributes(node)
        if node.op_type == "BatchNormalization":
            folded = _fold_batchnorm(nodes, node, attrs, args, uses, label)
            if folded is not None:
                values[node.output[0]] = folded
                continue
        op, vars_ = builder(node, attrs, args, label)
        op.in_shapes = tuple(tuple(v.shape) for v in vars_)
        try:
            with torch.no_grad():
                out = op.forward(*(torch.zeros((1,) + tuple(v.shape), dtype=torch.float64) for v in vars_))
        except (RuntimeError, ValueError, IndexError) as exc:
            raise UnsupportedOpError(f"{label}: {node.op_type} node '{name}' fails on inputs of shape "
                                     f"{[v.shape for v in vars_]}: {exc}") from exc
        op.out_shape = tuple(out.shape[1:])
        nodes.append(Node(name, op, tuple(v.index for v in vars_), op.out_shape))
        values[node.output[0]] = Var(len(nodes) - 1, op.out_shape)
    if len(g.output) != 1:
        raise UnsupportedOpError(f"{label}: model has {len(g.output)} outputs; vnnx handles exactly one")
    out = values.get(g.output[0].name)
    if not isinstance(out, Var):
        raise UnsupportedOpError(f"{label}: the output does not depend on the input")
    return _pruned(nodes, out.index, label)


def _evaluate_constant(node, args, opsets, label, name):
    import onnx
    from onnx.reference import ReferenceEvaluator

    ins = [f"in{i}" if a is not None else "" for i, a in enumerate(args)]
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node(node.op_type, ins, list(node.output), domain=node.domain, **attributes(node))],
        "const", [onnx.helper.make_tensor_value_info(n, onnx.helper.np_dtype_to_tensor_dtype(np.asarray(a).dtype),
                                                     np.shape(a))
                  for n, a in zip(ins, args) if a is not None],
        [onnx.helper.make_empty_tensor_value_info(o) for o in node.output])
    try:
        model = onnx.helper.make_model(graph, opset_imports=opsets)
        feeds = {n: np.asarray(a) for n, a in zip(ins, args) if a is not None}
        return ReferenceEvaluator(model).run(None, feeds)
    except Exception as exc:
        raise UnsupportedOpError(f"{label}: cannot evaluate the constant node '{name}' ({node.op_type}): {exc}") from exc


def _fold_batchnorm(nodes, node, attrs, args, uses, label) -> Optional[Var]:
    """Fold a BatchNormalization into the Conv / Linear node that feeds it when nothing else
    reads that node's output; returns the folded node's Var, or None."""
    from vnnx.ops.batchnorm import batchnorm_scale_shift
    from vnnx.ops.conv import Conv
    from vnnx.ops.linear import Linear

    x = args[0]
    if not isinstance(x, Var) or x.index == 0 or uses.get(node.input[0], 0) != 1:
        return None
    if any(isinstance(a, Var) for a in args[1:]) or len(args) < 5 or attrs.get("training_mode", 0):
        return None
    prev = nodes[x.index].op
    if type(prev) not in (Conv, Linear) or len(x.shape) < 2:
        return None
    scale, shift = batchnorm_scale_shift(attrs, args, len(x.shape))
    scale, shift = scale.reshape(-1), shift.reshape(-1)
    if type(prev) is Linear and len(x.shape) != 2:
        return None
    w = prev.weight.numpy()
    if w.shape[0] != scale.size:
        return None
    b = np.zeros(w.shape[0]) if prev.bias is None else prev.bias.numpy()
    w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
    b = b * scale + shift
    if type(prev) is Conv:
        new = Conv(w, b, prev.stride, prev.pads, prev.dilation, prev.groups)
    else:
        new = Linear(w, b)
    new.in_shapes, new.out_shape = prev.in_shapes, prev.out_shape
    nodes[x.index].op = new
    return x


def _pruned(nodes: list[Node], output: int, label: str) -> Graph:
    keep = sorted(Graph(nodes, output).ancestors(output))
    if 0 not in keep:
        raise UnsupportedOpError(f"{label}: the output does not depend on the input")
    remap = {old: new for new, old in enumerate(keep)}
    out = [Node(nodes[k].name, nodes[k].op, tuple(remap[i] for i in nodes[k].inputs), nodes[k].shape) for k in keep]
    return Graph(out, remap[output], label)


def as_splittable(graph: Graph) -> tuple[Graph, Optional[dict[int, int]]]:
    """The same function with every operator that a branch and bound cannot split as it is
    written as operators it can (each operator's :meth:`~vnnx.ops.base.Operator.as_splittable`:
    every MaxPool as a chain of ReLUs), and where each node of ``graph`` went (old index -> new
    index; those nodes compute the same values). ``(graph, None)`` when no operator changed.

    A MaxPool window's max is ``z_1 = x_1``, ``z_{j+1} = z_j + ReLU(x_{j+1} - z_j)`` over its
    slots (:meth:`vnnx.ops.maxpool.MaxPool.as_splittable`): splitting those ReLUs is splitting
    the max (which cell wins), so a ReLU branch and bound is complete on MaxPool networks
    (:mod:`vnnx.graph_bab`); CROWN on the chain is CAPM's relaxation in the window's natural slot
    order."""
    nodes = [graph.nodes[0]]
    new_of = {0: 0}
    changed = False

    def add(name, op, inputs, shape, in_shapes):
        op.in_shapes, op.out_shape = tuple(in_shapes), tuple(shape)
        nodes.append(Node(name, op, tuple(inputs), tuple(shape)))
        return len(nodes) - 1

    for k, n in enumerate(graph.nodes[1:], 1):
        ins = tuple(new_of[i] for i in n.inputs)
        out = n.op.as_splittable(add, n.name, ins, [graph.nodes[i].shape for i in n.inputs], n.shape)
        if out is None:
            nodes.append(Node(n.name, n.op, ins, n.shape))
            out = len(nodes) - 1
        else:
            changed = True
        new_of[k] = out
    if not changed:
        return graph, None
    return Graph(nodes, new_of[graph.output], f"{graph.label} (split form)"), new_of
