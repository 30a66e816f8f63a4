"""ONNX in/out: loading (every supported op), the plain view, export, and the error paths.

Every network here is either a tiny seeded model built with ``onnx.helper`` or a shared
benchmark file (skipped when ../shared is absent). The reference is always onnxruntime.
"""
from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import pytest

import vnnx  # noqa: F401  (compat patches before onnx2torch)
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from vnnx.errors import InputFileError, ShapeMismatchError, UnsupportedOpError, VnnxError
from vnnx.io import onnx as vio
from vnnx.io._convert import opset_version
from vnnx.io.onnx import (export_onnx, load_onnx, network_to_onnx, run_onnxruntime,
                          to_network)
from vnnx.network import Conv, Dense, MaxPool, Network, Relu, Sigmoid, Tanh

SHARED = Path(__file__).resolve().parents[1].parent / "shared"

# to_network (float64) vs onnxruntime (float32): |d| <= ATOL + RTOL * max|y| per sample.
RTOL = 1e-4
ATOL = 1e-5


def _close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape
    scale = np.abs(expected).max(axis=1, keepdims=True)
    assert np.all(np.abs(actual - expected) <= ATOL + RTOL * scale), np.abs(actual - expected).max()


def _inputs(n_inputs: int, n: int = 6, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=(n, n_inputs)).astype(np.float32)


# ------------------------------------------------------------------------------ model builders
class _Builder:
    """Seeded initializers + nodes -> a checked ModelProto with an inferred output shape."""

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def rand(self, name: str, *shape: int, low: float = -1.0, high: float = 1.0) -> str:
        return self.const(name, self.rng.uniform(low, high, size=shape).astype(np.float32))

    def node(self, op: str, inputs: list[str], output: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op.lower()}_{output}", **attrs))
        return output

    def model(self, in_shape, out: str, opset: int = 13, in_name: str = "x",
              extra_inputs=()) -> onnx.ModelProto:
        inputs = [helper.make_tensor_value_info(in_name, TensorProto.FLOAT, list(in_shape))]
        inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in extra_inputs]
        y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
        graph = helper.make_graph(self.nodes, "g", inputs, [y], initializer=self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        m = onnx.shape_inference.infer_shapes(m)
        onnx.checker.check_model(m)
        return m


def _fc(b: _Builder) -> onnx.ModelProto:
    """mnistfc layout: (1, 6, 1) -> Flatten -> Gemm -> Relu -> Gemm (transB, alpha, beta)."""
    h = b.node("Flatten", ["x"], "f", axis=1)
    h = b.node("Gemm", [h, b.rand("w1", 5, 6), b.rand("b1", 5)], "g1", transB=1)
    h = b.node("Relu", [h], "r1")
    h = b.node("Gemm", [h, b.rand("w2", 5, 3), b.rand("b2", 3)], "g2", alpha=0.5, beta=2.0)
    return b.model([1, 6, 1], h)


def _vector(b: _Builder) -> onnx.ModelProto:
    """test_small layout: input (3,), MatMul(W, x) + b -> Relu -> MatMul -> Add."""
    h = b.node("MatMul", [b.rand("w0", 4, 3), "x"], "m0")
    h = b.node("Add", [h, b.rand("b0", 4)], "a0")
    h = b.node("Relu", [h], "r0")
    h = b.node("MatMul", [b.rand("w1", 2, 4), h], "m1")
    h = b.node("Add", [h, b.rand("b1", 2)], "a1")
    return b.model([3], h)


def _acas(b: _Builder, opset: int = 13) -> onnx.ModelProto:
    """ACAS Xu layout: (1, 1, 1, 5) -> Sub -> Div -> Flatten -> MatMul -> Add -> Relu -> Mul."""
    h = b.node("Sub", ["x", b.rand("mean", 1, 1, 1, 5)], "s")
    h = b.node("Div", [h, b.rand("std", 1, 1, 1, 5, low=0.5, high=2.0)], "d")
    h = b.node("Flatten", [h], "f", axis=1)
    h = b.node("MatMul", [h, b.rand("w1", 5, 7)], "m1")
    h = b.node("Add", [h, b.rand("b1", 7)], "a1")
    h = b.node("Relu", [h], "r1")
    h = b.node("MatMul", [h, b.rand("w2", 7, 5)], "m2")
    h = b.node("Mul", [h, b.rand("scale", 5)], "y")
    return b.model([1, 1, 1, 5], h, opset=opset)


def _conv(b: _Builder) -> onnx.ModelProto:
    """Conv (asymmetric pads, stride) -> Relu -> Conv (dilation, groups) -> BatchNorm -> Relu -> Gemm."""
    h = b.node("Conv", ["x", b.rand("k1", 4, 2, 3, 3), b.rand("c1", 4)], "c1o",
               pads=[1, 0, 2, 1], strides=[2, 1])
    h = b.node("Relu", [h], "r1")
    h = b.node("Conv", [h, b.rand("k2", 4, 2, 2, 2)], "c2o", dilations=[2, 1], group=2)
    h = b.node("BatchNormalization", [h, b.rand("bn_s", 4), b.rand("bn_b", 4), b.rand("bn_m", 4),
                                      b.rand("bn_v", 4, low=0.5, high=2.0)], "bn", epsilon=1e-3)
    h = b.node("Relu", [h], "r2")
    h = b.node("Flatten", [h], "f")
    h = b.node("Gemm", [h, b.rand("w", 3, 32), b.rand("bw", 3)], "y", transB=1)
    return b.model([1, 2, 6, 6], h)


def _pools(b: _Builder) -> onnx.ModelProto:
    """MaxPool (asymmetric pads, ceil_mode) -> AveragePool -> Identity -> Flatten."""
    h = b.node("MaxPool", ["x"], "mp", kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 2, 0], ceil_mode=1)
    h = b.node("AveragePool", [h], "ap", kernel_shape=[2, 2], strides=[1, 1])
    h = b.node("Identity", [h], "id")
    h = b.node("Flatten", [h], "y")
    return b.model([1, 2, 7, 8], h)


def _reshape(b: _Builder) -> onnx.ModelProto:
    """ERAN layout: (1, 1, 4, 4) -> Transpose -> Constant shape -> Reshape -> Gemm -> Relu -> Gemm."""
    h = b.node("Transpose", ["x"], "t", perm=[0, 2, 3, 1])
    b.nodes.append(helper.make_node("Constant", [], ["shape"], name="const_shape",
                                    value=numpy_helper.from_array(np.array([1, -1], np.int64))))
    h = b.node("Reshape", [h, "shape"], "rs")
    h = b.node("Gemm", [h, b.rand("w1", 5, 16), b.rand("b1", 5)], "g1", transB=1)
    h = b.node("Relu", [h], "r1")
    h = b.node("Gemm", [h, b.rand("w2", 3, 5), b.rand("b2", 3)], "y", transB=1)
    return b.model([1, 1, 4, 4], h)


def _pad_act(b: _Builder) -> onnx.ModelProto:
    """Pad node -> Conv -> Sigmoid -> Gemm -> Tanh."""
    h = b.node("Pad", ["x", b.const("pads", np.array([0, 0, 1, 0, 0, 0, 0, 2], np.int64))], "p")
    h = b.node("Conv", [h, b.rand("k", 3, 2, 2, 2), b.rand("c", 3)], "co")
    h = b.node("Sigmoid", [h], "s")
    h = b.node("Flatten", [h], "f")
    h = b.node("Gemm", [h, b.rand("w", 4, 3 * 5 * 6), b.rand("bw", 4)], "g", transB=1)
    h = b.node("Tanh", [h], "y")
    return b.model([1, 2, 5, 5], h)


def _normalised_conv(b: _Builder) -> onnx.ModelProto:
    """Per-channel input normalisation (Sub, Div) before an unpadded Conv -> Relu."""
    h = b.node("Sub", ["x", b.rand("mean", 1, 2, 1, 1)], "s")
    h = b.node("Div", [h, b.rand("std", 1, 2, 1, 1, low=0.5, high=2.0)], "d")
    h = b.node("Conv", [h, b.rand("k", 3, 2, 3, 3), b.rand("c", 3)], "co", strides=[2, 2])
    h = b.node("Relu", [h], "y")
    return b.model([1, 2, 7, 7], h)


def _torch_flatten(b: _Builder) -> onnx.ModelProto:
    """torch's ``x.view(x.size(0), -1)``: Shape -> Gather -> Unsqueeze -> Concat -> Reshape; Cast."""
    b.node("Shape", ["x"], "shp")
    b.node("Gather", ["shp", b.const("zero", np.array(0, np.int64))], "n", axis=0)
    b.node("Unsqueeze", ["n", b.const("axes", np.array([0], np.int64))], "n1")
    b.node("Concat", ["n1", b.const("minus1", np.array([-1], np.int64))], "newshape", axis=0)
    h = b.node("Cast", ["x"], "xc", to=TensorProto.FLOAT)  # a no-op on the data path
    h = b.node("Relu", [h], "r0")
    h = b.node("Reshape", [h, "newshape"], "rs")
    h = b.node("Gemm", [h, b.rand("w", 3, 12), b.rand("bw", 3)], "y", transB=1)
    return b.model([1, 3, 2, 2], h)


BUILDERS = {"torch_flatten": _torch_flatten, "fc": _fc, "vector": _vector, "acas": _acas, "conv": _conv, "pools": _pools,
            "reshape": _reshape, "pad_act": _pad_act, "normalised_conv": _normalised_conv}
REQUIRED_OPS = {"Shape", "Gather", "Unsqueeze", "Concat", "Cast", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Conv", "Relu", "MaxPool",
                "AveragePool", "Flatten", "Reshape", "Transpose", "Constant", "BatchNormalization",
                "Pad", "Sigmoid", "Tanh", "Identity"}


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_builders_cover_every_required_op():
    used = {n.op_type for build in BUILDERS.values() for n in build(_Builder()).graph.node}
    assert REQUIRED_OPS <= used, REQUIRED_OPS - used
    assert REQUIRED_OPS <= vio.SUPPORTED_OPS


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_op_loads_and_plain_view_matches_onnxruntime(name, tmp_path):
    model = BUILDERS[name](_Builder(seed=3))
    path = _save(model, tmp_path / f"{name}.onnx")
    loaded = load_onnx(path)  # check=True: onnx2torch vs onnxruntime
    x = _inputs(loaded.n_inputs)
    y = run_onnxruntime(loaded, x)
    assert y.shape == (len(x), loaded.n_outputs)
    with torch.no_grad():
        y_torch = np.stack([loaded.module(torch.from_numpy(r.reshape(loaded.input_shape))).numpy().ravel()
                            for r in x])
    _close(y_torch, y)
    net = to_network(loaded)
    assert net.input_shape == loaded.input_shape and net.output_shape == loaded.output_shape
    _close(net.forward(x), y)


def test_input_shapes_are_exact(tmp_path):
    shapes = {name: load_onnx(_save(BUILDERS[name](_Builder()), tmp_path / f"{name}.onnx")).input_shape
              for name in ("fc", "vector", "acas", "reshape")}
    assert shapes == {"fc": (1, 6, 1), "vector": (3,), "acas": (1, 1, 1, 5), "reshape": (1, 1, 4, 4)}


def test_plain_view_layer_structure(tmp_path):
    def layers(name):
        return to_network(load_onnx(_save(BUILDERS[name](_Builder()), tmp_path / f"{name}.onnx"))).layers

    fc = layers("fc")
    assert [type(layer) for layer in fc] == [Dense, Relu, Dense]
    assert fc[0].in_shape == (6, 1) and fc[0].out_shape == (5,)
    conv = layers("conv")
    # Conv+Relu, Conv+BatchNorm folded into one Conv, Relu, Flatten+Gemm as one Dense.
    assert [type(layer) for layer in conv] == [Conv, Relu, Conv, Relu, Dense]
    assert conv[0].padding == (1, 0, 2, 1) and conv[0].stride == (2, 1) and conv[0].in_shape == (2, 6, 6)
    assert conv[2].dilation == (2, 1) and conv[2].groups == 2
    pad_act = layers("pad_act")
    assert [type(layer) for layer in pad_act] == [Conv, Sigmoid, Dense, Tanh]
    assert pad_act[0].padding == (1, 0, 0, 2)
    norm = layers("normalised_conv")
    assert [type(layer) for layer in norm] == [Conv, Relu]
    pools = layers("pools")
    assert isinstance(pools[0], MaxPool) and pools[0].padding == (0, 1, 2, 0) and pools[0].ceil_mode
    assert isinstance(pools[1], Dense)  # AveragePool is affine
    vector = layers("vector")
    assert vector[0].in_shape == (3,) and vector[0].out_shape == (4,)


def test_opset8_model_loads_via_upgrade(tmp_path):
    """onnx2torch has no Flatten-1 converter (ACAS Xu is opset 8); load_onnx upgrades the opset."""
    path = _save(_acas(_Builder(seed=5), opset=8), tmp_path / "old.onnx")
    loaded = load_onnx(path)
    assert opset_version(loaded.onnx_model) == 8 and opset_version(loaded.converted_model) >= 13
    x = _inputs(5)
    _close(to_network(loaded).forward(x), run_onnxruntime(loaded, x))


def test_gz_loads_like_plain(tmp_path):
    model = _conv(_Builder(seed=2))
    plain = _save(model, tmp_path / "m.onnx")
    gz = tmp_path / "m.onnx.gz"
    gz.write_bytes(gzip.compress(model.SerializeToString()))
    a, b = load_onnx(plain), load_onnx(gz)
    x = _inputs(a.n_inputs)
    np.testing.assert_array_equal(run_onnxruntime(a, x), run_onnxruntime(b, x))
    np.testing.assert_array_equal(run_onnxruntime(str(gz), x), run_onnxruntime(a, x))


# --------------------------------------------------------------------------------- MaxPool
@pytest.mark.parametrize("h,k,s,pads,ceil", [
    (7, 3, 2, [0, 0, 0, 0], 0),
    (7, 3, 2, [1, 1, 1, 1], 1),
    (7, 3, 2, [0, 1, 2, 0], 0),
    (7, 3, 2, [1, 0, 0, 1], 1),
    # Last window would start in the bottom padding: ONNX drops it, onnx2torch alone keeps it.
    (6, 2, 2, [0, 0, 1, 1], 1),
    (5, 3, 3, [1, 1, 2, 2], 1),
])
def test_maxpool_asymmetric_pads_and_ceil_mode(h, k, s, pads, ceil, tmp_path):
    b = _Builder(seed=4)
    y = b.node("MaxPool", ["x"], "y", kernel_shape=[k, k], strides=[s, s], pads=pads, ceil_mode=ceil)
    loaded = load_onnx(_save(b.model([1, 2, h, h + 1], y), tmp_path / "mp.onnx"))
    net = to_network(loaded)
    (layer,) = net.layers
    assert isinstance(layer, MaxPool)
    assert layer.padding == tuple(pads) and layer.ceil_mode == bool(ceil) and layer.kernel == (k, k)
    x = _inputs(loaded.n_inputs)
    y_ort = run_onnxruntime(loaded, x)
    np.testing.assert_array_equal(net.forward(x).astype(np.float32), y_ort)  # max is exact
    assert layer.out_shape == tuple(loaded.output_shape[1:])


def test_ceil_mode_maxpool_round_trips(tmp_path):
    b = _Builder()
    y = b.node("MaxPool", ["x"], "y", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1)
    loaded = load_onnx(_save(b.model([1, 1, 6, 6], y), tmp_path / "mp.onnx"))
    export_onnx(loaded.module, loaded.input_shape, tmp_path / "out.onnx", reference=loaded)
    again = load_onnx(tmp_path / "out.onnx")
    x = _inputs(36)
    np.testing.assert_array_equal(run_onnxruntime(again, x), run_onnxruntime(loaded, x))


# ------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("name", ["conv", "reshape", "acas", "vector"])
def test_load_export_load_round_trip(name, tmp_path):
    loaded = load_onnx(_save(BUILDERS[name](_Builder(seed=7)), tmp_path / "in.onnx"))
    out = tmp_path / "out.onnx"
    export_onnx(loaded.module, loaded.input_shape, out, reference=loaded)
    again = load_onnx(out)
    assert again.input_shape == loaded.input_shape and again.output_shape == loaded.output_shape
    x = _inputs(loaded.n_inputs)
    _close(run_onnxruntime(again, x), run_onnxruntime(loaded, x))


@pytest.mark.parametrize("name", ["conv", "pools", "fc", "vector"])
def test_network_to_onnx_keeps_shapes_and_outputs(name, tmp_path):
    loaded = load_onnx(_save(BUILDERS[name](_Builder(seed=8)), tmp_path / "in.onnx"))
    net = to_network(loaded)
    out = tmp_path / "net.onnx.gz"
    network_to_onnx(net, out)
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    again = load_onnx(out)
    assert again.input_shape == loaded.input_shape and again.output_shape == loaded.output_shape
    x = _inputs(loaded.n_inputs)
    _close(run_onnxruntime(again, x), run_onnxruntime(loaded, x))
    # ... and the written file reads back as the same plain view (torch writes asymmetric
    # pooling pads as a -inf Pad node, which must fold back into the MaxPool layer).
    net_again = to_network(again)
    assert [type(layer) for layer in net_again.layers] == [type(layer) for layer in net.layers]
    _close(net_again.forward(x), run_onnxruntime(loaded, x))


def test_network_to_onnx_never_writes_a_wrong_file(tmp_path):
    """Where Network.to_torch cannot express a MaxPool exactly (ceil_mode with the last window
    starting in the end padding), network_to_onnx must fail cleanly, or write a correct file."""
    b = _Builder()
    y = b.node("MaxPool", ["x"], "y", kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], ceil_mode=1)
    loaded = load_onnx(_save(b.model([1, 1, 6, 6], y), tmp_path / "mp.onnx"))
    out = tmp_path / "net.onnx"
    try:
        network_to_onnx(to_network(loaded), out)
    except VnnxError:
        assert not out.exists() and _dir_listing(tmp_path) == ["mp.onnx"]
        return
    x = _inputs(36)
    np.testing.assert_array_equal(run_onnxruntime(out, x), run_onnxruntime(loaded, x))


def test_dense_matrix_chunks_agree(tmp_path, monkeypatch):
    """Reading a run's matrix in batches of unit vectors gives the same layers whatever the batch size."""
    from vnnx.io import _graph_view

    loaded = load_onnx(_save(_reshape(_Builder(seed=9)), tmp_path / "r.onnx"))
    whole = to_network(loaded)
    monkeypatch.setattr(_graph_view, "UNIT_CHUNK", 3)
    chunked = to_network(loaded)
    assert [type(a) for a in whole.layers] == [type(b) for b in chunked.layers]
    for a, b in zip(whole.layers, chunked.layers):
        if isinstance(a, Dense):
            np.testing.assert_array_equal(a.weight, b.weight)
            np.testing.assert_array_equal(a.bias, b.bias)


def test_dense_size_guard(tmp_path, monkeypatch):
    from vnnx.io import _graph_view

    loaded = load_onnx(_save(_fc(_Builder()), tmp_path / "fc.onnx"))
    monkeypatch.setattr(_graph_view, "MAX_DENSE_ENTRIES", 10)
    with pytest.raises(UnsupportedOpError, match="too large"):
        to_network(loaded)


# --------------------------------------------------------------------------------- failures
def test_missing_file(tmp_path):
    with pytest.raises(InputFileError, match="nope.onnx"):
        load_onnx(tmp_path / "nope.onnx")


@pytest.mark.parametrize("content", [b"this is not an onnx model\n", b"\x1f\x8b\x08garbage", b""])
def test_malformed_file(content, tmp_path):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(InputFileError, match="bad.onnx"):
        load_onnx(path)


def test_truncated_file(tmp_path):
    data = _conv(_Builder()).SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="cut.onnx"):
        load_onnx(path)


def test_unsupported_op_names_op_and_node(tmp_path):
    b = _Builder()
    h = b.node("Gemm", ["x", b.rand("w", 3, 4), b.rand("bw", 3)], "g", transB=1)
    b.nodes.append(helper.make_node("Softmax", [h], ["y"], name="final_softmax", axis=1))
    path = _save(b.model([1, 4], "y"), tmp_path / "sm.onnx")
    with pytest.raises(UnsupportedOpError, match=r"sm\.onnx.*Softmax.*final_softmax"):
        load_onnx(path)


def test_multiple_inputs_rejected(tmp_path):
    b = _Builder()
    h = b.node("Add", ["x", "x2"], "y")
    path = _save(b.model([1, 4], h, extra_inputs=[("x2", [1, 4])]), tmp_path / "two.onnx")
    with pytest.raises(UnsupportedOpError, match="2 inputs"):
        load_onnx(path)


def test_multiple_outputs_rejected(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("y1", "y2")]
    nodes = [helper.make_node("Relu", ["x"], ["y1"]), helper.make_node("Sigmoid", ["x"], ["y2"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], outs),
                              opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    with pytest.raises(UnsupportedOpError, match=r"two\.onnx.*2 outputs \(y1, y2\)"):
        load_onnx(_save(model, tmp_path / "two.onnx"))


def test_non_sequential_graph_names_node(tmp_path):
    b = _Builder()
    h = b.node("Gemm", ["x", b.rand("w", 4, 4), b.rand("bw", 4)], "g", transB=1)
    h = b.node("Relu", [h], "r")
    h = b.node("Add", [h, "x"], "y")  # residual connection
    loaded = load_onnx(_save(b.model([1, 4], h), tmp_path / "res.onnx"))
    with pytest.raises(UnsupportedOpError, match="non-sequential graph at node add_y"):
        to_network(loaded)


def test_square_is_refused(tmp_path):
    b = _Builder()
    h = b.node("Mul", ["x", "x"], "y")
    loaded = load_onnx(_save(b.model([1, 4], h), tmp_path / "sq.onnx"))
    with pytest.raises(UnsupportedOpError, match=r"sq\.onnx: Mul node 'mul_y' multiplies two network tensors"):
        to_network(loaded)


def test_non_affine_node_rejected(tmp_path):
    b = _Builder()
    h = b.node("Div", [b.const("one", np.float32(1.0)), "x"], "y")  # 1 / x
    loaded = load_onnx(_save(b.model([1, 4], h), tmp_path / "recip.onnx"), check=False)
    with pytest.raises(UnsupportedOpError, match=r"recip\.onnx: Div node 'div_y' divides by a network tensor"):
        to_network(loaded)


def test_nonlinear_operator_without_layer_is_named(tmp_path):
    b = _Builder()
    h = b.node("Gemm", ["x", b.rand("w", 4, 4), b.rand("bw", 4)], "g", transB=1)
    h = b.node("LeakyRelu", [h], "y", alpha=0.1)
    loaded = load_onnx(_save(b.model([1, 4], h), tmp_path / "leaky.onnx"))
    with pytest.raises(UnsupportedOpError, match=r"leaky\.onnx: operator LeakyRelu \(node 'leakyrelu_y'\)"):
        to_network(loaded)


def test_load_check_mismatch_names_file(tmp_path, monkeypatch):
    path = _save(_fc(_Builder()), tmp_path / "fc.onnx")
    real = vio.run_torch
    monkeypatch.setattr(vio, "run_torch", lambda *a: real(*a) + 1e-2)
    with pytest.raises(VnnxError, match=r"fc\.onnx.*disagree"):
        load_onnx(path)
    load_onnx(path, check=False)  # the check is what fails


def _dir_listing(path: Path) -> list[str]:
    return sorted(os.listdir(path))


def test_export_check_failure_leaves_no_file(tmp_path):
    loaded = load_onnx(_save(_fc(_Builder(seed=1)), tmp_path / "fc.onnx"))
    other = load_onnx(_save(_fc(_Builder(seed=2)), tmp_path / "other.onnx"))
    before = _dir_listing(tmp_path)
    with pytest.raises(VnnxError, match=r"out\.onnx.*disagree"):
        export_onnx(loaded.module, loaded.input_shape, tmp_path / "out.onnx", reference=other)
    assert _dir_listing(tmp_path) == before
    # An existing file is left as it was.
    target = tmp_path / "keep.onnx"
    target.write_bytes(b"old")
    with pytest.raises(VnnxError):
        export_onnx(loaded.module, loaded.input_shape, target, reference=lambda x: np.zeros((len(x), 3)))
    assert target.read_bytes() == b"old"
    assert _dir_listing(tmp_path) == sorted(before + ["keep.onnx"])


def test_export_failure_leaves_no_file(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            return torch.linalg.eigvals(x.reshape(2, 2)).real  # no ONNX symbolic at opset 13

    with pytest.raises(VnnxError, match="broken.onnx"):
        export_onnx(Broken(), (1, 4), tmp_path / "broken.onnx")
    assert _dir_listing(tmp_path) == []


# ---------------------------------------------------------------------------- onnxruntime
def test_run_onnxruntime_batches_and_caches(tmp_path):
    b = _Builder()
    h = b.node("Gemm", ["x", b.rand("w", 3, 4), b.rand("bw", 3)], "y", transB=1)
    dyn = b.model(["N", 4], h)
    loaded = load_onnx(_save(dyn, tmp_path / "dyn.onnx"))
    assert loaded.batch_dynamic and loaded.input_shape == (1, 4)
    x = _inputs(4, n=5)
    y = run_onnxruntime(loaded, x)
    session = loaded._session
    assert run_onnxruntime(loaded, x) is not None and loaded._session is session
    w = numpy_helper.to_array(dyn.graph.initializer[0]).astype(np.float64)
    bias = numpy_helper.to_array(dyn.graph.initializer[1]).astype(np.float64)
    np.testing.assert_allclose(y, x @ w.T + bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(run_onnxruntime(dyn, x), y)
    with pytest.raises(ShapeMismatchError):
        run_onnxruntime(loaded, np.zeros((2, 5), np.float32))


# --------------------------------------------------------------------- shared benchmark nets
SHARED_NETS = [
    "benchmarks/mnistfc/mnist-net_256x2.onnx",
    "benchmarks/acasxu/ACASXU_run2a_1_1_batch_2000.onnx",
    "benchmarks/verivital/Convnet_maxpool.onnx",
    "networks/eran-mnist/mnist_relu_3_50.onnx",
    "networks/eran-mnist/convSmallRELU__Point.onnx",
    "benchmarks/test/test_small.onnx",
    "benchmarks/test/test_tiny.onnx",
    "benchmarks/test/test_nano.onnx",
    "benchmarks/test/test_sat.onnx",
    "benchmarks/test/test_unsat.onnx",
]


@pytest.mark.parametrize("rel", SHARED_NETS)
def test_shared_net_plain_view_matches_onnxruntime(rel):
    path = SHARED / rel
    if not path.exists():
        pytest.skip(f"{path} not available")
    loaded = load_onnx(path)
    net = to_network(loaded)
    assert isinstance(net, Network) and net.n_inputs == loaded.n_inputs
    x = _inputs(loaded.n_inputs, n=8, seed=11)
    if "mnist" in rel or "Convnet" in rel or "Point" in rel:
        x = (x + 1.0) / 2.0  # pixel range
    _close(net.forward(x), run_onnxruntime(loaded, x))


def test_shared_net_shapes_and_layers():
    expected = {
        "benchmarks/mnistfc/mnist-net_256x2.onnx": ((1, 784, 1), [Dense, Relu, Dense, Relu, Dense]),
        "benchmarks/verivital/Convnet_maxpool.onnx": ((1, 1, 28, 28), [Conv, Relu, MaxPool, Dense]),
        "networks/eran-mnist/convSmallRELU__Point.onnx":
            ((1, 1, 28, 28), [Conv, Relu, Conv, Relu, Dense, Relu, Dense]),
        "benchmarks/acasxu/ACASXU_run2a_1_1_batch_2000.onnx": ((1, 1, 1, 5), [Dense, Relu] * 6 + [Dense]),
        "benchmarks/test/test_small.onnx": ((1,), [Dense, Relu, Dense, Relu, Dense]),
    }
    for rel, (shape, kinds) in expected.items():
        if not (SHARED / rel).exists():
            pytest.skip(f"{SHARED / rel} not available")
        loaded = load_onnx(SHARED / rel)
        assert loaded.input_shape == shape, rel
        assert [type(layer) for layer in to_network(loaded).layers] == kinds, rel
