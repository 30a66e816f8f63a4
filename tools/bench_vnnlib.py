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
    parser.add_argument("--synthetic", type=int, default=20000,
                        help="also time a written robustness spec with this many inputs, 1.0 and "
                             "2.0 (about 3 lines per input; 0: skip)")
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
    if args.synthetic:
        import tempfile

        from vnnx.io.vnnlib import write_robustness_spec

        x = np.random.default_rng(0).random(args.synthetic)
        with tempfile.TemporaryDirectory() as tmp:
            for version in ("1.0", "2.0"):
                path = Path(tmp) / f"big_{version}.vnnlib"
                write_robustness_spec(path, x, 0.01, 3, 10, version=version)
                best = float("inf")
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    read_vnnlib(path, args.synthetic, 10)
                    best = min(best, time.perf_counter() - t0)
                lines = path.read_bytes().count(b"\n")
                print(f"synthetic {version}: {args.synthetic} inputs, {lines} lines, {best:.3f} s "
                      f"({best / lines * 1e6:.1f} us/line)")


if __name__ == "__main__":
    main()
