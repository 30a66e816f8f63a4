"""The guarantee, checked rather than assumed: every kept validation sample, run in float32
through the ONNX file that is written (onnxruntime), keeps its ReLU activation pattern in every
layer, its MaxPool winners, its argmax and (with ``--margin``) its logit margin.

onnxruntime only returns graph outputs, so the check runs a copy of the file whose graph also
outputs the input of the first activation node after each affine layer (the layer's
pre-activation ``z``); the argmax is read from the same run. Node order is the chain order,
so the k-th Relu/MaxPool node of the file is the k-th Relu/MaxPool layer of the network.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import numpy as np
import onnx

from vnnx.errors import VnnxError
from vnnx.network import MaxPool, Network, Relu
from vnnx.io.onnx import make_session

from .patterns import Reference, Segment, affine_outputs, split_segments, violations

#: Nodes that only move data; walking back through them from a MaxPool reaches the flat tensor
#: holding the affine output (reshapes keep C order; a Pad only adds −∞ cells around it).
_PASS_THROUGH = {"Reshape", "Flatten", "Pad", "Identity", "Unsqueeze", "Squeeze"}


@dataclass
class GuaranteeCheck:
    """Outcome of one check. ``violations``: broken constraints by kind (empty = passed).

    ``direct``: the result of :func:`direct_check` on EVERY given validation sample (the kept
    and the degenerate ones), when it ran: ``{'given', 'kept_ok', 'kept_failed',
    'degenerate_ok', 'degenerate_failed'}``. A kept sample failing it is a violation too.
    """

    engine: str
    n_samples: int
    violations: dict = field(default_factory=dict)
    direct: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.violations

    def as_dict(self) -> dict:
        return {"engine": self.engine, "samples": self.n_samples, "passed": self.passed,
                "violations": dict(self.violations), "all_samples": dict(self.direct)}


def _producer_map(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {out: node for node in graph.node for out in node.output}


def _walk_back(name: str, producers: dict[str, onnx.NodeProto]) -> str:
    while name in producers and producers[name].op_type in _PASS_THROUGH:
        name = producers[name].input[0]
    return name


def instrumented_model(model: onnx.ModelProto, network: Network, segments: list[Segment]) -> tuple[onnx.ModelProto, dict[int, str]]:
    """A copy of ``model`` that also outputs each segment's affine output; returns it and the
    tensor name per affine layer index. Raises :class:`VnnxError` when the file's activation
    nodes do not line up with the network's activation layers."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    producers = _producer_map(graph)
    nodes = [node for node in graph.node if node.op_type in ("Relu", "MaxPool")]
    layers = [k for k, layer in enumerate(network.layers) if isinstance(layer, (Relu, MaxPool))]
    kinds = ["Relu" if isinstance(network.layers[k], Relu) else "MaxPool" for k in layers]
    if [n.op_type for n in nodes] != kinds:
        raise VnnxError(f"vnn-lp check: the ONNX file's activation nodes {[n.op_type for n in nodes]} do not "
                        f"match the network's activation layers {kinds}")
    node_of_layer = dict(zip(layers, nodes))
    names: dict[int, str] = {}
    for seg in segments:
        if seg.block:
            names[seg.affine] = _walk_back(node_of_layer[seg.block[0]].input[0], producers)
        elif seg is segments[-1]:
            names[seg.affine] = graph.output[0].name
    existing = {o.name for o in graph.output}
    for name in dict.fromkeys(names.values()):
        if name not in existing:
            graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return model, names


def onnx_affine_outputs(model: Union[onnx.ModelProto, str, os.PathLike], network: Network,
                        segments: list[Segment], x: np.ndarray) -> dict[int, np.ndarray]:
    """Each segment's affine output, float32, as onnxruntime computes it in ``model`` on
    ``x`` (N, n_inputs): {affine layer index: (N, m)}."""
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    inst, names = instrumented_model(model, network, segments)
    sess = make_session(inst)
    inp = sess.get_inputs()[0]
    shape = tuple(network.input_shape)
    wanted = list(dict.fromkeys(names.values()))
    x32 = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(len(x), -1))
    batch_dynamic = not isinstance(inp.shape[0], int) if inp.shape else False
    try:
        if batch_dynamic and len(shape) >= 2:
            res = sess.run(wanted, {inp.name: x32.reshape((len(x32),) + shape[1:])})
            per_name = {nm: np.asarray(r, np.float32).reshape(len(x32), -1) for nm, r in zip(wanted, res)}
        else:
            rows = [sess.run(wanted, {inp.name: row.reshape(shape)}) for row in x32]
            per_name = {nm: np.stack([np.asarray(r[i], np.float32).reshape(-1) for r in rows])
                        for i, nm in enumerate(wanted)}
    except Exception as exc:
        raise VnnxError(f"vnn-lp check: onnxruntime failed: {exc}") from exc
    return {k: per_name[nm] for k, nm in names.items()}


def block_values(network: Network, segments: list[Segment], z: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """The input of every ReLU/MaxPool layer (N, ...) from the segments' affine outputs ``z``
    (ReLU and max are exact in any precision, so this adds no rounding of its own)."""
    pre: dict[int, np.ndarray] = {}
    for seg in segments:
        h = np.asarray(z[seg.affine])
        for k in seg.block:
            pre[k] = h
            h = network.layers[k].apply(h)
    return pre


def direct_check(original: Network, network: Network, x: np.ndarray, target: np.ndarray, exempt: np.ndarray,
                 original_margin: np.ndarray, margin: float, margin_tol: float,
                 z_new: dict[int, np.ndarray]) -> np.ndarray:
    """(N,) bool: sample n keeps, in the new network's affine outputs ``z_new`` (e.g. float32
    from onnxruntime), the original's float64 behaviour: the sign of every ReLU input, every
    MaxPool winner (ties allowed), the argmax ``target`` (unless ``exempt``: a tie in the
    original) and a margin of ``min(margin, original_margin) − margin_tol``.

    Deliberately independent of :mod:`.patterns`' constraint rows: it compares the two
    networks' layer values directly, on every sample it is given, so a sample the LP never saw
    or a row the encoding got wrong shows up here.
    """
    _, segments = split_segments(network)
    outs = original.forward(np.asarray(x, dtype=np.float64), return_all=True)
    pre_new = block_values(network, segments, z_new)
    n = len(x)
    ok = np.ones(n, dtype=bool)
    for k, layer in enumerate(original.layers):
        if k not in pre_new:
            continue
        a = outs[k - 1] if k > 0 else np.asarray(x, dtype=np.float64)
        b = np.asarray(pre_new[k], dtype=np.float64)
        if isinstance(layer, Relu):
            ok &= np.all((a > 0) == (b > 0), axis=1)
        elif isinstance(layer, MaxPool):
            for w in layer.windows():
                win = w[np.argmax(a[:, w], axis=1)]
                ok &= b[np.arange(n), win] >= b[:, w].max(axis=1)
    last = segments[-1]
    y = np.asarray(z_new[last.affine], dtype=np.float64)
    for k in last.block:
        y = network.layers[k].apply(y)
    rows = np.arange(n)
    others = y.copy()
    others[rows, target] = -np.inf
    new_margin = y[rows, target] - others.max(axis=1)
    need = np.minimum(margin, original_margin) - margin_tol if margin > 0 else np.zeros(n)
    ok &= exempt | ((new_margin > 0) & (new_margin >= need))
    return ok


def _combined(original: Network, network: Network, ref: Reference, margin_tol: float, engine: str,
              z_all: dict[int, np.ndarray], into: dict) -> dict:
    """Constraint rows on the kept samples plus :func:`direct_check` on all given samples, for
    one set of affine outputs ``z_all`` on ``ref.x_all``; adds violation counts to ``into`` and
    returns the direct check's counts."""
    kept = ref.kept
    z_kept = {k: np.asarray(v).reshape(len(ref.x_all), -1)[kept] for k, v in z_all.items()}
    for kind, count in violations(ref, z_kept, margin_tol).items():
        into[kind] = max(into.get(kind, 0), count)
    ok = direct_check(original, network, ref.x_all, ref.all_target, ref.all_exempt, ref.all_margin,
                      ref.margin, margin_tol, z_all)
    is_kept = np.zeros(len(ref.x_all), dtype=bool)
    is_kept[kept] = True
    direct = {"given": int(len(ok)), "kept_ok": int((ok & is_kept).sum()), "kept_failed": int((~ok & is_kept).sum()),
              "degenerate_ok": int((ok & ~is_kept).sum()), "degenerate_failed": int((~ok & ~is_kept).sum())}
    if direct["kept_failed"]:
        into["direct-check"] = max(into.get("direct-check", 0), direct["kept_failed"])
    return direct


def check_network(network: Network, ref: Reference, margin_tol: float,
                  original: Optional[Network] = None) -> GuaranteeCheck:
    """The guarantee on the plain view, in float64 and in a float32 emulation (numpy/torch
    kernels); used after each layer step. Returns the union of both runs' violations (the
    direct check needs ``original``, else only the constraint rows are checked)."""
    bad: dict = {}
    direct: dict = {}
    for dtype in (np.float64, np.float32):
        z = affine_outputs(network, ref.x_all if original is not None else ref.x, ref.segments, dtype)
        if original is None:
            for kind, count in violations(ref, z, margin_tol).items():
                bad[kind] = max(bad.get(kind, 0), count)
        else:
            d = _combined(original, network, ref, margin_tol, "numpy", z, bad)
            direct = d if not direct or d["kept_failed"] + d["degenerate_failed"] > \
                direct["kept_failed"] + direct["degenerate_failed"] else direct
    return GuaranteeCheck("float64+float32 (numpy)", len(ref.x), bad, direct)


def check_onnx(model: Union[onnx.ModelProto, str, os.PathLike], network: Network, ref: Reference,
               margin_tol: float, original: Optional[Network] = None) -> GuaranteeCheck:
    """The guarantee on an ONNX model (a file or a proto), float32, in onnxruntime: the
    constraint rows on the kept samples and, given ``original``, :func:`direct_check` on all."""
    if original is None:
        z = onnx_affine_outputs(model, network, ref.segments, ref.x)
        return GuaranteeCheck("onnxruntime float32", len(ref.x), violations(ref, z, margin_tol))
    z = onnx_affine_outputs(model, network, ref.segments, ref.x_all)
    bad: dict = {}
    direct = _combined(original, network, ref, margin_tol, "onnxruntime", z, bad)
    return GuaranteeCheck("onnxruntime float32", len(ref.x), bad, direct)


def export_checked(network: Network, path: Union[str, os.PathLike, None] = None) -> onnx.ModelProto:
    """Write ``network`` with :func:`vnnx.io.onnx.network_to_onnx` (to ``path``, or to a
    temporary file) and return the written model."""
    from vnnx.io.onnx import network_to_onnx

    if path is not None:
        network_to_onnx(network, path)
        return onnx.load(str(path))
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "model.onnx"
        network_to_onnx(network, p)
        return onnx.load(str(p))
