"""One network's CROWN time, this checkout's graph engine against an engine of an earlier commit.

Speed targets compare engines "in the same run", but a deleted engine (CAPM's whole-network sparse
CROWN, ``SparseCapmCrown``, last present at commit ``08be818^``) can only run from its own tree.
This tool checks that commit out into a temporary git worktree and times both engines in
alternating subprocesses (old, new, old, new, ...), each the best of ``--repeats`` calls after one
warm-up, through each tree's own ``tools/bench_engine.py`` (``engines_for`` and ``spec_rows``).
Alternating pairs cancel most of a shared machine's drift; the median of the pairs' ratios is
printed (new / old, < 1: this checkout is faster).

Run:  .venv/bin/python tools/bench_engine_ab.py [--old 08be818^] [--old-engine sparse]
          [--network capm_overlap_case | --onnx F --vnnlib G] [--pairs 8] [--repeats 20] [--json out/ab.json]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "benchmarks"

# Run inside a tree: time one engine of its bench_engine on one (onnx, vnnlib), print seconds.
CHILD = """
import sys, time, warnings
root, engine, onnx, spec, repeats = sys.argv[1:6]
sys.path[:0] = [root, root + "/tools"]
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from pathlib import Path
import bench_engine as be
lo, hi, C = be.spec_rows(Path(onnx), Path(spec))
fn = be.engines_for(Path(onnx), only=engine)[engine]
fn(lo, hi, C)
best = float("inf")
for _ in range(int(repeats)):
    t0 = time.perf_counter()
    fn(lo, hi, C)
    best = min(best, time.perf_counter() - t0)
print(best)
"""


def time_engine(tree: Path, engine: str, onnx: Path, spec: Path, repeats: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", CHILD, str(tree), engine, str(onnx), str(spec), str(repeats)],
                         capture_output=True, text=True, env=env, cwd=tree)
    if out.returncode != 0:
        raise SystemExit(f"{engine} in {tree} failed: {out.stderr.strip().splitlines()[-1:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", default="08be818^", help="the earlier commit (default: the last with SparseCapmCrown)")
    ap.add_argument("--old-engine", default="sparse", help="engine name in that commit's bench_engine.py")
    ap.add_argument("--network", default="capm_overlap_case",
                    help="folder of ../shared/benchmarks holding one .onnx and one .vnnlib")
    ap.add_argument("--onnx", help="this network instead (with --vnnlib)")
    ap.add_argument("--vnnlib", help="this spec instead (with --onnx)")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", help="write the pairs, the median ratio and the machine here")
    args = ap.parse_args()
    if args.onnx or args.vnnlib:
        if not (args.onnx and args.vnnlib):
            raise SystemExit("--onnx and --vnnlib go together")
        onnx, spec = [Path(args.onnx).resolve()], [Path(args.vnnlib).resolve()]
        args.network = onnx[0].name
    else:
        folder = SHARED / args.network
        onnx, spec = sorted(folder.glob("*.onnx")), sorted(folder.glob("*.vnnlib"))
        if len(onnx) != 1 or len(spec) != 1:
            raise SystemExit(f"{folder}: need exactly one .onnx and one .vnnlib (or give --onnx and --vnnlib)")
    for f in onnx + spec:
        if not f.exists():
            raise SystemExit(f"{f}: no such file")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vnnx_ab_") as tmp:
        old_tree = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(old_tree), args.old],
                       check=True)
        try:
            (old_tree / "vnnx_plugins").symlink_to("plugins")    # the package name setup.cfg maps
            pairs = []
            print(f"{'pair':>4s} {'old s':>8s} {'new s':>8s} {'ratio':>6s}")
            for i in range(args.pairs):
                old = time_engine(old_tree, args.old_engine, onnx[0], spec[0], args.repeats)
                new = time_engine(ROOT, "graph", onnx[0], spec[0], args.repeats)
                pairs.append((old, new))
                print(f"{i:4d} {old:8.4f} {new:8.4f} {new / old:6.2f}", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False)
    ratios = [n / o for o, n in pairs]
    median = statistics.median(ratios)
    print(f"median ratio new/old: {median:.3f} (min {min(ratios):.3f}, max {max(ratios):.3f}; "
          f"new faster in {sum(r < 1 for r in ratios)} of {len(ratios)} pairs)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "date": dt.date.today().isoformat(), "machine": platform.platform(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "old": args.old, "old_engine": args.old_engine,
            "network": args.network, "repeats": args.repeats, "pairs": pairs, "median_ratio": median}, indent=1))


if __name__ == "__main__":
    main()
