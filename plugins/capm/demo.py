"""The main job's CAPM section: the shipped MNIST CNN with overlapping 3x3/2 MaxPool windows,
verified on vnnx's graph engine (:class:`vnnx.engine.ChainBounds`) with IBP, CROWN with CAPM's
MaxPool relaxation (:class:`.graph_relaxation.CapmMaxPool`), and CROWN with the engine's own
MaxPool relaxation, at two ε on the first evaluation images."""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

#: ε values and images (quick: fewer).
DEMO_EPSILONS = (0.01, 0.03)
DEMO_IMAGES, DEMO_QUICK_IMAGES = 30, 10
#: The comparison row: the graph engine's own MaxPool relaxation (vnnx/ops/maxpool.py).
DEFAULT_MAXPOOL = "CROWN + vnnx MaxPool"


def demo(demo_dir, out_dir, quick: bool = False) -> Optional[dict]:
    from vnnx.data import load_npz
    from vnnx.engine import ChainBounds
    from vnnx.errors import VnnxError
    from vnnx.io.onnx import load_onnx, run_onnxruntime, to_network
    from vnnx.io.vnnlib import robustness_property
    from vnnx.verify import refuted_clauses

    from .graph_relaxation import CapmMaxPool

    demo_dir = Path(demo_dir)
    model_path, data_path = demo_dir / "mnist_maxpool_overlap.onnx", demo_dir / "mnist_eval400.npz"
    if not (model_path.is_file() and data_path.is_file()):
        print(f"capm demo: {model_path} missing (tools/make_demo.py --parts capm); skipped", file=sys.stderr)
        return None
    model = load_onnx(model_path)
    network = to_network(model)
    data = load_npz(data_path)
    n = DEMO_QUICK_IMAGES if quick else DEMO_IMAGES
    x, y = data.x[:n].reshape(n, -1), data.y[:n]
    correct = run_onnxruntime(model, x).argmax(1) == y
    capm_engine = ChainBounds(network, relaxations={"MaxPool": CapmMaxPool()})
    engines = {"IBP": (capm_engine, "ibp"), "CROWN + CAPM": (capm_engine, "crown"),
               DEFAULT_MAXPOOL: (ChainBounds(network), "crown")}
    numbers: dict = {"images": n, "accuracy": float(correct.mean()), "epsilons": list(DEMO_EPSILONS), "methods": {}}
    for name, (engine, method) in engines.items():
        per_eps = {}
        for eps in DEMO_EPSILONS:
            verified, seconds, failed = 0, 0.0, ""
            for i in np.flatnonzero(correct):
                prop = robustness_property(x[i], eps, int(y[i]), network.n_outputs, clip=(0.0, 1.0))
                C = np.concatenate([a for a, _ in prop.clauses])
                t0 = time.perf_counter()
                try:
                    res = engine.compute(prop.x_lower, prop.x_upper, method, C)
                    verified += all(refuted_clauses(res.lower, prop.clauses))
                except VnnxError as exc:
                    failed = str(exc)
                    break
                finally:
                    seconds += time.perf_counter() - t0
            per_eps[str(eps)] = ({"error": failed} if failed else
                                 {"verified": verified / n, "seconds_per_image": seconds / max(int(correct.sum()), 1)})
        numbers["methods"][name] = per_eps
    head = f"{'method':28s}" + "".join(f"  ε {e:<5g} verified   s/image" for e in DEMO_EPSILONS)
    print(f"{n} evaluation images, {int(correct.sum())} correctly classified; verified = % of all {n}")
    print(head)
    for name, per_eps in numbers["methods"].items():
        cells = []
        for e in DEMO_EPSILONS:
            r = per_eps.get(str(e), per_eps)
            cells.append(f"  {'cannot run':>24s}" if "error" in r else
                         f"  {100 * r['verified']:>10.0f} % {r['seconds_per_image']:>9.3f}")
        print(f"{name:28s}" + "".join(cells))
    capm, ibp = numbers["methods"]["CROWN + CAPM"], numbers["methods"]["IBP"]
    top = str(max(DEMO_EPSILONS))
    met = all(capm[str(e)]["verified"] >= ibp[str(e)]["verified"] for e in DEMO_EPSILONS) and \
        capm[top]["verified"] > ibp[top]["verified"]
    own = numbers["methods"][DEFAULT_MAXPOOL][top]
    own_text = ("the engine's own MaxPool failed" if "error" in own
                else f"the engine's own MaxPool {100 * own['verified']:.0f} %")
    measured = (f"at ε {top}: CAPM {100 * capm[top]['verified']:.0f} % ({capm[top]['seconds_per_image']:.2f} s/image), "
                f"IBP {100 * ibp[top]['verified']:.0f} %, {own_text}")
    return {"section": "CAPM", "promise": "MaxPool with overlapping windows bounded as a chain of ReLUs (graph "
                                          "engine): verifies more than IBP",
            "measured": measured, "met": met, "numbers": numbers}
