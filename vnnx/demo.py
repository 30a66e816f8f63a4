"""The README's main job: verify the shipped MNIST model against its shipped specs, and (when
the VNN-LP plugin is installed) compare it with its sparsified version."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from vnnx.errors import InputFileError

DEMO_DIR = Path(__file__).resolve().parents[1] / "specs" / "mnist_demo"


def run_demo(out_dir: str = "out/demo", timeout: float = 30.0, quick: bool = False,
             demo_dir: Optional[Path] = None) -> int:
    """Run ``vnnx bench`` over ``specs/mnist_demo/specs/instances.csv`` (each instance capped at
    ``timeout`` seconds), print the results table, then run every registered plugin demo."""
    from vnnx.bench import run_benchmark
    from vnnx.cli import custom_ops_for
    from vnnx.registry import discover

    demo = Path(demo_dir or DEMO_DIR)
    instances = demo / "specs" / "instances.csv"
    if not instances.is_file():
        raise InputFileError(f"{instances}: shipped demo specs are missing (rebuild with tools/make_demo.py)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = json.loads((demo / "training.json").read_text()) if (demo / "training.json").is_file() else {}
    print(f"== vnnx demo: {meta.get('architecture', 'shipped model')}, "
          f"evaluation accuracy {meta.get('eval_accuracy_0_999', float('nan')):.3f}")
    print(f"== verifying {instances} (PGD -> CROWN -> alpha-CROWN -> BaB -> MILP, timeout {timeout:g} s each)")
    summary = run_benchmark(str(instances), out_csv=str(out / "verify_results.csv"),
                            timeout_scale=1.0, custom_ops=custom_ops_for("capm"),
                            limit=4 if quick else None, progress=True, max_timeout=timeout)
    print(summary.table())
    plugins, _ = discover()
    for plugin in plugins:
        demo_fn = plugin.extras.get("demo")
        if demo_fn is not None:
            print(f"\n== plugin {plugin.name}")
            demo_fn(demo_dir=demo, out_dir=out, quick=quick)
    return 0
