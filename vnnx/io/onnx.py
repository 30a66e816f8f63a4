"""ONNX in and out: load a file, run it in onnxruntime, export back.

Data flow (DESIGN.md): ONNX file -> :class:`LoadedModel` (the proto; an onnx2torch module for the
load-time cross-check) -> bound graph (:func:`vnnx.graph.from_onnx`, the one representation the
engines read) -> plain :class:`~vnnx.network.Network` layer chain derived from it for the plugins
(:func:`to_network`) -> ... -> torch module -> ONNX file (:func:`export_onnx`), checked against
onnxruntime on seeded random inputs before it is written atomically.

Sample layout: every function that takes or returns data uses flattened samples, ``x``:
``(N, n_inputs)`` in C order of the ONNX input tensor (the order of VNN-LIB's ``X_i``) and
``y``: ``(N, n_outputs)``. The ONNX batch dimension is not a sample axis: most VNN-COMP files
fix it at 1, so samples are fed one at a time unless the file declares a symbolic batch dim.

Example::

    model = load_onnx("mnist-net_256x2.onnx")          # checked against onnxruntime
    net = to_network(model)                            # Dense/Relu chain, float64
    y = run_onnxruntime(model, x)                      # x: (N, 784) -> y: (N, 10)
    network_to_onnx(net, "out.onnx")                   # same input shape (1, 784, 1)
"""
from __future__ import annotations

import copy
import gzip
import itertools
import math
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, Union

import numpy as np
import onnx
import torch

from vnnx.errors import InputFileError, ShapeMismatchError, UnsupportedOpError, VnnxError
from vnnx.io._convert import convert_model
from vnnx.network import Network
from vnnx.util import write_bytes_atomic

PathLike = Union[str, os.PathLike]

#: Operators vnnx accepts (default ONNX domain). The first group is what VNN-COMP and ERAN
#: networks use; the second is the shape plumbing torch's exporter emits for
#: ``x.view(x.size(0), -1)`` and friends, which is constant once the input shape is fixed.
SUPPORTED_OPS: frozenset[str] = frozenset({
    "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "Relu", "MaxPool", "AveragePool",
    "Flatten", "Reshape", "Transpose", "Constant", "BatchNormalization", "Pad", "Sigmoid",
    "Tanh", "Identity", "LeakyRelu",
    "Dropout", "Squeeze", "Unsqueeze", "Shape", "Gather", "Concat", "Cast",
})

#: Opset of exported files.
EXPORT_OPSET = 13

#: Agreement required between two float32 evaluations of the same network (onnx2torch vs
#: onnxruntime, exported file vs reference): ``max|a - b| <= ATOL + RTOL * max|b|`` per sample.
CHECK_RTOL = 1e-4
CHECK_ATOL = 1e-5
#: Seeded random inputs used by the checks: ``CHECK_SAMPLES`` draws, uniform in [-1, 1].
CHECK_SAMPLES = 8
CHECK_SEED = 0


@dataclass
class LoadedModel:
    """An ONNX network and its torch twin.

    ``input_shape``/``output_shape`` are the exact ONNX tensor shapes (a symbolic leading batch
    dim reads as 1, see ``batch_dynamic``), e.g. ``(1, 784, 1)``, ``(1, 1, 28, 28)``, ``(1,)``.
    ``module`` is the onnx2torch ``GraphModule`` (float32, eval mode) taking one tensor of
    ``input_shape``: :func:`load_onnx` checks it against onnxruntime and reads the output shape
    from it; nothing downstream reads it (the graph and the chain come from ``onnx_model``).
    ``converted_model`` is the proto onnx2torch converted: ``onnx_model``
    itself, or its opset upgrade when the file's opset was too old for onnx2torch.
    """

    path: str
    onnx_model: onnx.ModelProto
    module: torch.nn.Module
    input_name: str
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    converted_model: onnx.ModelProto | None = field(default=None, repr=False)
    batch_dynamic: bool = False
    _session: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def n_inputs(self) -> int:
        """Flattened input size per sample."""
        return int(math.prod(self.input_shape))

    @property
    def n_outputs(self) -> int:
        """Flattened output size per sample."""
        return int(math.prod(self.output_shape))


# ----------------------------------------------------------------------------------- reading
def read_model_proto(path: PathLike) -> onnx.ModelProto:
    """Parse and validate an ``.onnx`` or ``.onnx.gz`` file (gzip is detected by content).

    Raises :class:`InputFileError` naming the file when it is missing, unreadable, not an ONNX
    protobuf, or fails ``onnx.checker``.
    """
    p = Path(path)
    if p.is_dir():
        raise InputFileError(f"{p}: is a directory, not an ONNX file")
    if not p.is_file():
        raise InputFileError(f"{p}: ONNX file not found")
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise InputFileError(f"{p}: cannot read ONNX file ({exc})") from exc
    gz = data[:2] == b"\x1f\x8b"
    if gz:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputFileError(f"{p}: corrupt gzip stream ({exc})") from exc
    try:
        if gz:
            model = onnx.load_model_from_string(data)
        else:
            model = onnx.load(str(p))  # also resolves external weight files next to it
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise InputFileError(f"{p}: not a valid ONNX model ({type(exc).__name__}: {exc})") from exc
    if not model.graph.node or not model.graph.output:
        raise InputFileError(f"{p}: not a valid ONNX model (empty graph)")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InputFileError(f"{p}: malformed ONNX model ({exc})") from exc
    return model


def _graph_input(model: onnx.ModelProto, label: str) -> tuple[str, tuple[int, ...], bool]:
    """Name, shape and whether dim 0 is symbolic, of the model's one non-initializer input."""
    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise UnsupportedOpError(
            f"{label}: model has {len(inputs)} inputs ({', '.join(v.name for v in inputs)}); "
            "vnnx handles networks with exactly one input")
    if len(graph.output) != 1:
        raise UnsupportedOpError(
            f"{label}: model has {len(graph.output)} outputs "
            f"({', '.join(v.name for v in graph.output)}); vnnx handles exactly one output")
    value = inputs[0]
    tensor_type = value.type.tensor_type
    if tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise UnsupportedOpError(
            f"{label}: input '{value.name}' has element type "
            f"{onnx.TensorProto.DataType.Name(tensor_type.elem_type)}; vnnx handles FLOAT inputs")
    dims = list(tensor_type.shape.dim)
    shape, dynamic = [], False
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif i == 0 and len(dims) >= 2:
            # A symbolic batch dim: vnnx treats a sample as one batch-1 tensor.
            shape.append(1)
            dynamic = True
        else:
            raise UnsupportedOpError(
                f"{label}: input '{value.name}' has a symbolic dimension {i} "
                f"('{d.dim_param}'); vnnx needs a fixed input shape")
    if not shape:
        raise UnsupportedOpError(f"{label}: input '{value.name}' is a scalar; vnnx needs a tensor")
    return value.name, tuple(shape), dynamic


def check_supported_ops(model: onnx.ModelProto, label: str) -> None:
    """Raise :class:`UnsupportedOpError` naming the first node whose operator vnnx cannot handle."""
    for i, node in enumerate(model.graph.node):
        name = node.name or f"#{i}"
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(
                f"{label}: operator {node.domain}.{node.op_type} (node '{name}') is not supported")
        if node.op_type not in SUPPORTED_OPS:
            raise UnsupportedOpError(
                f"{label}: operator {node.op_type} (node '{name}') is not supported; "
                f"supported operators: {', '.join(sorted(SUPPORTED_OPS))}")


def load_onnx(path: PathLike, check: bool = True) -> LoadedModel:
    """Load an ``.onnx``/``.onnx.gz`` network into a float32 torch module (onnx2torch).

    With ``check`` the module is compared with onnxruntime on ``CHECK_SAMPLES`` seeded random
    inputs (uniform in [-1, 1]); a disagreement beyond ``CHECK_ATOL + CHECK_RTOL * max|y|``
    raises :class:`VnnxError`.

    Raises :class:`InputFileError` (missing or malformed file) and :class:`UnsupportedOpError`
    (an operator outside :data:`SUPPORTED_OPS`, named with its node; several inputs or outputs;
    a symbolic non-batch dimension).

    Example: ``load_onnx("acasxu/ACASXU_run2a_1_1_batch_2000.onnx").input_shape == (1, 1, 1, 5)``.
    """
    label = str(path)
    model = read_model_proto(path)
    input_name, input_shape, dynamic = _graph_input(model, label)
    check_supported_ops(model, label)
    module, converted = convert_model(model, label)
    module = module.float().eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            out = module(torch.zeros(input_shape))
    except Exception as exc:
        raise UnsupportedOpError(f"{label}: the converted module fails on a zero input: {exc}") from exc
    if not isinstance(out, torch.Tensor):
        raise UnsupportedOpError(f"{label}: the network does not return a single tensor")
    loaded = LoadedModel(path=label, onnx_model=model, module=module, input_name=input_name,
                         input_shape=input_shape, output_shape=tuple(out.shape),
                         converted_model=converted, batch_dynamic=dynamic)
    if check:
        x = _check_inputs(loaded.n_inputs)
        y_ort = run_onnxruntime(loaded, x)
        y_torch = run_torch(module, input_shape, x)
        _assert_close(y_torch, y_ort, f"{label}: onnx2torch module vs onnxruntime")
    return loaded


# --------------------------------------------------------------------------------- evaluation
def _check_inputs(n_inputs: int, seed: int = CHECK_SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(CHECK_SAMPLES, n_inputs)).astype(np.float32)


def _assert_close(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    """Raise :class:`VnnxError` unless every sample agrees within the check tolerance."""
    if actual.shape != expected.shape:
        raise VnnxError(f"{what}: output shapes differ, {actual.shape} vs {expected.shape}")
    if not (np.all(np.isfinite(actual)) and np.all(np.isfinite(expected))):
        raise VnnxError(f"{what}: non-finite outputs on the check inputs")
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max(axis=1)
    tol = CHECK_ATOL + CHECK_RTOL * np.abs(expected.astype(np.float64)).max(axis=1)
    if np.any(err > tol):
        k = int(np.argmax(err - tol))
        raise VnnxError(
            f"{what}: outputs disagree by {err[k]:.3g} on check sample {k} "
            f"(tolerance {tol[k]:.3g} = {CHECK_ATOL:g} + {CHECK_RTOL:g} * max|y|)")


def run_torch(module: torch.nn.Module, input_shape: Sequence[int], x: np.ndarray) -> np.ndarray:
    """Evaluate ``module`` sample by sample. ``x``: (N, prod(input_shape)) -> (N, n_outputs) float32.

    One tensor of ``input_shape`` per call, since ONNX-derived modules often fix the batch size.
    """
    x = np.asarray(x, dtype=np.float32)
    x = x.reshape(len(x), -1)
    dtype = next((t.dtype for t in itertools.chain(module.parameters(), module.buffers())
                  if t.is_floating_point()), torch.float32)
    outs = []
    with torch.no_grad():
        for row in x:
            y = module(torch.from_numpy(row.reshape(tuple(input_shape))).to(dtype))
            outs.append(y.detach().cpu().numpy().astype(np.float32).reshape(-1))
    return np.stack(outs) if outs else np.zeros((0, 0), np.float32)


def make_session(model: onnx.ModelProto):
    """A one-thread CPU onnxruntime session on ``model``; VnnxError if it cannot be loaded."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # The machines are shared; a handful of small nets never needs more than one thread.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise VnnxError(f"onnxruntime cannot load the model: {exc}") from exc


def run_onnxruntime(model: LoadedModel | onnx.ModelProto | PathLike, x: np.ndarray) -> np.ndarray:
    """Evaluate a network in onnxruntime on ``N`` flattened samples.

    ``x``: (N, n_inputs) float32, each row in C order of the ONNX input tensor.
    Returns (N, n_outputs) float32. Samples go one at a time when the file fixes the batch dim
    (or has none), all at once when the batch dim is symbolic. For a :class:`LoadedModel` the
    ``InferenceSession`` is cached on the object.
    """
    if isinstance(model, LoadedModel):
        if model._session is None:
            model._session = make_session(model.onnx_model)
        session, label = model._session, model.path
        shape, dynamic = model.input_shape, model.batch_dynamic
    else:
        if isinstance(model, onnx.ModelProto):
            proto, label = model, "<ModelProto>"
        else:
            proto, label = read_model_proto(model), str(model)
        _, shape, dynamic = _graph_input(proto, label)
        session = make_session(proto)
    name = session.get_inputs()[0].name
    n_in = int(math.prod(shape))
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x[None, :]
    x = x.reshape(len(x), -1)
    if x.shape[1] != n_in:
        raise ShapeMismatchError(f"{label}: network expects {n_in} inputs per sample, got {x.shape[1]}")
    try:
        if dynamic:
            y = session.run(None, {name: x.reshape((len(x),) + tuple(shape[1:]))})[0]
            return np.asarray(y, dtype=np.float32).reshape(len(x), -1)
        outs = [np.asarray(session.run(None, {name: row.reshape(shape)})[0], dtype=np.float32).reshape(-1)
                for row in x]
    except Exception as exc:
        raise VnnxError(f"{label}: onnxruntime failed: {exc}") from exc
    return np.stack(outs) if outs else np.zeros((0, 0), np.float32)


# ------------------------------------------------------------------------------ plain view
def to_network(model: LoadedModel) -> Network:
    """The plain float64 :class:`Network` view of a loaded model, derived from its bound graph
    (:func:`vnnx.graph.from_onnx`, the one representation read from the file).

    The graph must be a chain; constants are already folded. Relu, Sigmoid, Tanh and MaxPool
    become their layers; each maximal run of linear operators between them becomes one
    :class:`~vnnx.network.Conv` (a single 2-D convolution, with zero ``Pad`` nodes before it
    and per-channel affine maps such as BatchNormalization after it folded in) or one exact
    :class:`~vnnx.network.Dense`. Pure reshapes become no layer. Layer ``in_shape``/``out_shape``
    are per-sample shapes: a leading dim of 1 on a tensor of rank >= 2 is the batch dim and is
    dropped (``(1, 1, 28, 28)`` -> ``(1, 28, 28)``).

    Raises :class:`UnsupportedOpError` naming the node for a non-sequential graph, a nonlinear
    operator the chain has no layer for (LeakyRelu), or an unsupported MaxPool variant.
    """
    from vnnx.graph import from_onnx
    from vnnx.io._graph_view import graph_to_network

    return graph_to_network(from_onnx(model), model.path)


# -------------------------------------------------------------------------------------- export
Reference = Union[LoadedModel, onnx.ModelProto, str, os.PathLike, Callable[[np.ndarray], np.ndarray]]


def export_onnx(module: torch.nn.Module, input_shape: Sequence[int], path: PathLike, *,
                reference: Reference | None = None) -> None:
    """Export ``module`` (taking one tensor of ``input_shape``) to an ONNX file, checked.

    Uses the TorchScript exporter (``dynamo=False``, opset :data:`EXPORT_OPSET`), float32,
    input named ``input`` and output ``output``. Before anything is written the exported model
    must pass ``onnx.checker.check_model(full_check=True)`` and agree, in onnxruntime on
    ``CHECK_SAMPLES`` seeded random inputs, with ``reference`` (a :class:`LoadedModel`, a
    ``ModelProto``, a file, or a callable ``(N, n_inputs) -> (N, n_outputs)``) or, without one,
    with ``module`` itself. The file is then written atomically (a temporary file in the same
    directory, then ``os.replace``); on any failure no file is left. A ``.gz`` suffix gzips it.

    Raises :class:`VnnxError` naming ``path`` when export, check or comparison fails.
    """
    path = Path(path)
    input_shape = tuple(int(d) for d in input_shape)
    m = copy.deepcopy(module).float().eval()
    dummy = torch.zeros(input_shape)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = os.path.join(tmp, "model.onnx")
        try:
            with warnings.catch_warnings():
                # The tracer warns about every shape-dependent Python branch in onnx2torch modules.
                warnings.simplefilter("ignore")
                torch.onnx.export(m, (dummy,), tmp_file, dynamo=False, opset_version=EXPORT_OPSET,
                                  input_names=["input"], output_names=["output"],
                                  do_constant_folding=True)
            proto = onnx.load(tmp_file)
        except Exception as exc:
            raise VnnxError(f"{path}: torch.onnx.export failed: {exc}") from exc
    try:
        proto = fold_constants(proto)
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise VnnxError(f"{path}: exported model fails onnx.checker: {exc}") from exc
    n_in = int(math.prod(input_shape))
    x = _check_inputs(n_in)
    y_file = run_onnxruntime(proto, x)
    if reference is None:
        y_ref = run_torch(m, input_shape, x)
        what = "torch module"
    elif callable(reference) and not isinstance(reference, (LoadedModel, onnx.ModelProto, str, os.PathLike)):
        y_ref = np.asarray(reference(x), dtype=np.float64).reshape(len(x), -1)
        what = "reference function"
    else:
        y_ref = run_onnxruntime(reference, x)
        what = "reference model"
    _assert_close(y_file, y_ref, f"{path}: exported model vs {what}")
    data = proto.SerializeToString()
    if path.suffix == ".gz":
        data = gzip.compress(data, mtime=0)
    write_atomic(path, data)


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Replace every node that depends on no graph input by initializers (a new model).

    The TorchScript exporter spells a constant ``F.pad`` as a ConstantOfShape/Slice/Transpose
    subgraph that computes the pads; folding leaves one Pad with constant pads, which other
    tools (and :func:`load_onnx`'s operator list) expect.
    """
    from onnx.reference import ReferenceEvaluator

    graph = model.graph
    known = {t.name for t in graph.initializer}
    folded, kept = [], []
    for node in graph.node:
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                           for a in node.attribute)
        if not has_subgraph and node.op_type not in ("RandomNormal", "RandomUniform", "Multinomial",
                                                     "RandomNormalLike", "RandomUniformLike") \
                and all(i == "" or i in known for i in node.input):
            folded.append(node)
            known.update(node.output)
        else:
            kept.append(node)
    if not folded:
        return model
    produced = {o for n in folded for o in n.output}
    consumed = [i for n in kept for i in n.input] + [o.name for o in graph.output]
    needed = list(dict.fromkeys(i for i in consumed if i in produced))
    values: list[np.ndarray] = []
    if needed:
        sub = onnx.helper.make_graph(folded, "fold", [],
                                     [onnx.helper.make_empty_tensor_value_info(n) for n in needed],
                                     initializer=list(graph.initializer))
        sub_model = onnx.helper.make_model(sub, opset_imports=list(model.opset_import),
                                           ir_version=model.ir_version)
        values = ReferenceEvaluator(sub_model).run(None, {})
    new_inits = {t.name: t for t in graph.initializer}
    for name, value in zip(needed, values):
        new_inits[name] = onnx.numpy_helper.from_array(np.asarray(value), name)
    used = set(consumed)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    del out.graph.node[:]
    out.graph.node.extend(kept)
    del out.graph.initializer[:]
    out.graph.initializer.extend(t for name, t in new_inits.items() if name in used)
    inits = {t.name for t in out.graph.initializer}
    kept_vi = [v for v in out.graph.value_info if v.name not in inits and v.name not in produced]
    del out.graph.value_info[:]
    out.graph.value_info.extend(kept_vi)
    return out


def write_atomic(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: readers see the old file or the new one, never a
    partial one; on failure nothing is left (:func:`vnnx.util.write_bytes_atomic`)."""
    write_bytes_atomic(path, data)


class _ShapedNetwork(torch.nn.Module):
    """``network.to_torch()`` between reshapes: one tensor of ``input_shape`` -> ``output_shape``."""

    def __init__(self, network: Network):
        super().__init__()
        self.body = network.to_torch(torch.float32)
        self.n_inputs = network.n_inputs
        self.output_shape = tuple(network.output_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(1, self.n_inputs)).reshape(self.output_shape)


def network_to_onnx(network: Network, path: PathLike) -> None:
    """Write ``network`` as an ONNX file with the same input and output shapes as the original.

    The file takes one tensor of ``network.input_shape`` (e.g. ``(1, 1, 28, 28)``), flattens it
    to ``(1, n_inputs)``, runs ``network.to_torch()`` and reshapes the result to
    ``network.output_shape``, so VNN-LIB specs written for the original file apply unchanged.
    It is checked in onnxruntime against ``network.forward`` (float64) before being written
    atomically (see :func:`export_onnx`).
    """
    export_onnx(_ShapedNetwork(network), network.input_shape, path, reference=network.forward)
