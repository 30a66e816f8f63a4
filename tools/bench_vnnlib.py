"""Parse time of vnnx's VNN-LIB reader against the reader it replaced (vnnlib.compat of PyPI
vnnlib 0.0.1.post1), whose times tools/make_vnnlib_fixtures.py saved in
tests/fixtures/vnnlib_parse/ (the two packages cannot share one environment, so the old times are
fixtures). Prints, per benchmark folder, the total best-of-``--repeat`` parse time of each and
the ratio new/old (< 1: faster), and the same for the largest file.

Usage::

    PYTHONPATH=. python tools/bench_vnnlib.py [--bench ../shared/benchmarks] [--repeat 5]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "vnnlib_parse"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=ROOT.parent / "shared" / "benchmarks")
    parser.add_argument("--repeat", type=int, default=5, help="best of this many parses per file")
    args = parser.parse_args()

    from vnnx.io.vnnlib import read_vnnlib

    all_old = all_new = 0.0
    print(f"{'folder':26s} {'files':>5s} {'lines':>7s} {'old s':>8s} {'new s':>8s} {'new/old':>8s}")
    for fixture in sorted(FIXTURES.glob("*.npz")):
        data = np.load(fixture)
        old = new = 0.0
        lines = 0
        for j, rel in enumerate(data["paths"]):
            n_in, n_out = (int(v) for v in data["sizes"][j][:2])
            path = args.bench / str(rel)
            lines += path.read_bytes().count(b"\n")
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                read_vnnlib(path, None if n_in < 0 else n_in, None if n_out < 0 else n_out)
                best = min(best, time.perf_counter() - t0)
            new += best
            old += float(data["times"][j])
        all_old, all_new = all_old + old, all_new + new
        print(f"{fixture.stem:26s} {len(data['paths']):5d} {lines:7d} {old:8.4f} {new:8.4f} "
              f"{new / old:8.2f}")
    print(f"{'all':26s} {'':5s} {'':7s} {all_old:8.4f} {all_new:8.4f} {all_new / all_old:8.2f}")
    print(f"(old times: {str(np.load(next(FIXTURES.glob('*.npz')))['made'])})")


if __name__ == "__main__":
    main()
