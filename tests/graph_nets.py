"""Seeded graph-shaped networks (residual blocks, BatchNorm, Concat, ...) written as ONNX files.
Nothing is built at import time."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def resnet_file(path: Path, seed: int = 0, channels: int = 4, size: int = 8) -> Path:
    """A CIFAR-style residual network (3 x size x size input, BatchNorm, one identity block and
    one down-sampling block with a 1x1 shortcut, average pooling, 10 classes), exported by torch
    (which folds BatchNorm into the convolutions)."""
    import torch
    from torch import nn

    from vnnx.io.onnx import export_onnx

    torch.manual_seed(seed)

    class Block(nn.Module):
        def __init__(self, c: int, down: bool) -> None:
            super().__init__()
            o = 2 * c if down else c
            self.c1 = nn.Conv2d(c, o, 3, stride=2 if down else 1, padding=1)
            self.b1 = nn.BatchNorm2d(o)
            self.c2 = nn.Conv2d(o, o, 3, padding=1)
            self.b2 = nn.BatchNorm2d(o)
            self.short = nn.Sequential(nn.Conv2d(c, o, 1, stride=2), nn.BatchNorm2d(o)) if down else nn.Identity()

        def forward(self, x):
            h = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(h)) + self.short(x))

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU())
            self.blocks = nn.Sequential(Block(channels, False), Block(channels, True))
            self.pool = nn.AvgPool2d(2)
            self.fc = nn.Linear(2 * channels * (size // 4) ** 2, 10)

        def forward(self, x):
            return self.fc(self.pool(self.blocks(self.stem(x))).flatten(1))

    net = Net()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    export_onnx(net, (1, 3, size, size), path)
    return path


def zoo_file(path: Path, seed: int = 0, smooth: bool = True) -> Path:
    """A hand-written ONNX graph with one of most operator kinds: Conv + BatchNorm (folded),
    LeakyRelu, a residual Add, BatchNorm after the Add (kept), Relu, Pad, padded MaxPool,
    AveragePool, Sub, Concat, Transpose, Shape/Gather/Unsqueeze/Concat/Reshape plumbing,
    MatMul, Mul, then Tanh, Gemm, Sigmoid, Div, Identity (``smooth``) or Relu, Gemm, Div."""
    import onnx
    from onnx import TensorProto, helper as h, numpy_helper as nh

    rng = np.random.default_rng(seed)
    inits = []

    def c(name, arr):
        inits.append(nh.from_array(np.asarray(arr), name))
        return name

    def f32(*shape, scale=1.0):
        return (rng.normal(size=shape) * scale).astype(np.float32)

    def bn(x, out, k):
        return h.make_node("BatchNormalization",
                           [x, c(f"gamma{k}", rng.uniform(.5, 1.5, 4).astype(np.float32)), c(f"beta{k}", f32(4, scale=.1)),
                            c(f"mean{k}", f32(4, scale=.1)), c(f"var{k}", rng.uniform(.5, 2, 4).astype(np.float32))], [out])

    act = "Tanh" if smooth else "Relu"
    nodes = [
        h.make_node("Conv", ["x", c("w1", f32(4, 2, 3, 3, scale=1 / 3)), c("b1", f32(4, scale=.1))], ["c1"], pads=[1, 1, 1, 1]),
        bn("c1", "bn1", 1),
        h.make_node("LeakyRelu", ["bn1"], ["r1"], alpha=0.1),
        h.make_node("Conv", ["r1", c("w2", f32(4, 4, 3, 3, scale=1 / 6))], ["c2"], pads=[1, 1, 1, 1]),
        h.make_node("Add", ["c2", "r1"], ["a1"]),
        bn("a1", "bn2", 2),
        h.make_node("Relu", ["bn2"], ["r2"]),
        h.make_node("Pad", ["r2", c("pads", np.array([0, 0, 0, 1, 0, 0, 1, 0], dtype=np.int64))], ["p1"]),
        h.make_node("MaxPool", ["p1"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0]),
        h.make_node("AveragePool", ["r2"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        h.make_node("Sub", ["mp", c("s1", np.float32(0.05))], ["mps"]),
        h.make_node("Concat", ["mps", "ap"], ["cat"], axis=1),
        h.make_node("Transpose", ["cat"], ["tr"], perm=[0, 2, 3, 1]),
        h.make_node("Shape", ["tr"], ["shp"]),
        h.make_node("Gather", ["shp", c("zero", np.array(0, dtype=np.int64))], ["n0"], axis=0),
        h.make_node("Unsqueeze", ["n0", c("ax0", np.array([0], dtype=np.int64))], ["n0u"]),
        h.make_node("Concat", ["n0u", c("minus1", np.array([-1], dtype=np.int64))], ["newshape"], axis=0),
        h.make_node("Reshape", ["tr", "newshape"], ["flat"]),
        h.make_node("MatMul", ["flat", c("wm", f32(32, 6, scale=1 / 6))], ["mm"]),
        h.make_node("Mul", ["mm", c("sc", np.float32(1.5))], ["mm2"]),
        h.make_node(act, ["mm2"], ["t1"]),
        h.make_node("Gemm", ["t1", c("wg", f32(5, 6, scale=1 / 3)), c("bg", f32(5, scale=.1))], ["g1"], transB=1),
    ]
    if smooth:
        nodes += [h.make_node("Sigmoid", ["g1"], ["sg"]),
                  h.make_node("Div", ["sg", c("dv", np.float32(0.5))], ["y0"]),
                  h.make_node("Identity", ["y0"], ["y"])]
    else:
        nodes += [h.make_node("Div", ["g1", c("dv", np.float32(0.5))], ["y"])]
    graph = h.make_graph(nodes, "zoo", [h.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])],
                         [h.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 13)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def robustness_spec(path: Path, center: np.ndarray, label: int, n_outputs: int, eps: float) -> Path:
    """VNN-LIB: the L-inf ball of radius ``eps`` around ``center`` (clipped to [0, 1]); violated
    when some other class scores at least ``label``'s."""
    lines = [f"(declare-const X_{i} Real)" for i in range(center.size)]
    lines += [f"(declare-const Y_{j} Real)" for j in range(n_outputs)]
    for i, v in enumerate(center):
        lines += [f"(assert (>= X_{i} {float(max(0.0, v - eps))!r}))", f"(assert (<= X_{i} {float(min(1.0, v + eps))!r}))"]
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(n_outputs) if j != label)
    lines.append(f"(assert (or {others}))")
    path.write_text("\n".join(lines) + "\n")
    return path


def residual_mlp_file(path: Path, seed: int = 0, n_in: int = 4, width: int = 12, n_out: int = 3) -> Path:
    """A small residual MLP: ``h = relu(W1 x); h = relu(W3 relu(W2 h) + h); y = W4 h`` (two
    ReLU layers read by the skip), exported by torch."""
    import torch
    from torch import nn

    from vnnx.io.onnx import export_onnx

    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l1, self.l2 = nn.Linear(n_in, width), nn.Linear(width, width)
            self.l3, self.l4 = nn.Linear(width, width), nn.Linear(width, n_out)

        def forward(self, x):
            h = torch.relu(self.l1(x))
            h = torch.relu(self.l3(torch.relu(self.l2(h))) + h)
            return self.l4(h)

    export_onnx(Net().eval(), (1, n_in), path)
    return path


def bounds_with_random_betas(bab, dom, rng) -> dict:
    """A branch-and-bound domain's bound with every split multiplier β at 0 (``beta0``) and
    drawn from U(0, 2) (``beta``), one backward pass each (``vnnx.graph_bab.GraphBab``)."""
    import torch

    bounds = {}
    for name, scale in (("beta0", 0.0), ("beta", 1.0)):
        d = dom.clone()
        for k in bab.split_keys:
            d.betas[k] = torch.as_tensor(rng.uniform(0, 2, d.betas[k].shape)) * scale
        with torch.no_grad():
            bab._optimise(d, 0)
        bounds[name] = float(d.bound[0])
    return bounds
