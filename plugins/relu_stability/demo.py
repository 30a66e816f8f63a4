"""The main job's ReLU-stability section: the shipped control (PGD adversarial training, L1,
weight and ReLU pruning) and +RS (the same plus the RS loss) MNIST CNNs, at the training radius
ε = 0.1: unstable ReLUs by improved interval arithmetic, and provable accuracy and mean
verification time of the complete ``vnnx verify`` pipeline on the first evaluation images."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

DEMO_EPSILON = 0.1
#: Images for the unstable-ReLU count and for complete verification (quick: fewer), and the
#: verify timeout per image (a timed-out image counts its timeout and is not provable).
DEMO_REPORT_IMAGES, DEMO_QUICK_REPORT_IMAGES = 50, 10
DEMO_VERIFY_IMAGES, DEMO_QUICK_VERIFY_IMAGES = 8, 3
DEMO_TIMEOUT, DEMO_QUICK_TIMEOUT = 10.0, 5.0
MODELS = {"control": "relu_control.onnx.gz", "+RS": "relu_rs.onnx.gz"}


def demo(demo_dir, out_dir, quick: bool = False) -> Optional[dict]:
    from vnnx.cli import relaxations_for
    from vnnx.data import load_npz
    from vnnx.io.onnx import load_onnx, run_onnxruntime, to_network
    from vnnx.io.vnnlib import Spec, robustness_property
    from vnnx.verify import Verifier

    from .report import friendliness_report

    demo_dir = Path(demo_dir)
    paths = {k: demo_dir / v for k, v in MODELS.items()}
    data_path = demo_dir / "mnist_eval400.npz"
    if not all(p.is_file() for p in list(paths.values()) + [data_path]):
        print(f"relu-stability demo: {', '.join(map(str, paths.values()))} missing; skipped", file=sys.stderr)
        return None
    data = load_npz(data_path)
    n_rep = DEMO_QUICK_REPORT_IMAGES if quick else DEMO_REPORT_IMAGES
    n_ver = DEMO_QUICK_VERIFY_IMAGES if quick else DEMO_VERIFY_IMAGES
    timeout = DEMO_QUICK_TIMEOUT if quick else DEMO_TIMEOUT
    numbers: dict = {"epsilon": DEMO_EPSILON, "report_images": n_rep, "verify_images": n_ver, "timeout": timeout,
                     "models": {}}
    for name, path in paths.items():
        model = load_onnx(path)
        network = to_network(model)
        x = data.x[:400].reshape(400, -1)
        accuracy = float((run_onnxruntime(model, x).argmax(1) == data.y[:400]).mean())
        rep = friendliness_report(network, data.x[:n_rep], DEMO_EPSILON, "improved-ia")
        verifier = Verifier(model, relaxations=relaxations_for("capm"))
        provable, seconds, verdicts = 0, [], []
        for i in range(n_ver):
            prop = robustness_property(x[i], DEMO_EPSILON, int(data.y[i]), network.n_outputs)
            spec = Spec(f"image {i}", network.n_inputs, network.n_outputs, [prop])
            t0 = time.monotonic()
            verdict = verifier.verify(spec, timeout=timeout).verdict
            seconds.append(min(time.monotonic() - t0, timeout))
            verdicts.append(verdict)
            provable += verdict == "unsat"
        numbers["models"][name] = {"test_accuracy_0_399": accuracy, "unstable_relus": rep["unstable_total"],
                                   "provable": provable / n_ver, "mean_verify_seconds": float(np.mean(seconds)),
                                   "verdicts": verdicts}
        print(f"{name:8s} accuracy {100 * accuracy:.1f} %, unstable ReLUs (improved IA, ε {DEMO_EPSILON}) "
              f"{rep['unstable_total']:.1f}, provable {provable}/{n_ver}, mean verify {np.mean(seconds):.2f} s "
              f"(timeout {timeout:g} s)", flush=True)
    c, r = numbers["models"]["control"], numbers["models"]["+RS"]
    fewer = c["unstable_relus"] / max(r["unstable_relus"], 1e-9)
    faster = c["mean_verify_seconds"] / max(r["mean_verify_seconds"], 1e-9)
    numbers["unstable_ratio"], numbers["speedup"] = fewer, faster
    met = fewer > 1 and faster > 1 and r["provable"] >= c["provable"]
    measured = (f"unstable ReLUs {c['unstable_relus']:.0f} -> {r['unstable_relus']:.0f} ({fewer:.1f}x fewer); mean verify "
                f"{c['mean_verify_seconds']:.2f} -> {r['mean_verify_seconds']:.2f} s ({faster:.1f}x); provable "
                f"{100 * c['provable']:.0f} -> {100 * r['provable']:.0f} % of {n_ver}; accuracy "
                f"{100 * c['test_accuracy_0_399']:.1f} -> {100 * r['test_accuracy_0_399']:.1f} %")
    return {"section": "ReLU stability", "promise": "the RS loss makes ReLUs stable: fewer unstable ReLUs and faster "
                                                    "exact verification, as many images provable, at a small accuracy cost",
            "measured": measured, "met": met, "numbers": numbers}
