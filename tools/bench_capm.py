#!/usr/bin/env python
"""Benchmark CAPM's MaxPool relaxation (issue 5) at CPU scale, on vnnx's graph engine.

Networks: verivital Convnet_maxpool (its 20 VNN-COMP specs), ERAN convSmallRELU__Point (no
MaxPool: a control; normalisation (x-0.1307)/0.3081 applied to the box outside the graph),
and small MNIST maxpool CNNs trained here (2x2/2 pooling and overlapping 3x3/2), normally and
with PGD. Methods, on the graph engine (:class:`vnnx.engine.ChainBounds`, every neuron an
activation reads refined): IBP; CROWN and α-CROWN with CAPM's relaxation
(``relaxations={"MaxPool": CapmMaxPool()}``); CROWN and α-CROWN with the engine's own MaxPool
relaxation. Cross-checks on auto_LiRPA (:class:`vnnx.bounds.BoundComputer`, an independent
engine, not the one vnnx verifies with): CROWN with CAPM's auto_LiRPA operator and with
auto_LiRPA's own MaxPool where it runs. The exact MILP on a subset. α-CROWN is run only where
CROWN did not already verify (its result is never worse than CROWN's, which it starts from).

Writes out/bench_capm/{results.csv,time_vs_eps.png,summary.md}; the table and the PNG are
copied into docs/capm.md and docs/capm_time_vs_eps.png by hand. Run: .venv/bin/python tools/bench_capm.py [--quick] [--images N] > log 2>&1

Tasks of :mod:`vnnx.executor` (``--jobs N``, ``--scheduler``, ``--local-cluster N``; default: in
this process): each training (seeded from its task key) and each (network, ε) evaluation;
results.csv has the rows of a sequential run, in its order.
"""
from __future__ import annotations

import argparse
import csv
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import vnnx  # noqa: F401
from _sweep import ordered_units
from vnnx.bounds import BoundComputer
from vnnx.cli import custom_ops_for, relaxations_for
from vnnx.engine import ChainBounds
from vnnx.errors import VnnxError
from vnnx.executor import add_executor_flags, executor_spec
from vnnx.io.vnnlib import read_vnnlib, read_instances_csv, robustness_property
from vnnx.verify import refuted_clauses

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
OUT = ROOT / "out" / "bench_capm"
#: graph engine: ibp, capm-* (CAPM's relaxation), graph-* (the engine's own MaxPool);
#: auto_LiRPA cross-checks: lirpa-capm-crown (CAPM's operator), lirpa-crown (its own MaxPool).
METHODS = ("ibp", "capm-crown", "capm-alpha", "graph-crown", "graph-alpha", "lirpa-capm-crown", "lirpa-crown")
ALPHA_ITERATIONS = 20


class Engines:
    """Bound engines of one network: the graph engine with CAPM's and with its own MaxPool
    relaxation, and the auto_LiRPA cross-checks."""

    def __init__(self, net, alpha_iterations: int = ALPHA_ITERATIONS):
        self.net = net
        self.capm = ChainBounds(net, relaxations_for("capm"), alpha_iterations=alpha_iterations)
        self.graph = ChainBounds(net, alpha_iterations=alpha_iterations)
        self.lirpa_capm = _lirpa(net, custom_ops_for("capm"))
        self.lirpa = _lirpa(net, custom_ops_for("lirpa"))

    def run(self, method: str, prop) -> tuple[str, float]:
        """('verified' | 'unknown' | 'error', seconds) for one property (all clauses refuted)."""
        A = np.concatenate([a for a, _ in prop.clauses])
        family, bound = method.rsplit("-", 1) if "-" in method else ("capm", method)
        engine = {"capm": self.capm, "graph": self.graph, "lirpa-capm": self.lirpa_capm,
                  "lirpa": self.lirpa}[family]
        if engine is None:
            return "error", 0.0
        t0 = time.perf_counter()
        try:
            res = engine.compute(prop.x_lower, prop.x_upper, {"alpha": "alpha-crown"}.get(bound, bound), C=A)
        except VnnxError:
            return "error", time.perf_counter() - t0
        ok = all(refuted_clauses(res.lower, prop.clauses))
        return ("verified" if ok else "unknown"), time.perf_counter() - t0


def _lirpa(net, custom_ops):
    """auto_LiRPA's engine (a cross-check only), or None where it cannot build the network."""
    try:
        return BoundComputer(net, custom_ops)
    except VnnxError:
        return None


def milp_status(net, prop, time_limit: float) -> tuple[str, float]:
    from vnnx.milp import verify_milp

    t0 = time.perf_counter()
    r = verify_milp(net, prop, time_limit=time_limit)
    return {"unsat": "verified", "sat": "falsified"}.get(r.status, r.status), time.perf_counter() - t0


def evaluate(name: str, eng: Engines, props: list, rows: list, eps: float, milp_limit: float = 0.0,
             skip: tuple = ()):
    """Every method on every property; an α method only where its CROWN left the property open."""
    for i, prop in enumerate(props):
        res = {}
        for m in METHODS:
            if m in skip:
                continue
            crown = res.get(m.replace("alpha", "crown"), ("",))[0]
            if m.endswith("alpha") and crown == "verified":
                res[m] = ("verified", float("nan"))     # α-CROWN starts from CROWN: not run
                continue
            if m.endswith("alpha") and crown == "error":
                res[m] = ("error", 0.0)
                continue
            res[m] = eng.run(m, prop)
        if milp_limit:
            res["milp"] = milp_status(eng.net, prop, milp_limit)
        for m, (status, sec) in res.items():
            rows.append({"net": name, "eps": eps, "instance": i, "method": m, "status": status, "seconds": sec})


def trained_units(quick: bool, channels=(4, 8), hidden: int = 50, time_limit: float = 40) -> list[tuple]:
    """MNIST maxpool CNNs (2x2/2 pooling, and overlapping 3x3/2), normal and PGD, as executor units
    ``(key, _train_task, args)`` (each returns (name, model, accuracy, seconds)); the default widths
    are convSmall-like at CPU scale, ``--channels 16,32 --hidden 100`` is convMed-like."""
    tag = "" if tuple(channels) == (4, 8) and hidden == 50 else f"-c{'x'.join(map(str, channels))}"
    return [(f"bench_capm:train:{shape}{tag}-{mode}", _train_task,
             (shape, f"{shape}{tag}-{mode}", mode, tuple(channels), hidden, 15 if quick else time_limit))
            for shape in ("mp2x2", "mp3x3s2") for mode in ("normal", "pgd")]


def _train_task(shape: str, name: str, mode: str, channels: tuple, hidden: int, time_limit: float):
    """One training (a task: its seed comes from the task key)."""
    from vnnx.architectures import conv_maxpool, conv_maxpool_overlap
    from vnnx.data import mnist_split
    from vnnx.training import accuracy, train

    torch.set_num_threads(1)
    train_set, _ = mnist_split(SHARED / "data" / "mnist")
    x, y = train_set.x[:6000], train_set.y[:6000]
    build = {"mp2x2": conv_maxpool, "mp3x3s2": conv_maxpool_overlap}[shape]
    model = build(channels=tuple(channels), hidden=hidden)
    attack = None
    if mode == "pgd":
        attack = _pgd4
    t0 = time.perf_counter()
    train(model, x, y, epochs=3, batch_size=64, lr=2e-3, attack=attack,
          epsilon=(lambda ep, fr: 0.05) if attack else None, progress=False, time_limit=time_limit)
    acc = accuracy(model, train_set.x[6000:7000], train_set.y[6000:7000])
    return name, model.eval(), acc, time.perf_counter() - t0


def _pgd4(m, xb, yb, e):
    from vnnx.attack import pgd_linf

    return pgd_linf(m, xb, yb, e, steps=4)


def _eval_task(name: str, net, props: list, eps: float, skip: tuple = (), milp_subset: int = 0) -> list[dict]:
    """One (network, ε) evaluation (a task): every method on ``props``, then the exact MILP on the
    first ``milp_subset`` of them; its results rows."""
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rows: list[dict] = []
    evaluate(name, Engines(net), props, rows, eps, skip=skip)
    for i, p in enumerate(props[:milp_subset]):
        status, sec = milp_status(net, p, 30.0)
        rows.append({"net": name, "eps": eps, "instance": i, "method": "milp", "status": status, "seconds": sec})
    return rows


def _verivital_task(instances: list) -> list[dict]:
    """verivital (a task): ``vnnx verify`` on every instance, then every method on their specs."""
    from vnnx.io.onnx import load_onnx, to_network
    from vnnx.verify import Verifier

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    rows: list[dict] = []
    model = load_onnx(instances[0][0])
    eng = Engines(to_network(model))
    verifier = Verifier(model, relaxations=relaxations_for("capm"))
    props = []
    for onnx_path, spec_path, timeout in instances:
        spec = read_vnnlib(spec_path, eng.net.n_inputs)
        props.append(spec.properties[0])
        t0 = time.perf_counter()
        res = verifier.verify(spec, "auto", timeout=timeout)
        rows.append({"net": "verivital", "eps": 0.004, "instance": len(props) - 1, "method": "vnnx-verify",
                     "status": res.verdict, "decided_by": res.decided_by, "seconds": time.perf_counter() - t0})
    evaluate("verivital", eng, props, rows, 0.004)
    return rows


def torch_to_network(model):
    import tempfile

    from vnnx.io.onnx import export_onnx, load_onnx, to_network

    with tempfile.TemporaryDirectory() as d:
        export_onnx(model, (1, 1, 28, 28), Path(d) / "m.onnx")
        return to_network(load_onnx(Path(d) / "m.onnx"))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--summarise-only", action="store_true", help="rebuild table and PNG from results.csv")
    ap.add_argument("--channels", default="4,8", help="conv widths of the trained nets (default 4,8)")
    ap.add_argument("--hidden", type=int, default=50, help="FC width of the trained nets (default 50)")
    ap.add_argument("--train-seconds", type=float, default=40, help="training time limit per net (default 40)")
    ap.add_argument("--trained-only", action="store_true", help="skip verivital and ERAN convSmall")
    ap.add_argument("--eps", default=None, help="comma-separated ε list for the trained nets")
    ap.add_argument("--out", default=None, help="output folder (default out/bench_capm)")
    ap.add_argument("--skip", default="", help="comma-separated methods not to run (e.g. lirpa-capm-crown)")
    add_executor_flags(ap)
    args = ap.parse_args(argv)
    global OUT
    if args.out:
        OUT = Path(args.out)
    if args.summarise_only:
        with open(OUT / "results.csv") as f:
            rows = [dict(r, eps=float(r["eps"]), instance=int(r["instance"]), seconds=float(r["seconds"]))
                    for r in csv.DictReader(f)]
        plot(rows, OUT / "time_vs_eps.png")
        print(summarise(rows, {}))
        return
    spec = executor_spec(args)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    from vnnx.data import load_eran_csv
    from vnnx.io.onnx import load_onnx, to_network

    OUT.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    info: dict[str, str] = {}
    t_start = time.perf_counter()

    eps_list = [0.01, 0.04] if args.quick else [0.01, 0.02, 0.04, 0.07]
    trained_eps = [float(e) for e in args.eps.split(",")] if args.eps else eps_list
    channels = tuple(int(c) for c in args.channels.split(","))
    units = []    # phase 1: verivital and ERAN evaluations, and the trainings
    if not args.trained_only:
        # --- verivital: the VNN-COMP instances (ε = 0.004 in the specs) and `vnnx verify` --------
        vv = SHARED / "benchmarks" / "verivital"
        instances = read_instances_csv(vv / "verivital_instances.csv")[: (4 if args.quick else None)]
        units.append(("bench_capm:verivital", _verivital_task, (list(instances),)))
        # --- ERAN convSmall (no MaxPool): control ---------------------------------------------
        x_eran, y_eran = load_eran_csv(SHARED / "data" / "mnist" / "eran_mnist_test_first100.csv")
        control = to_network(load_onnx(SHARED / "networks" / "eran-mnist" / "convSmallRELU__Point.onnx"))
        x_eran = x_eran.reshape(len(x_eran), -1)
        keep = [i for i in range(len(x_eran))
                if int(np.argmax(control.forward(((x_eran[i] - 0.1307) / 0.3081)[None]))) == int(y_eran[i])]
        keep = keep[: args.images]
        for eps in eps_list:
            props = []
            for i in keep:
                p = robustness_property(x_eran[i], eps, int(y_eran[i]), 10)     # box in pixel space, clipped
                p.x_lower, p.x_upper = (p.x_lower - 0.1307) / 0.3081, (p.x_upper - 0.1307) / 0.3081
                props.append(p)
            units.append((f"bench_capm:eran-convSmall:{eps:g}", _eval_task, ("eran-convSmall", control, props, eps)))
    n_eval = len(units)
    units += trained_units(args.quick, channels, args.hidden, args.train_seconds)
    trained = []
    for k, value in enumerate(ordered_units(units, spec, desc="bench_capm")):
        if k < n_eval:
            rows += value
            if k == 0 and not args.trained_only:
                print(f"verivital done {time.perf_counter() - t_start:.0f}s", flush=True)
            elif k == n_eval - 1:
                print(f"eran done {time.perf_counter() - t_start:.0f}s", flush=True)
        else:
            name, model, acc, seconds = value
            print(f"trained {name}: {seconds:.0f}s, held-out accuracy {acc:.3f}", flush=True)
            trained.append((name, model, acc))
    _trained_part(args, rows, info, trained, trained_eps, t_start, spec)
    _finish(rows, info, t_start)


def _trained_part(args, rows: list, info: dict, trained: list, eps_list, t_start: float, spec=None) -> None:
    """The self-trained maxpool CNNs: one task per (network, ε)."""
    from vnnx.data import mnist_split

    _, test = mnist_split(SHARED / "data" / "mnist")
    tx, ty = test.x.reshape(len(test.x), -1), test.y
    skip = tuple(m for m in args.skip.split(",") if m)
    units, last = [], {}
    for name, model, acc in trained:
        info[name] = f"held-out accuracy {acc:.3f}"
        net = torch_to_network(model)
        keep = [i for i in range(200) if int(np.argmax(net.forward(tx[i][None]))) == int(ty[i])][: args.images]
        for k, eps in enumerate(eps_list):
            props = [robustness_property(tx[i], eps, int(ty[i]), 10) for i in keep]
            # the exact MILP (reference) on a subset
            milp = 3 if name.startswith("mp2x2") and name.endswith("-normal") and k < 2 else 0
            units.append((f"bench_capm:{name}:{eps:g}", _eval_task, (name, net, props, eps, skip, milp)))
            last[len(units) - 1] = name if k == len(eps_list) - 1 else None
    for k, value in enumerate(ordered_units(units, spec, desc="bench_capm")):
        rows += value
        if last.get(k):
            print(f"{last[k]} done {time.perf_counter() - t_start:.0f}s", flush=True)


def _finish(rows: list, info: dict, t_start: float) -> None:
    with open(OUT / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["net", "eps", "instance", "method", "status", "seconds", "decided_by"])
        w.writeheader()
        w.writerows(rows)
    summary = summarise(rows, info)
    plot(rows, OUT / "time_vs_eps.png")
    total = time.perf_counter() - t_start
    text = (f"Run {time.strftime('%Y-%m-%d')} on a 2-core CPU container, no GPU; other jobs running in parallel. "
            f"Total wall time {total / 60:.1f} min. `{len(rows)}` rows in {OUT}/results.csv.\n\n" + summary)
    print(text)
    (OUT / "summary.md").write_text(text)


def summarise(rows: list[dict], info: dict) -> str:
    """Markdown: per net and ε, verified % and mean seconds per image for each method."""
    nets = list(dict.fromkeys(r["net"] for r in rows))
    methods = list(METHODS) + ["milp", "vnnx-verify"]
    lines = ["| net | ε | n | " + " | ".join(methods) + " |", "|---|---|---|" + "---|" * len(methods)]
    for net in nets:
        for eps in sorted({r["eps"] for r in rows if r["net"] == net}):
            cells = []
            n = len({r["instance"] for r in rows if r["net"] == net and r["eps"] == eps and r["method"] == "ibp"})
            for m in methods:
                sel = [r for r in rows if r["net"] == net and r["eps"] == eps and r["method"] == m]
                if not sel:
                    cells.append("–")
                    continue
                if all(r["status"] == "error" for r in sel):
                    cells.append("fails")
                    continue
                ver = sum(r["status"] in ("verified", "unsat") for r in sel)
                secs = [r["seconds"] for r in sel if r["seconds"] == r["seconds"]]
                t = f"{np.mean(secs):.2f}s" if secs else "(CROWN)"
                skipped = sum(r["status"] == "not-run" for r in sel)
                crashed = sum(r["status"] == "error" for r in sel)
                note = (f", {skipped} not run" if skipped else "") + (f", {crashed} crashed" if crashed else "")
                if m == "milp":
                    cells.append(f"{ver}/{len(sel)} {t}")
                else:
                    cells.append(f"{100 * ver / len(sel):.0f}%{note} {t}")
            lines.append(f"| {net} | {eps:g} | {n} | " + " | ".join(cells) + " |")
    extra = "\n".join(f"- {k}: {v}" for k, v in info.items())
    return "\n".join(lines) + ("\n\n" + extra if extra else "") + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    nets = [n for n in dict.fromkeys(r["net"] for r in rows) if n != "verivital"]
    colours = dict(zip(nets, plt.get_cmap("tab10").colors))
    styles = {"capm-crown": ("-", "^"), "graph-crown": ("--", "o"), "lirpa-capm-crown": (":", "s"),
              "ibp": ("-.", "x")}
    for net in nets:
        pts = sorted({r["eps"] for r in rows if r["net"] == net})
        for m, (line, marker) in styles.items():
            ys = []
            for e in pts:
                s = [r["seconds"] for r in rows if r["net"] == net and r["eps"] == e and r["method"] == m
                     and r["status"] not in ("error", "not-run") and r["seconds"] == r["seconds"]]
                ys.append(np.mean(s) if s else np.nan)
            if not np.all(np.isnan(ys)):
                ax.plot(pts, ys, linestyle=line, marker=marker, color=colours[net], alpha=0.85)
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colours[n], label=n) for n in nets]
    handles += [Line2D([], [], color="k", linestyle=line, marker=marker, label=m) for m, (line, marker) in styles.items()]
    ax.legend(handles=handles, fontsize=7, ncol=2)
    ax.set_xlabel("ε (pixel space)")
    ax.set_ylabel("seconds per image")
    ax.set_yscale("log")
    ax.set_title("Bound computation time per image vs ε (1 CPU thread)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    from _sweep import cli

    raise SystemExit(cli(main, "bench_capm"))
