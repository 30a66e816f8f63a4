"""The main job's local-substitute section: on a few anchors of the shipped normally trained 3x50
MLP, the network's distance to the decision boundary d_bnd against the estimates of its ``lin``
and ``act`` substitutes (γ = 0.9), with the relative difference and the speed-up per decision.

Each d_bnd is a binary search over ε with one complete decision per ε: for the network the
complete ``vnnx verify`` pipeline (its plain MILP times out at 20 s near the boundary of some
anchors), for the substitutes one exact MILP; the speed-up compares those per-decision times."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import numpy as np

#: Anchors (evaluation images 0..n-1), substitute kinds, γ and the per-solve MILP timeout.
DEMO_ANCHORS, DEMO_QUICK_ANCHORS = 2, 1
DEMO_KINDS = ("lin", "act")
DEMO_GAMMA = 0.9
DEMO_SOLVE_TIMEOUT = 20.0
#: The paper's target on the relative d_bnd difference.
TARGET_REL_DIFF = 0.02


def demo(demo_dir, out_dir, quick: bool = False) -> Optional[dict]:
    from vnnx.data import load_npz
    from vnnx.io.onnx import load_onnx, to_network

    from .core import boundary_distance, make_substitute

    demo_dir = Path(demo_dir)
    model_path, data_path = demo_dir / "mnist_3x50_plain.onnx", demo_dir / "mnist_eval400.npz"
    if not (model_path.is_file() and data_path.is_file()):
        print(f"substitute demo: {model_path} missing (tools/make_demo.py --parts plain); skipped", file=sys.stderr)
        return None
    network = to_network(load_onnx(model_path))
    data = load_npz(data_path)
    n = DEMO_QUICK_ANCHORS if quick else DEMO_ANCHORS
    rows = []
    for i in range(n):
        x0 = data.x[i].reshape(-1).astype(np.float64)
        f = boundary_distance(network, x0, timeout=DEMO_SOLVE_TIMEOUT, engine="verify")
        row = {"anchor": i, "label": f.label, "f": {"status": f.status, "d_bnd": f.d_bnd,
                                                   "s_per_decision": _mean(f.solve_seconds)}}
        for kind in DEMO_KINDS:
            sub = make_substitute(network, x0, kind, DEMO_GAMMA, label=f.label)
            s = boundary_distance(sub.network, x0, label=f.label, timeout=DEMO_SOLVE_TIMEOUT)
            rel = (abs(s.d_bnd - f.d_bnd) / f.d_bnd if f.d_bnd and s.d_bnd is not None else None)
            speedup = (row["f"]["s_per_decision"] / _mean(s.solve_seconds)
                       if row["f"]["s_per_decision"] and _mean(s.solve_seconds) else None)
            row[kind] = {"status": s.status, "d_bnd": s.d_bnd, "rel_diff": rel, "speedup": speedup,
                         "relus_kept": sub.summary()["relus_kept"], "relus_total": sub.summary()["relus_total"]}
        rows.append(row)
        cells = "  ".join(f"{k}: d_bnd {_fmt(row[k]['d_bnd'])} (rel. diff {_pct(row[k]['rel_diff'])}, x"
                          f"{_fmt(row[k]['speedup'], 1)} per decision)" for k in DEMO_KINDS)
        print(f"anchor {i} (label {f.label}): f d_bnd {_fmt(f.d_bnd)}  {cells}", flush=True)
    summary = {}
    for kind in DEMO_KINDS:
        diffs = [r[kind]["rel_diff"] for r in rows if r[kind]["rel_diff"] is not None]
        speed = [r[kind]["speedup"] for r in rows if r[kind]["speedup"] is not None]
        summary[kind] = {"mean_rel_diff": _mean(diffs), "mean_speedup": _mean(speed), "compared": len(diffs)}
    lin = summary["lin"]
    met = lin["compared"] == n and lin["mean_rel_diff"] is not None and lin["mean_rel_diff"] <= TARGET_REL_DIFF
    measured = "; ".join(f"{k}: mean rel. d_bnd difference {_pct(v['mean_rel_diff'])}, x{_fmt(v['mean_speedup'], 1)} "
                         f"faster per decision ({v['compared']}/{n} anchors)" for k, v in summary.items())
    return {"section": "local substitutes",
            "promise": f"a substitute's d_bnd within {100 * TARGET_REL_DIFF:.0f} % of the network's (lin), "
                       "decided faster (substitute MILP vs the network's complete pipeline)",
            "measured": measured, "met": met, "numbers": {"anchors": rows, "summary": summary, "gamma": DEMO_GAMMA}}


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return float(np.mean(xs)) if xs else None


def _fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"
