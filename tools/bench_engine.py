"""The graph engine against auto_LiRPA: CROWN time and peak memory on the shared suites.

For each network of ``../shared/benchmarks`` (the first spec of its instances), CROWN on the spec's
rows is computed by

* ``lirpa``: auto_LiRPA 0.3 on the chain view (CAPM's MaxPool operator on MaxPool networks);
* ``graph``: vnnx's graph engine (:mod:`vnnx.engine`, CAPM's MaxPool relaxation registered);

(The chain engines it replaced, CAPM's whole-network sparse CROWN among them, were deleted after
the 2026-12-02 run in docs/architecture.md, which measured all of them.)

in one process, best of ``--repeats`` runs after one warm-up, and the ratio graph / fastest other
engine is printed (< 1: the graph engine is faster). With ``--memory`` each engine also runs once in
a subprocess of this run, which reports its own peak RSS (imports and model included, the same for
every engine), and the ratio graph / lowest other is printed. Bounds are checked to be sound
against each other: the graph engine's interval of every row must intersect the others'.

Run:  .venv/bin/python tools/bench_engine.py [--repeats 3] [--memory] [--json out/engine.json]
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "benchmarks"

SUITES = [("mnistfc", "mnistfc_instances.csv"), ("acasxu", "acasxu_instances.csv"),
          ("verivital", "verivital_instances.csv"), ("test", "test_instances.csv"),
          ("collins_rul_cnn_sample", "instances.csv")]
EXTRA = [("capm_overlap_case", "capm_net.onnx", "capm_prop.vnnlib")]


def instances(limit_acas: int = 1) -> list[tuple[str, Path, Path]]:
    """(label, onnx, vnnlib): the first spec of every network of the shared suites."""
    out, seen = [], set()
    for suite, name in SUITES:
        table = SHARED / suite / name
        if not table.exists():
            cands = sorted((SHARED / suite).glob("*.csv"))
            if not cands:
                continue
            table = cands[0]
        n_acas = 0
        for row in csv.reader(l for l in table.open() if l.strip() and not l.startswith("#")):
            onnx, spec = (SHARED / suite / row[0].strip()), (SHARED / suite / row[1].strip())
            if onnx in seen:
                continue
            if suite == "acasxu":
                n_acas += 1
                if n_acas > limit_acas:
                    continue
            seen.add(onnx)
            out.append((f"{suite}/{onnx.name}", onnx, spec))
    for suite, onnx, spec in EXTRA:
        if (SHARED / suite / onnx).exists():
            out.append((f"{suite}/{onnx}", SHARED / suite / onnx, SHARED / suite / spec))
    return out


def engines_for(onnx: Path, only: str | None = None):
    """{name: callable(lo, hi, C) -> (lower, upper)} for the engines that take this network
    (``only``: build just that one)."""
    from vnnx.bounds import BoundComputer
    from vnnx.cli import custom_ops_for, relaxations_for
    from vnnx.engine import GraphEngine
    from vnnx.errors import UnsupportedOpError
    from vnnx.graph import from_onnx
    from vnnx.io.onnx import load_onnx, to_network

    model = load_onnx(onnx)
    out = {}
    if only in (None, "lirpa"):
        try:
            lirpa = BoundComputer(to_network(model), custom_ops_for("capm"))
        except UnsupportedOpError:      # not a chain: auto_LiRPA's facade takes chains only
            lirpa = None
        if lirpa is not None:
            def run_lirpa(lo, hi, C):
                r = lirpa.compute(lo, hi, "crown", C)
                return r.lower, r.upper
            out["lirpa"] = run_lirpa
    if only in (None, "graph"):
        graph = GraphEngine(from_onnx(model), relaxations=relaxations_for("capm"))

        def run_graph(lo, hi, C):
            r = graph.compute(lo, hi, "crown", C)
            return r.lower, r.upper
        out["graph"] = run_graph
    return out


def spec_rows(onnx: Path, spec: Path):
    import numpy as np

    from vnnx.io.onnx import load_onnx
    from vnnx.io.vnnlib import read_vnnlib

    model = load_onnx(onnx, check=False)
    prop = read_vnnlib(spec, model.n_inputs, model.n_outputs).properties[0]
    rows = [a for a, b in prop.clauses if len(b)]
    C = np.vstack(rows) if rows else np.eye(model.n_outputs)
    return prop.x_lower, prop.x_upper, C


def child(engine: str, onnx: str, spec: str) -> None:
    """Build one engine, run it once and print this process's peak RSS (MiB) as JSON. (VmHWM,
    not getrusage's ru_maxrss, which Linux carries over from the forking parent across exec.)"""
    import torch

    torch.set_num_threads(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lo, hi, C = spec_rows(Path(onnx), Path(spec))
        fn = engines_for(Path(onnx), only=engine)[engine]
        fn(lo, hi, C)
    hwm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({"peak_rss_mib": hwm / 1024}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memory", action="store_true", help="also peak RSS per engine, each in a subprocess")
    ap.add_argument("--json", help="write the rows and the machine to this JSON file")
    ap.add_argument("--only", help="run only networks whose label contains this")
    ap.add_argument("--child", nargs=3, metavar=("ENGINE", "ONNX", "VNNLIB"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    import numpy as np
    import torch

    torch.set_num_threads(1)
    rows = []
    print(f"{'network':52s} {'engine':7s} {'seconds':>8s} {'ratio':>6s} {'RSS MiB':>8s} {'ratio':>6s}")
    for label, onnx, spec in instances():
        if args.only and args.only not in label:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lo, hi, C = spec_rows(onnx, spec)
            fns = engines_for(onnx)
            times, bounds = {}, {}
            for name, fn in fns.items():
                bounds[name] = fn(lo, hi, C)          # warm-up
                best = float("inf")
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    fn(lo, hi, C)
                    best = min(best, time.perf_counter() - t0)
                times[name] = best
        gl, gu = bounds["graph"]
        for name, (l, u) in bounds.items():
            if np.any(np.maximum(gl, l) > np.minimum(gu, u) + 1e-6):
                raise SystemExit(f"{label}: the graph engine's bounds and {name}'s do not intersect")
        rss = {}
        if args.memory:
            for name in fns:
                out = subprocess.run([sys.executable, __file__, "--child", name, str(onnx), str(spec)],
                                     capture_output=True, text=True)
                rss[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_mib"] if out.returncode == 0 else None
        others = [t for n, t in times.items() if n != "graph"]
        t_ratio = times["graph"] / min(others) if others else None
        m_others = [m for n, m in rss.items() if n != "graph" and m]
        m_ratio = rss["graph"] / min(m_others) if m_others and rss.get("graph") else None
        for name in fns:
            is_graph = name == "graph"
            print(f"{label:52s} {name:7s} {times[name]:8.3f} {(f'{t_ratio:6.2f}' if is_graph and t_ratio else ''):>6s} "
                  f"{(f'{rss[name]:8.0f}' if rss.get(name) else ''):>8s} "
                  f"{(f'{m_ratio:6.2f}' if is_graph and m_ratio else ''):>6s}")
        rows.append({"network": label, "spec": spec.name, "seconds": times, "time_ratio": t_ratio,
                     "peak_rss_mib": rss, "rss_ratio": m_ratio,
                     "mean_width": {n: float(np.mean(u - l)) for n, (l, u) in bounds.items()}})
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"date": dt.date.today().isoformat(), "machine": platform.platform(),
                                               "python": platform.python_version(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
