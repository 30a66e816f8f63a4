"""The README's main job: one short section per method, each saying what its paper promises and
what was measured here, then one summary table (method | promise | measured here | met | seconds).

Sections: the core (the shipped specs through the whole pipeline), then every registered plugin
that offers a demo (``Plugin.extras["demo"]``: ``demo(demo_dir, out_dir, quick) -> dict | None``,
the dict holding ``section``, ``promise``, ``measured``, ``met`` and ``numbers``). Every number goes
to ``out/demo/demo.json`` and the plots beside it. A promise not met on the shipped data is marked
so in the table, never left out.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Optional

from vnnx.errors import InputFileError

DEMO_DIR = Path(__file__).resolve().parents[1] / "specs" / "mnist_demo"


def _progress(text: str) -> None:
    print(f"[demo] {text}", file=sys.stderr, flush=True)


def core_section(demo: Path, out: Path, timeout: float, quick: bool) -> dict:
    """The shipped specs through PGD -> CROWN -> α-CROWN -> BaB -> MILP (``quick``: 4 of them)."""
    from vnnx.bench import run_benchmark
    from vnnx.cli import relaxations_for

    instances = demo / "specs" / "instances.csv"
    if not instances.is_file():
        raise InputFileError(f"{instances}: shipped demo specs are missing (rebuild with tools/make_demo.py)")
    meta = json.loads((demo / "training.json").read_text()) if (demo / "training.json").is_file() else {}
    print(f"== core: {meta.get('architecture', 'shipped model')} (evaluation accuracy "
          f"{meta.get('eval_accuracy_0_999', float('nan')):.3f}), PGD -> CROWN -> alpha-CROWN -> BaB -> MILP, "
          f"timeout {timeout:g} s per spec")
    summary = run_benchmark(str(instances), out_csv=str(out / "verify_results.csv"), timeout_scale=1.0,
                            relaxations=relaxations_for("capm"),
                            limit=4 if quick else None, progress=True, max_timeout=timeout)
    print(summary.table())
    c = summary.counts()
    n = len(summary.rows)
    answered = c["sat"] + c["unsat"]
    return {"section": "core", "promise": "every shipped spec answered within its timeout; sat only with a "
                                          "witness onnxruntime confirms, unsat only from a sound bound or MILP",
            "measured": f"{answered}/{n} answered ({c['sat']} sat, {c['unsat']} unsat, {c['timeout']} timeout, "
                        f"{c['unknown']} unknown)",
            "met": answered == n, "numbers": {"counts": c, "instances": n, "results_csv": str(out / "verify_results.csv")}}


def run_demo(out_dir: str = "out/demo", timeout: float = 30.0, quick: bool = False,
             demo_dir: Optional[Path] = None) -> int:
    """Run every section, print the summary table, write ``out_dir/demo.json``."""
    from vnnx.registry import discover
    from vnnx.util import check_writable_file, write_text_atomic

    demo = Path(demo_dir or DEMO_DIR)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_writable_file(out / "demo.json", "demo JSON")
    sections = []
    t0 = time.monotonic()
    _progress("section core")
    result = core_section(demo, out, timeout, quick)
    result["seconds"] = round(time.monotonic() - t0, 1)
    sections.append(result)
    plugins, _ = discover()
    for plugin in plugins:
        demo_fn = plugin.extras.get("demo")
        if demo_fn is None:
            continue
        _progress(f"section {plugin.name}")
        print(f"\n== {plugin.name}")
        t1 = time.monotonic()
        result = demo_fn(demo_dir=demo, out_dir=out, quick=quick)
        if result is None:
            continue
        result["seconds"] = round(time.monotonic() - t1, 1)
        result.setdefault("plugin", plugin.name)
        sections.append(result)
    total = round(time.monotonic() - t0, 1)
    print("\n" + summary_table(sections))
    doc = {"quick": quick, "timeout": timeout, "seconds": total, "sections": sections}
    write_text_atomic(out / "demo.json", json.dumps(doc, indent=2, default=str) + "\n")
    print(f"\nall numbers: {out / 'demo.json'}; plots and models: {out}/ ({total:.0f} s)")
    return 0


def summary_table(sections: list[dict]) -> str:
    """method | promise | measured here | met | seconds, one row per section (Markdown)."""
    lines = ["| method | promise | measured here | met | seconds |", "|---|---|---|---|---|"]
    for s in sections:
        lines.append(f"| {s['section']} | {s['promise']} | {s['measured']} | {'yes' if s['met'] else '**NO**'} | "
                     f"{s.get('seconds', 0):.0f} |")
    return "\n".join(lines)
