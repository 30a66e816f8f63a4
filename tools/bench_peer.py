"""vnnx against a peer verifier on the same instances: solved counts, time ratios, disagreements,
and a cactus plot, as the VNN-COMP reports draw them.

Inputs are results tables, so that each tool runs in its own environment (the peer never becomes a
dependency of vnnx):

* ``--ours``: a ``vnnx bench`` results CSV (``onnx,vnnlib,verdict,seconds,...``) or a VNN-COMP
  results CSV;
* ``--peer``: a VNN-COMP results CSV, one row per instance:
  ``benchmark,onnx,vnnlib,prepare_seconds,result,run_seconds`` (``result``: sat, unsat, timeout,
  unknown or error; a header row is optional). NeuralSAT and α,β-CROWN runs are turned into this
  form by their own VNN-COMP scripts.

Instances are matched by (network file name, spec file name) (their folders differ between
machines). The category is the ``benchmark`` column where there is one, else the network's folder.
An instance counts as solved when its result is sat or unsat *within its timeout* (the instances
CSV's third column, when ``--instances`` is given). A **disagreement** is sat against unsat on the
same instance: at least one tool is wrong, and the row says which witness to check.

Outputs (``--out-dir``): ``peer_comparison.csv`` (one row per instance, both tools), ``cactus.png``
(instances solved against time per tool) and a summary printed and written as JSON.

Run:  .venv/bin/python tools/bench_peer.py --ours out/bench/mnistfc-256x2.csv \\
          --peer out/neuralsat/results.csv --peer-name NeuralSAT --out-dir out/peer
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

RESULTS = ("sat", "unsat", "timeout", "unknown", "error")
# Other spellings found in results files, mapped to the VNN-COMP words.
ALIASES = {"holds": "unsat", "violated": "sat", "safe": "unsat", "unsafe": "sat", "": "error"}


class PeerError(Exception):
    """A results table that cannot be read: one line, naming the file and row."""


@dataclass
class Row:
    category: str
    onnx: str
    vnnlib: str
    result: str
    seconds: float

    @property
    def key(self) -> tuple[str, str]:
        return instance_key(self.onnx, self.vnnlib)


def instance_key(onnx: str, vnnlib: str) -> tuple[str, str]:
    """(network file name, spec file name), compressed suffixes dropped."""
    def name(p: str) -> str:
        n = Path(p.strip()).name
        return n[:-3] if n.endswith(".gz") else n
    return name(onnx), name(vnnlib)


def _result(value: str, where: str) -> str:
    v = value.strip().lower()
    v = ALIASES.get(v, v)
    if v not in RESULTS:
        raise PeerError(f"{where}: unknown result {value!r} (expected one of {', '.join(RESULTS)})")
    return v


def _seconds(value: str, where: str) -> float:
    try:
        s = float(value)
    except ValueError:
        raise PeerError(f"{where}: run time {value!r} is not a number") from None
    if not math.isfinite(s) or s < 0:
        raise PeerError(f"{where}: run time {value!r} is not a finite number >= 0")
    return s


def read_results(path: Path) -> list[Row]:
    """Rows of a vnnx bench CSV or a VNN-COMP results CSV (detected by the header / width)."""
    path = Path(path)
    if not path.is_file():
        raise PeerError(f"{path}: results file not found")
    with path.open(newline="") as fh:
        lines = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
    if not lines:
        raise PeerError(f"{path}: no rows")
    head = [c.strip().lower() for c in lines[0]]
    rows = []
    if "verdict" in head:                                   # vnnx bench
        col = {c: i for i, c in enumerate(head)}
        for n, r in enumerate(lines[1:], 2):
            where = f"{path}, row {n}"
            try:
                onnx, spec = r[col["onnx"]], r[col["vnnlib"]]
                rows.append(Row(Path(onnx).parent.name, onnx, spec, _result(r[col["verdict"]], where),
                                _seconds(r[col["seconds"]], where)))
            except (IndexError, KeyError):
                raise PeerError(f"{where}: expected the columns {', '.join(head)}") from None
        return rows
    body = lines[1:] if head[:1] == ["benchmark"] else lines
    for n, r in enumerate(body, 2 if body is not lines else 1):
        where = f"{path}, row {n}"
        if len(r) < 6:
            raise PeerError(f"{where}: expected benchmark,onnx,vnnlib,prepare_seconds,result,run_seconds")
        rows.append(Row(r[0].strip(), r[1], r[2], _result(r[4], where), _seconds(r[5], where)))
    return rows


def read_timeouts(path: Optional[Path]) -> dict:
    """(network, spec) -> timeout seconds, from a VNN-COMP instances.csv (onnx, vnnlib, timeout)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise PeerError(f"{path}: instances file not found")
    out = {}
    with path.open(newline="") as fh:
        for n, r in enumerate(csv.reader(fh), 1):
            if not r or r[0].startswith("#"):
                continue
            if len(r) < 3:
                raise PeerError(f"{path}, row {n}: expected onnx,vnnlib,timeout")
            out[instance_key(r[0], r[1])] = _seconds(r[2], f"{path}, row {n}")
    return out


def compare(ours: list[Row], peer: list[Row], timeouts: Optional[dict] = None,
            names: tuple[str, str] = ("vnnx", "peer")) -> dict:
    """The comparison on the instances both tables list (see the module docstring)."""
    timeouts = timeouts or {}
    a = {r.key: r for r in ours}
    b = {r.key: r for r in peer}
    if len(a) != len(ours) or len(b) != len(peer):
        raise PeerError("a results table lists an instance twice")
    common = sorted(set(a) & set(b))
    if not common:
        raise PeerError("the two tables share no instance (matched by network and spec file names)")

    def solved(r: Row) -> bool:
        limit = timeouts.get(r.key)
        return r.result in ("sat", "unsat") and (limit is None or r.seconds <= limit)

    rows, per_cat, ratios, disagree = [], {}, [], []
    cactus = {n: [] for n in names}
    for k in common:
        x, y = a[k], b[k]
        cat = y.category or x.category
        sx, sy = solved(x), solved(y)
        c = per_cat.setdefault(cat, {"instances": 0, names[0]: 0, names[1]: 0, "both": 0})
        c["instances"] += 1
        c[names[0]] += sx
        c[names[1]] += sy
        c["both"] += sx and sy
        for n, r, ok in ((names[0], x, sx), (names[1], y, sy)):
            if ok:
                cactus[n].append(r.seconds)
        if sx and sy:
            ratios.append(max(x.seconds, 1e-3) / max(y.seconds, 1e-3))
        if {x.result, y.result} == {"sat", "unsat"}:
            disagree.append({"onnx": k[0], "vnnlib": k[1], names[0]: x.result, names[1]: y.result})
        rows.append({"category": cat, "onnx": k[0], "vnnlib": k[1],
                     f"{names[0]}_result": x.result, f"{names[0]}_seconds": x.seconds,
                     f"{names[1]}_result": y.result, f"{names[1]}_seconds": y.seconds})
    total = {n: sum(c[n] for c in per_cat.values()) for n in names}
    return {
        "tools": list(names), "instances": len(common),
        "only_in": {names[0]: len(set(a) - set(b)), names[1]: len(set(b) - set(a))},
        "solved": total, "per_category": per_cat,
        "both_solved": len(ratios),
        # ours / peer on the instances both solved: < 1 means vnnx was faster
        "time_ratio_median": statistics.median(ratios) if ratios else None,
        "time_ratio_geomean": math.exp(statistics.fmean(math.log(r) for r in ratios)) if ratios else None,
        "disagreements": disagree, "rows": rows,
        "cactus": {n: sorted(t) for n, t in cactus.items()},
    }


def cactus_plot(summary: dict, path: Path) -> None:
    """Instances solved (x) against the time needed for each (y, log), one line per tool."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, times in summary["cactus"].items():
        ax.step(range(1, len(times) + 1), times, where="post", label=f"{name} ({len(times)} solved)")
    ax.set_yscale("log")
    ax.set_xlabel("instances solved")
    ax.set_ylabel("run time of the slowest of them (s)")
    ax.set_title(f"{summary['instances']} common instances")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", required=True, nargs="+", help="vnnx results CSV(s) (vnnx bench or VNN-COMP form)")
    ap.add_argument("--peer", required=True, nargs="+", help="peer results CSV(s), VNN-COMP form")
    ap.add_argument("--peer-name", default="peer")
    ap.add_argument("--instances", nargs="*", default=[], help="instances.csv files: solved means within their timeout")
    ap.add_argument("--out-dir", required=True)
    args = ap.parse_args(argv)
    try:
        out = Path(args.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ours = [r for p in args.ours for r in read_results(Path(p))]
        peer = [r for p in args.peer for r in read_results(Path(p))]
        timeouts = {}
        for p in args.instances:
            timeouts.update(read_timeouts(Path(p)))
        s = compare(ours, peer, timeouts, ("vnnx", args.peer_name))
    except (PeerError, OSError) as exc:
        print(f"bench_peer: {exc}", file=sys.stderr)
        return 2
    with (out / "peer_comparison.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(s["rows"][0]))
        w.writeheader()
        w.writerows(s["rows"])
    cactus_plot(s, out / "cactus.png")
    summary = {k: v for k, v in s.items() if k not in ("rows", "cactus")}
    (out / "peer_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    names = s["tools"]
    print(f"{'category':28s} {'instances':>9s} {names[0]:>9s} {names[1]:>9s} {'both':>5s}")
    for cat, c in sorted(s["per_category"].items()):
        print(f"{cat:28s} {c['instances']:9d} {c[names[0]]:9d} {c[names[1]]:9d} {c['both']:5d}")
    print(f"{'all':28s} {s['instances']:9d} {s['solved'][names[0]]:9d} {s['solved'][names[1]]:9d} {s['both_solved']:5d}")
    if s["time_ratio_median"] is not None:
        print(f"time {names[0]} / {names[1]} on the {s['both_solved']} both solved: median "
              f"{s['time_ratio_median']:.2f}, geometric mean {s['time_ratio_geomean']:.2f}")
    print(f"disagreements (sat against unsat): {len(s['disagreements'])}")
    for d in s["disagreements"]:
        print(f"  {d['onnx']} {d['vnnlib']}: {names[0]} {d[names[0]]}, {names[1]} {d[names[1]]}")
    print(f"results: {out / 'peer_comparison.csv'}, {out / 'cactus.png'}, {out / 'peer_summary.json'}")
    return 1 if s["disagreements"] else 0


if __name__ == "__main__":
    sys.exit(main())
