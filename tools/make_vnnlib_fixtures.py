"""Save how ``read_vnnlib`` parses every VNN-LIB 1.0 spec in ``../shared/benchmarks`` today.

For each benchmark folder, ``tests/fixtures/vnnlib_parse/<folder>.npz`` holds, per spec file:
its path (relative to the benchmarks folder), the network sizes it was read with (from the
instances csv's ONNX model; -1 when no csv pairs it with a network), the parse time (the best of
``--repeat`` runs, seconds, file read included) and every property's box and clauses, exactly.

These fixtures pin the parse of the reader that was replaced (``vnnlib.compat`` of PyPI vnnlib
0.0.1.post1) so that vnnx's own reader is compared against it now that the old package is gone
(it cannot share one environment with PyPI vnnlib >= 1, which reads VNN-LIB 2.0). The committed
fixtures were made at commit 752a89a, whose ``read_vnnlib`` still used that package; run at a
later commit, this script records the parse of the current reader instead (the stamp saved in each
file says which: ``reader vnnlib <version>`` or ``reader vnnx``).

Usage::

    PYTHONPATH=. python tools/make_vnnlib_fixtures.py [--bench ../shared/benchmarks] [--repeat 3]
"""
from __future__ import annotations

import argparse
import datetime
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "vnnlib_parse"


def onnx_sizes(path: Path) -> tuple[int, int]:
    """Flattened sizes of the first (non-initializer) input and the first output."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]

    def size(value_info) -> int:
        # A symbolic (batch) dimension has dim_value 0; VNN-COMP networks run with batch 1.
        return int(np.prod([max(d.dim_value, 1) for d in value_info.type.tensor_type.shape.dim]))

    return size(inputs[0]), size(model.graph.output[0])


def is_version_2(path: Path) -> bool:
    import gzip
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    return b"vnnlib-version <2" in raw


def spec_sizes(folder: Path) -> dict[Path, tuple[int, int]]:
    """Each spec's network sizes from the folder's instances csv files (1.0 form only)."""
    from vnnx.io.vnnlib import read_instances_csv

    sizes: dict[Path, tuple[int, int]] = {}
    cache: dict[Path, tuple[int, int]] = {}
    for csv in sorted(folder.glob("*.csv")):
        try:
            rows = read_instances_csv(csv)
        except Exception:  # noqa: BLE001 - the 2026 multi-network csv form is not 1.0
            continue
        for onnx_path, spec_path, _ in rows:
            if not onnx_path.is_file():
                continue
            if onnx_path not in cache:
                cache[onnx_path] = onnx_sizes(onnx_path)
            sizes[spec_path.resolve()] = cache[onnx_path]
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", type=Path, default=ROOT.parent / "shared" / "benchmarks",
                        help="benchmarks folder (default: ../shared/benchmarks)")
    parser.add_argument("--repeat", type=int, default=3, help="parse each file this many times")
    parser.add_argument("--out", type=Path, default=OUT, help="fixture folder")
    args = parser.parse_args()

    import inspect

    from vnnx.io import vnnlib as vnnx_vnnlib
    from vnnx.io.vnnlib import read_vnnlib

    if "vnnlib.compat" in inspect.getsource(vnnx_vnnlib.read_vnnlib):
        import vnnlib
        reader = f"reader vnnlib {getattr(vnnlib, '__version__', '?')}"
    else:
        reader = "reader vnnx"

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = (f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
             f"{platform.node()}, {platform.processor() or platform.machine()}, "
             f"python {platform.python_version()}, {reader}")
    total = 0
    for folder in sorted(p for p in args.bench.iterdir() if p.is_dir()):
        specs = sorted(folder.rglob("*.vnnlib")) + sorted(folder.rglob("*.vnnlib.gz"))
        specs = [p for p in specs if not is_version_2(p)]
        if not specs:
            continue
        sizes = spec_sizes(folder)
        arrays: dict[str, np.ndarray] = {}
        paths, dims, times, n_props = [], [], [], []
        for j, spec_path in enumerate(specs):
            n_in, n_out = sizes.get(spec_path.resolve(), (None, None))
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                spec = read_vnnlib(spec_path, n_in, n_out)
                best = min(best, time.perf_counter() - t0)
            paths.append(str(spec_path.relative_to(args.bench)))
            dims.append((-1 if n_in is None else n_in, -1 if n_out is None else n_out,
                         spec.n_inputs, spec.n_outputs))
            times.append(best)
            n_props.append(len(spec.properties))
            for p, prop in enumerate(spec.properties):
                arrays[f"s{j}_p{p}_lower"] = prop.x_lower
                arrays[f"s{j}_p{p}_upper"] = prop.x_upper
                arrays[f"s{j}_p{p}_nclauses"] = np.array(len(prop.clauses))
                for c, (a, b) in enumerate(prop.clauses):
                    arrays[f"s{j}_p{p}_c{c}_A"] = a
                    arrays[f"s{j}_p{p}_c{c}_b"] = b
        target = args.out / f"{folder.name}.npz"
        np.savez_compressed(target, paths=np.array(paths), sizes=np.array(dims),
                            times=np.array(times), n_props=np.array(n_props),
                            made=np.array(stamp), **arrays)
        total += target.stat().st_size
        print(f"{folder.name}: {len(specs)} specs, parse {sum(times):.3f} s in all, "
              f"{target.stat().st_size / 1024:.0f} KiB")
    print(f"fixtures: {total / 1024:.0f} KiB in {args.out} ({stamp})")


if __name__ == "__main__":
    main()
