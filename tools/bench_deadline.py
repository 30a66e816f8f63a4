"""How far past ``--timeout`` does ``vnnx verify`` return, per stage (issue 17, item 5)?

Each stage runs alone (``--method``) as a real command, on instances hard enough that it runs
into its deadline, and the wall time of the whole process (interpreter start-up and imports
included: vnnx counts its deadline from the process start) is compared with ``--timeout``.
``run_instance.sh`` is measured the same way; it must return within TIMEOUT + 2 s.

Run:  .venv/bin/python tools/bench_deadline.py [--timeout 10] [--repeats 1] [--json out/deadline.json]

The printed overrun = wall seconds - timeout (negative: the stage finished early, e.g. it
decided the instance). Timing depends on the machine's load; compare runs made on the same day.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks"

# (label, onnx, vnnlib, methods): instances on which each listed stage runs into its deadline.
CASES = [
    ("mnistfc 256x6 prop_1 ε=0.05", "mnistfc/mnist-net_256x6.onnx", "mnistfc/prop_1_0.05.vnnlib",
     ("auto", "alpha-crown", "bab", "milp")),
    ("ACAS Xu 1_1 prop_5", "acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu/prop_5.vnnlib",
     ("input-split",)),
    ("verivital maxpool", "verivital/Convnet_maxpool.onnx", "verivital/specs/maxpool_specs/prop_0_0.004.vnnlib",
     ("bab",)),
]


def run_once(cmd: list[str]) -> tuple[float, str]:
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    return time.monotonic() - t0, (out.stdout.strip().splitlines() or [f"rc={out.returncode}"])[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=float, default=10.0, help="--timeout of every run (default 10)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per (instance, stage); the max is reported")
    ap.add_argument("--shared", default=str(SHARED))
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    vnnx = [sys.executable, "-m", "vnnx.cli"]
    shared = Path(args.shared)
    rows = []
    print(f"{'instance':32s} {'stage':15s} {'verdict':8s} {'wall s':>7s} {'overrun s':>9s}")
    for label, onnx, spec, methods in CASES:
        if not (shared / onnx).is_file() or not (shared / spec).is_file():
            print(f"{label}: missing under {shared}, skipped", file=sys.stderr)
            continue
        for method in methods:
            walls, verdict = [], ""
            for _ in range(args.repeats):
                wall, verdict = run_once([*vnnx, "verify", "--onnx", str(shared / onnx), "--vnnlib",
                                          str(shared / spec), "--method", method, "--timeout", str(args.timeout)])
                walls.append(wall)
            rows.append({"instance": label, "stage": method, "verdict": verdict, "wall": max(walls),
                         "overrun": max(walls) - args.timeout})
            print(f"{label:32s} {method:15s} {verdict:8s} {max(walls):7.2f} {max(walls) - args.timeout:9.2f}")
        # The VNN-COMP script around the same instance.
        with tempfile.TemporaryDirectory() as tmp:
            walls = []
            for _ in range(args.repeats):
                t0 = time.monotonic()
                subprocess.run(["bash", str(ROOT / "tools" / "vnncomp" / "run_instance.sh"), "v1", "bench",
                                str(shared / onnx), str(shared / spec), os.path.join(tmp, "r.txt"),
                                f"{args.timeout:g}"], capture_output=True)
                walls.append(time.monotonic() - t0)
            verdict = Path(tmp, "r.txt").read_text().split()[0]
        rows.append({"instance": label, "stage": "run_instance.sh", "verdict": verdict, "wall": max(walls),
                     "overrun": max(walls) - args.timeout})
        print(f"{label:32s} {'run_instance.sh':15s} {verdict:8s} {max(walls):7.2f} {max(walls) - args.timeout:9.2f}")
    over = [r["overrun"] for r in rows]
    print(f"\nworst overrun {max(over):.2f} s, median {statistics.median(over):.2f} s "
          f"(timeout {args.timeout:g} s; {platform.node()}, {os.cpu_count()} cores, {dt.date.today()})")
    if args.json:
        Path(args.json).write_text(json.dumps({"timeout": args.timeout, "date": dt.date.today().isoformat(),
                                               "machine": f"{os.cpu_count()} cores", "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
