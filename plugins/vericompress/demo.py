"""The main job's VeriCompress section: the shipped dense CROWN-IBP backbone and its VeriCompress
compact network (10 % of the backbone's parameters, both trained by tools/make_demo.py):
parameters, ONNX bytes, CPU time per sample (onnxruntime, one thread) and verified accuracy at
ε = 0.1 with IBP and CROWN (vnnx's graph engine, :class:`vnnx.engine.ChainBounds`) on the first
evaluation images."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

DEMO_EPSILON = 0.1
DEMO_IMAGES, DEMO_QUICK_IMAGES = 100, 20
#: The budget the compact network was trained for (10 % of the backbone), and the verified-accuracy
#: drop (points, CROWN) the section accepts as "close to the dense model".
BUDGET_FRACTION = 0.1
MAX_DROP_POINTS = 5.0
TIMING_RUNS = 200


def _params(model) -> int:
    """Weights and biases of the Conv / Gemm / MatMul nodes of an ONNX model."""
    weights = {i for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul") for i in n.input[1:]}
    return int(sum(np.prod(t.dims) for t in model.graph.initializer if t.name in weights))


def _cpu_seconds(path: Path, x: np.ndarray) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sample = x[:1].astype(np.float32)
    for _ in range(20):
        sess.run(None, {name: sample})
    times = []
    for _ in range(TIMING_RUNS):
        t0 = time.perf_counter()
        sess.run(None, {name: sample})
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def demo(demo_dir, out_dir, quick: bool = False) -> Optional[dict]:
    from vnnx.data import load_npz
    from vnnx.engine import ChainBounds
    from vnnx.io.onnx import load_onnx, run_onnxruntime, to_network
    from vnnx.io.vnnlib import robustness_property
    from vnnx.verify import refuted_clauses

    demo_dir = Path(demo_dir)
    paths = {"backbone": demo_dir / "vc_backbone.onnx", "compact": demo_dir / "vc_compact.onnx"}
    data_path = demo_dir / "mnist_eval400.npz"
    if not all(p.is_file() for p in list(paths.values()) + [data_path]):
        print("vericompress demo: vc_backbone.onnx / vc_compact.onnx missing (tools/make_demo.py --parts "
              "vericompress); skipped", file=sys.stderr)
        return None
    data = load_npz(data_path)
    n = DEMO_QUICK_IMAGES if quick else DEMO_IMAGES
    rows = {}
    for name, path in paths.items():
        model = load_onnx(path)
        network = to_network(model)
        x = data.x[:n].reshape(n, -1)
        correct = run_onnxruntime(model, x).argmax(1) == data.y[:n]
        engine = ChainBounds(network)
        verified = {"ibp": 0, "crown": 0}
        for i in np.flatnonzero(correct):
            prop = robustness_property(x[i], DEMO_EPSILON, int(data.y[i]), network.n_outputs)
            C = np.concatenate([a for a, _ in prop.clauses])
            for method in verified:
                res = engine.compute(prop.x_lower, prop.x_upper, method, C)
                verified[method] += all(refuted_clauses(res.lower, prop.clauses))
        rows[name] = {"params": _params(model.onnx_model), "onnx_bytes": path.stat().st_size,
                      "cpu_us_per_sample": 1e6 * _cpu_seconds(path, data.x[:1]),
                      "accuracy": float(correct.mean()), "ibp_verified": verified["ibp"] / n,
                      "crown_verified": verified["crown"] / n}
    print(f"{'':10s} {'params':>8s} {'ONNX bytes':>10s} {'CPU us/sample':>13s} {'accuracy':>9s} "
          f"{'IBP ver.':>9s} {'CROWN ver.':>10s}   (ε {DEMO_EPSILON}, {n} images)")
    for name, r in rows.items():
        print(f"{name:10s} {r['params']:>8d} {r['onnx_bytes']:>10d} {r['cpu_us_per_sample']:>13.1f} "
              f"{100 * r['accuracy']:>8.1f}% {100 * r['ibp_verified']:>8.1f}% {100 * r['crown_verified']:>9.1f}%")
    b, c = rows["backbone"], rows["compact"]
    budget = int(BUDGET_FRACTION * b["params"])
    speedup = b["cpu_us_per_sample"] / c["cpu_us_per_sample"]
    drop = 100 * (b["crown_verified"] - c["crown_verified"])
    met = c["params"] <= budget and speedup > 1 and drop <= MAX_DROP_POINTS
    measured = (f"{c['params']} <= {budget} params ({b['params']} dense), {c['onnx_bytes'] // 1024} KB, {speedup:.1f}x "
                f"faster per sample; CROWN verified {100 * b['crown_verified']:.0f} -> {100 * c['crown_verified']:.0f} %, "
                f"IBP {100 * b['ibp_verified']:.0f} -> {100 * c['ibp_verified']:.0f} %")
    return {"section": "VeriCompress",
            "promise": f"a network within {100 * BUDGET_FRACTION:.0f} % of the backbone's parameters, faster on CPU, "
                       f"verified accuracy within {MAX_DROP_POINTS:g} points of the dense CROWN-IBP model",
            "measured": measured, "met": met, "numbers": {"epsilon": DEMO_EPSILON, "images": n, "budget": budget,
                                                          "speedup": speedup, "models": rows}}
