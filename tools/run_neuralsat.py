"""Run a peer verifier (NeuralSAT) on a VNN-COMP instances CSV, one instance at a time, from its
own environment, and write its results in the VNN-COMP results form that ``tools/bench_peer.py``
reads: ``benchmark,onnx,vnnlib,prepare_seconds,result,run_seconds``.

The peer is never a dependency of vnnx: it runs as a subprocess, ``--python`` being its own
virtual environment's interpreter and ``--main`` NeuralSAT's ``main.py`` (the ``neuralsat`` wheel
installs a top-level ``src`` package and no console entry; ``main.py`` runs from inside that folder,
so the command is ``cd $(dirname MAIN) && PYTHON main.py --net N --spec S --timeout T --device cpu``).
See docs/benchmarks.md, "Against a peer (issue 20)", for how that environment is installed.

* ``result``: the last ``status,runtime`` line NeuralSAT prints (``sat``, ``unsat``, ``timeout``,
  ``unknown``); anything else it reports, a crash, or no such line is ``error``; killed past
  ``timeout + --grace`` is ``timeout``.
* ``run_seconds``: wall time of the whole subprocess, start-up included; ``prepare_seconds`` is 0.
* With ``--cex-dir``, sat rows also save NeuralSAT's counterexample (``--export_cex``) there, one
  file per instance, for checking with onnxruntime; ``--log-dir`` keeps each run's output.

Run:  python tools/run_neuralsat.py --python /work/venv_nsat/bin/python \\
          --main /work/venv_nsat/lib/python3.11/site-packages/src/main.py \\
          --instances ../shared/benchmarks/test/test_instances.csv --benchmark test \\
          --out out/neuralsat/test.csv [--timeout 60] [--limit N] [--match 256x2] [--taskset 1]
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

STATUS_LINE = re.compile(r"^([a-z_]+),([0-9.]+)\s*$")
KNOWN = {"sat", "unsat", "timeout", "unknown"}


def read_instances(path: Path) -> list[tuple[Path, Path, float]]:
    """Rows (onnx, vnnlib, timeout) of a VNN-COMP instances CSV, paths resolved against its folder."""
    rows = []
    with path.open(newline="") as fh:
        for rec in csv.reader(fh):
            if not rec or rec[0].strip().startswith("#") or rec[0].strip() == "onnx":
                continue
            onnx, spec, timeout = (r.strip() for r in rec[:3])
            rows.append((path.parent / onnx, path.parent / spec, float(timeout)))
    return rows


def parse_result(output: str) -> str:
    """NeuralSAT's verdict: the last ``status,runtime`` line of its output, else ``error``."""
    for line in reversed(output.splitlines()):
        m = STATUS_LINE.match(line.strip())
        if m:
            return m.group(1) if m.group(1) in KNOWN else "error"
    return "error"


def run_one(args, onnx: Path, spec: Path, timeout: float) -> tuple[str, float, str]:
    main = Path(args.main).resolve()
    cmd = [args.python, str(main), "--net", str(onnx.resolve()), "--spec", str(spec.resolve()),
           "--timeout", str(timeout), "--device", "cpu", "--verbosity", "1"]
    cex = None
    if args.cex_dir:
        cex = Path(args.cex_dir).resolve() / f"{onnx.stem}__{spec.stem}.txt"
        cex.parent.mkdir(parents=True, exist_ok=True)
        cmd += ["--result_file", str(cex), "--export_cex"]
    if args.taskset is not None:
        cmd = ["taskset", "-c", str(args.taskset)] + cmd
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=main.parent, env=env, capture_output=True, text=True,
                              timeout=timeout + args.grace)
        seconds = time.perf_counter() - start
        output = proc.stdout + proc.stderr
        result = parse_result(proc.stdout)
        if proc.returncode != 0 and result not in ("sat", "unsat"):
            result = "error"
    except subprocess.TimeoutExpired as exc:
        seconds = time.perf_counter() - start
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "")
        result = "timeout"
    if result in ("sat", "unsat") and seconds > timeout:
        result = "timeout"  # answered, but past the cap (start-up included)
    return result, seconds, output


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--python", required=True, help="the peer's own interpreter (its venv)")
    ap.add_argument("--main", required=True, help="NeuralSAT's main.py (in the installed src/)")
    ap.add_argument("--instances", required=True, type=Path, help="VNN-COMP instances CSV")
    ap.add_argument("--out", required=True, type=Path, help="results CSV (VNN-COMP form)")
    ap.add_argument("--benchmark", help="benchmark column (default: the instances' folder name)")
    ap.add_argument("--timeout", type=float, help="override every row's timeout (seconds)")
    ap.add_argument("--match", help="keep only rows whose onnx path contains this text")
    ap.add_argument("--vnnlib-match", help="keep only rows whose vnnlib name is one of these "
                    "(comma-separated)")
    ap.add_argument("--limit", type=int, help="first N rows (after --match)")
    ap.add_argument("--grace", type=float, default=15.0,
                    help="seconds past the timeout before the subprocess is killed (default 15)")
    ap.add_argument("--threads", type=int, default=1, help="OMP/MKL threads (default 1)")
    ap.add_argument("--taskset", help="pin the peer to these CPUs (taskset -c)")
    ap.add_argument("--cex-dir", help="save counterexamples (sat rows) here")
    ap.add_argument("--log-dir", help="save each run's output here")
    args = ap.parse_args(argv)

    rows = read_instances(args.instances)
    if args.match:
        rows = [r for r in rows if args.match in str(r[0])]
    if args.vnnlib_match:
        names = set(args.vnnlib_match.split(","))
        rows = [r for r in rows if r[1].name in names]
    if args.limit:
        rows = rows[: args.limit]
    bench = args.benchmark or args.instances.parent.name
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["benchmark", "onnx", "vnnlib", "prepare_seconds", "result", "run_seconds"])
        for onnx, spec, timeout in rows:
            t = args.timeout if args.timeout is not None else timeout
            result, seconds, output = run_one(args, onnx, spec, t)
            if args.log_dir:
                log = Path(args.log_dir) / f"{onnx.stem}__{spec.stem}.log"
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text(output)
            w.writerow([bench, str(onnx), str(spec), "0", result, f"{seconds:.3f}"])
            fh.flush()
            print(f"{onnx.name} {spec.name}: {result} {seconds:.2f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
