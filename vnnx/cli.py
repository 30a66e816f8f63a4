"""``vnnx <command>``: parse flags, call the library, print. Nothing clever lives here.

Every :class:`~vnnx.errors.VnnxError` becomes one line on stderr and exit code 2; Ctrl-C exits
130; a traceback is shown only with ``--debug``. Plugins add their own subcommands through
:mod:`vnnx.registry`.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Optional, Sequence

from vnnx.errors import VnnxError
from vnnx.verify import METHODS, WITNESS_TOL


def _add_maxpool_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--maxpool", choices=("capm", "lirpa"), default="capm",
                   help="MaxPool bound operator: the CAPM plugin (any kernel/stride/padding) or "
                        "auto_LiRPA's own (stride == kernel only). Default: capm")


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (``-5``, ``nan`` and ``inf`` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return value


def _witness_tol(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _add_witness_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--witness-tol", type=_witness_tol, default=WITNESS_TOL, metavar="TOL",
                   help="counterexample tolerance on inputs (distance to the box) and output rows, as "
                        f"VNN-COMP checks them (default {WITNESS_TOL:g}); 0 = strict: exact membership")


def _bound_plugin(maxpool: str, extra: str) -> dict:
    if maxpool == "lirpa":
        return {}
    from vnnx.registry import discover

    plugins, _ = discover()
    for plugin in plugins:
        if plugin.name == maxpool and plugin.kind == "bound-operator":
            return dict(plugin.extras.get(extra, {}))
    warnings.warn(f"the {maxpool!r} bound-operator plugin is not installed; using the engines' own MaxPool")
    return {}


def _add_device_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="where the graph engine computes: auto (cuda when torch sees a GPU, else cpu), "
                        "cpu or cuda; float64 either way (default auto)")


def custom_ops_for(maxpool: str) -> dict:
    """auto_LiRPA bound operators for the ``--maxpool`` choice, taken from registered plugins."""
    return _bound_plugin(maxpool, "custom_ops")


def relaxations_for(maxpool: str) -> dict:
    """The graph engine's operator relaxations for the ``--maxpool`` choice (operator kind ->
    backward step), taken from registered plugins."""
    return _bound_plugin(maxpool, "relaxations")


VNNCOMP_TABLE = Path(__file__).resolve().parents[1] / "specs" / "configs" / "vnncomp.yaml"
_VERIFY_DEFAULTS = {"method": "auto", "maxpool": "capm", "solver": "highs"}


def _apply_benchmark_settings(args: argparse.Namespace) -> None:
    """Fill flags the user left unset from the benchmark's row of ``specs/configs/vnncomp.yaml``."""
    from vnnx.config import load_benchmark_table

    settings = dict(_VERIFY_DEFAULTS)
    if args.benchmark is not None:
        settings.update(load_benchmark_table(VNNCOMP_TABLE, allowed=set(_VERIFY_DEFAULTS)).get(args.benchmark))
    for key, value in settings.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def _cmd_verify(args: argparse.Namespace) -> int:
    from vnnx.io.onnx import load_onnx
    from vnnx.io.vnnlib import read_vnnlib
    from vnnx.verify import Verifier

    _apply_benchmark_settings(args)
    from vnnx.product import parse_onnx_args

    entries = parse_onnx_args(args.onnx, args.vnnlib)
    query = _multi_network_query(args.vnnlib)
    if query is not None:
        return _verify_query(args, query, entries)
    if len(entries) != 1:
        raise VnnxError(f"--onnx is given {len(entries)} networks, but {args.vnnlib} is a "
                        "single-network property")
    args.onnx = entries[0][1]
    model = load_onnx(args.onnx)
    spec = read_vnnlib(args.vnnlib, model.n_inputs, model.n_outputs)
    verifier = Verifier(model, relaxations=relaxations_for(args.maxpool), device=args.device,
                        milp_backend=args.solver, witness_tol=args.witness_tol)
    if args.method == "check":
        # Build everything a run needs (the bound graph, its engine), so that any
        # network a run would refuse fails here, at prepare time.
        verifier.prepare()
        print(f"ok: {model.path} ({model.n_inputs} inputs, {model.n_outputs} outputs), "
              f"{args.vnnlib} ({len(spec.properties)} input box(es))")
        return 0
    # --timeout counts from the start of the process (or of the call: see main).
    return _report_verdict(args, verifier.verify(spec, method=args.method, timeout=args.timeout, start=_STARTED))


def _report_verdict(args: argparse.Namespace, result) -> int:
    """The verdict line on stdout, the result file (atomically) and, with --verbose, the stage
    log as JSON on stderr."""
    from vnnx.util import write_text_atomic

    if args.result_file:
        write_text_atomic(args.result_file, result.result_text())
    print(result.verdict)
    if args.verbose:
        print(json.dumps(result.as_dict(), indent=2), file=sys.stderr)
    return 0


def _multi_network_query(path: str):
    """The :class:`~vnnx.io.vnnlib2.Query` of a VNN-LIB 2.0 file over several networks, else
    None (1.0 files and single-network 2.0 files take the Spec path)."""
    from vnnx.io.vnnlib import _read_text, vnnlib_version
    from vnnx.io.vnnlib2 import read_query

    p = Path(path)
    if not p.is_file():
        return None   # read_vnnlib says so, in its words
    version = vnnlib_version(_read_text(p))
    if version is None or version.split(".")[0] != "2":
        return None
    query = read_query(p)
    return query if len(query.networks) > 1 else None


def _verify_query(args: argparse.Namespace, query, entries) -> int:
    from vnnx.product import ProductVerifier, assign_networks, build_product, load_networks, verify_query

    paths = assign_networks(query, entries)
    models = load_networks(paths)
    if args.method == "check":
        product = build_product(query, models)
        ProductVerifier(product, milp_backend=args.solver, witness_tol=args.witness_tol, device=args.device).prepare()
        print(f"ok: {len(paths)} networks ({', '.join(f'{n}={p}' for n, p in paths.items())}), "
              f"{args.vnnlib} ({product.n_free} free inputs after substitution)")
        return 0
    return _report_verdict(args, verify_query(query, models, method=args.method, timeout=args.timeout,
                                              start=_STARTED, milp_backend=args.solver,
                                              witness_tol=args.witness_tol, device=args.device))


def _cmd_bounds(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    from vnnx.io.onnx import load_onnx
    from vnnx.io.vnnlib import read_vnnlib
    from vnnx.verify import Verifier

    model = load_onnx(args.onnx)
    spec = read_vnnlib(args.vnnlib, model.n_inputs, model.n_outputs)
    if args.engine == "lirpa":   # the independent cross-check: auto_LiRPA on the chain view
        from vnnx.bounds import BoundComputer
        from vnnx.io.onnx import to_network

        try:
            network = to_network(model)
        except VnnxError as exc:
            raise VnnxError(f"{args.onnx}: auto_LiRPA's engine takes chain networks only "
                            f"({exc}); use --engine graph") from exc
        bounds_engine, name = BoundComputer(network, custom_ops_for(args.maxpool)), "auto_LiRPA"
    else:
        bounds_engine = Verifier(model, relaxations=relaxations_for(args.maxpool), device=args.device).bound_engine()
        name = "graph"
    deadline = None if args.timeout is None else _STARTED + args.timeout
    out = []
    for prop in spec.properties:
        t0 = time.monotonic()
        rows = [(a, b) for a, b in prop.clauses if len(b)]
        C = np.vstack([a for a, _ in rows]) if rows else np.eye(model.n_outputs)
        rhs = np.concatenate([b for _, b in rows]) if rows else np.zeros(model.n_outputs)
        res = bounds_engine.compute(prop.x_lower, prop.x_upper, args.method, C, deadline=deadline)
        lower, upper = res.lower, res.upper
        out.append({"lower": (lower - rhs).tolist(), "upper": (upper - rhs).tolist(),
                    "seconds": round(time.monotonic() - t0, 4)})
    doc = {"method": args.method, "engine": name,
           "quantity": "A_i y - b_i per output constraint row (a row can hold only where the value is <= 0)",
           **(out[0] if len(out) == 1 else {"properties": out})}
    print(json.dumps(doc, indent=None if args.compact else 2))
    return 0


def _cmd_spec(args: argparse.Namespace) -> int:
    from vnnx.specgen import generate_robustness_specs

    rows = generate_robustness_specs(args.data, args.out_dir, epsilons=args.epsilon, count=args.count,
                                     start=args.start, onnx=args.onnx, timeout=args.timeout,
                                     clip=(args.clip_min, args.clip_max), only_correct=not args.all,
                                     version=args.format)
    print(f"wrote {len(rows)} specs and {Path(args.out_dir) / 'instances.csv'}")
    return 0


def _cmd_certify(args: argparse.Namespace) -> int:
    from vnnx.certify import GUARANTEE, certify, check_epsilon, load_data, write_json

    check_epsilon(args.epsilon, args.output_tolerance)
    if args.count is not None and args.count < 1:
        raise VnnxError("--count must be at least 1")
    x, y = load_data(args.data)
    if not 0 <= args.start < len(x):
        raise VnnxError(f"--start {args.start} is outside the data (it has {len(x)} samples)")
    stop = len(x) if args.count is None else min(len(x), args.start + args.count)
    from vnnx.executor import executor_spec

    report = certify(args.original, args.transformed, x[args.start:stop], args.epsilon,
                     labels=None if y is None else y[args.start:stop], indices=range(args.start, stop),
                     tolerance=args.output_tolerance, clip=args.clip, timeout=args.timeout,
                     out_dir=args.out_dir, progress=not args.quiet, executor=executor_spec(args))
    if args.json:
        write_json(args.json, report)
    print(report.table())
    if args.output_tolerance is None:
        print(f"# {GUARANTEE}")
    print(report.summary())
    return 0


def _clip_range(text: str):
    if text.strip().lower() == "none":
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI or none, got {text!r}") from None
    if not lo <= hi:
        raise argparse.ArgumentTypeError(f"LO must not exceed HI, got {text!r}")
    return (lo, hi)


def _cmd_bench(args: argparse.Namespace) -> int:
    from vnnx.bench import run_benchmark
    from vnnx.executor import executor_spec

    summary = run_benchmark(args.instances, out_csv=args.out, timeout_scale=args.timeout_scale,
                            method=args.method, relaxations=relaxations_for(args.maxpool), limit=args.limit,
                            solver=args.solver, executor=executor_spec(args), witness_tol=args.witness_tol,
                            resume=args.resume, longest_first=args.longest_first, device=args.device)
    print(summary.table())
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from vnnx.demo import run_demo

    return run_demo(out_dir=args.out_dir, timeout=args.timeout, quick=args.quick)


def _cmd_plugins(args: argparse.Namespace) -> int:
    from vnnx.registry import discover

    plugins, failures = discover()
    for p in plugins:
        print(f"{p.name:20s} {p.kind:16s} {p.summary}")
    for f in failures:
        print(f"{f.name:20s} {'(failed)':16s} {f.error}")
    if not plugins and not failures:
        print("no plugins registered")
    return 0


def _set_threads() -> None:
    """torch's intra-op threads: 1 unless ``VNNX_THREADS`` says otherwise. vnnx's tensors are
    small; with several threads each tiny op pays a thread wake-up, 1000x slower on a loaded
    2-core machine (measured: 20 ms vs 4 us for a 10-element max)."""
    import os

    import torch

    try:
        torch.set_num_threads(max(1, int(os.environ.get("VNNX_THREADS", "1"))))
    except ValueError:
        raise VnnxError(f"VNNX_THREADS must be a positive integer, got {os.environ['VNNX_THREADS']!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vnnx", description="Verification-friendly neural networks.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("verify", help="verify one ONNX network against one VNN-LIB property")
    p.add_argument("--onnx", required=True, action="append",
                   help="network (.onnx or .onnx.gz); for a VNN-LIB 2.0 query over several networks "
                        "repeat it as NAME=PATH (a network declared equal-to another may share its "
                        "file), or give the first column of a VNN-COMP 2026 instances.csv")
    p.add_argument("--vnnlib", required=True, help="property (.vnnlib or .vnnlib.gz)")
    p.add_argument("--timeout", type=_seconds, default=None,
                   help="seconds for the whole run, counted from the start of the process (default: none)")
    p.add_argument("--method", choices=METHODS + ("check",),
                   default=None, help="auto = PGD, then CROWN, then alpha-CROWN, then branch and bound "
                                      "(input or ReLU splitting), then MILP (default); each other method "
                                      "runs one stage alone (input-split after CROWN; "
                                      "bab = bounds and activation-splitting branch and bound only: ReLU, MaxPool, Sigmoid, Tanh); "
                                      "check = only load the network and spec")
    p.add_argument("--result-file", help="write the VNN-COMP result file here (atomically)")
    p.add_argument("--solver", choices=("highs", "gurobi", "auto"), default=None,
                   help="MILP back end (default highs)")
    p.add_argument("--benchmark", help="VNN-COMP benchmark name: defaults for unset flags come from "
                                       "specs/configs/vnncomp.yaml")
    p.add_argument("--verbose", action="store_true", help="print the per-stage log as JSON on stderr")
    _add_witness_flag(p)
    p.add_argument("--maxpool", choices=("capm", "lirpa"), default=None,
                   help="MaxPool bound operator (default capm; see `vnnx bounds --help`)")
    _add_device_flag(p)
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser("bounds", help="print bounds on a spec's output constraint rows as JSON")
    p.add_argument("--onnx", required=True)
    p.add_argument("--vnnlib", required=True)
    p.add_argument("--method", choices=("ibp", "crown", "alpha-crown"), default="crown")
    p.add_argument("--timeout", type=_seconds, default=None,
                   help="seconds, counted from the start of the process: alpha-CROWN stops its steps there "
                        "(its bound so far is sound); default none")
    p.add_argument("--compact", action="store_true", help="one-line JSON")
    p.add_argument("--engine", choices=("auto", "graph", "lirpa"), default="auto",
                   help="bound engine: auto or graph (vnnx's own, any DAG; default), lirpa (auto_LiRPA 0.3, "
                        "chains only: the cross-check)")
    _add_device_flag(p)
    _add_maxpool_flag(p)
    p.set_defaults(func=_cmd_bounds)

    p = sub.add_parser("spec", help="write L-inf local-robustness VNN-LIB specs and an instances.csv")
    p.add_argument("--data", required=True, help="samples: .npz (x, y), MNIST idx images file, or ERAN .csv")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--epsilon", type=float, nargs="+", required=True, help="one or more radii (model-input units)")
    p.add_argument("--count", type=int, default=10, help="number of samples (default 10)")
    p.add_argument("--start", type=int, default=0, help="index of the first sample (default 0)")
    p.add_argument("--onnx", help="network: skip misclassified samples and record it in instances.csv")
    p.add_argument("--all", action="store_true", help="keep misclassified samples too")
    p.add_argument("--timeout", type=float, default=60.0, help="timeout column of instances.csv (default 60)")
    p.add_argument("--clip-min", type=float, default=0.0, help="lowest valid input value (default 0)")
    p.add_argument("--clip-max", type=float, default=1.0, help="highest valid input value (default 1)")
    p.add_argument("--format", choices=("1.0", "2.0"), default="1.0",
                   help="VNN-LIB version to write (default 1.0, the VNN-COMP dialect)")
    p.set_defaults(func=_cmd_spec)

    p = sub.add_parser("certify", help="prove that a transformed network agrees with its original on L-inf balls")
    p.add_argument("--original", required=True, help="the network F it started from (.onnx)")
    p.add_argument("--transformed", required=True, help="the transformed network G (.onnx)")
    p.add_argument("--data", required=True, help="ball centres: .npz (x, optional y) or ERAN .csv")
    p.add_argument("--epsilon", type=float, required=True, help="L-inf radius (model-input units)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--output-tolerance", type=float, default=None, metavar="D",
                      help="prove |G(x) - F(x)|_inf <= D on each ball")
    mode.add_argument("--same-argmax", action="store_true",
                      help="prove that F and G both keep F's class at the centre on each ball (default)")
    p.add_argument("--timeout", type=_seconds, default=None, help="seconds per sample (default: none)")
    p.add_argument("--count", type=int, default=None, help="number of samples (default: all)")
    p.add_argument("--start", type=int, default=0, help="index of the first sample (default 0)")
    p.add_argument("--clip", type=_clip_range, default=(0.0, 1.0), help="input range LO,HI or none (default 0,1)")
    p.add_argument("--out-dir", default=None, help="write each certified VNN-LIB 2.0 query and an instances.csv here")
    p.add_argument("--json", default=None, help="every result, witnesses included, as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    from vnnx.executor import add_executor_flags

    add_executor_flags(p)
    p.set_defaults(func=_cmd_certify)

    p = sub.add_parser("bench", help="run every instance of a VNN-COMP instances.csv")
    p.add_argument("instances", help="instances.csv (onnx, vnnlib, timeout per row)")
    p.add_argument("--out", help="results CSV (default: results.csv beside the instances file)")
    p.add_argument("--timeout-scale", type=_seconds, default=1.0, help="multiply every timeout (default 1)")
    p.add_argument("--method", default="auto", choices=METHODS)
    _add_witness_flag(p)
    p.add_argument("--limit", type=int, default=None, help="run only the first N instances")
    p.add_argument("--solver", choices=("highs", "gurobi", "auto"), default="highs", help="MILP back end")
    from vnnx.executor import add_executor_flags

    add_executor_flags(p)
    p.add_argument("--resume", action="store_true",
                   help="keep the decided (sat/unsat) rows of an earlier --out CSV and run only the rest "
                        "(error, timeout and unknown rows run again)")
    p.add_argument("--longest-first", metavar="PRIOR_CSV", default=None,
                   help="start the instances in decreasing order of their seconds in an earlier results "
                        "CSV (those it lacks first): with --jobs or a cluster, long rows do not end last")
    _add_device_flag(p)
    _add_maxpool_flag(p)
    p.set_defaults(func=_cmd_bench)

    p = sub.add_parser("demo", help="the main job on the shipped MNIST model and specs")
    p.add_argument("--out-dir", default="out/demo", help="where results go (default out/demo)")
    p.add_argument("--timeout", type=_seconds, default=30.0, help="seconds per instance (default 30)")
    p.add_argument("--quick", action="store_true", help="fewer instances")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("plugins", help="list registered plugins")
    p.set_defaults(func=_cmd_plugins)

    from vnnx.registry import discover

    plugins, _ = discover()
    for plugin in plugins:
        if plugin.add_commands is not None:
            try:
                plugin.add_commands(sub)
            except Exception as exc:  # a broken plugin must not take the core commands down
                print(f"vnnx: warning: plugin {plugin.name!r} could not add its commands: "
                      f"{type(exc).__name__}: {exc}", file=sys.stderr)
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that the command stops the same way."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


# time.monotonic() at which the running command started (see main).
_STARTED: Optional[float] = None

# Flags of any command (core or plugin) that name an output file: checked before any work, so
# that a missing or unwritable location fails at once rather than after a long search.
OUTPUT_FILE_FLAGS = ("out", "report", "json", "result_file", "plot")


def _check_outputs(args: argparse.Namespace) -> None:
    from vnnx.util import check_writable_file

    for flag in OUTPUT_FILE_FLAGS:
        value = getattr(args, flag, None)
        if isinstance(value, (str, Path)) and value:
            check_writable_file(value, f"--{flag.replace('_', '-')}")


def _exit_now(code: int) -> None:
    """Leave at once with ``code``: a solver thread may still be running (it stops at its next
    interrupt check), and interpreter shutdown under a running HiGHS thread aborts. Output files
    are written atomically, so nothing half-written is left behind."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The ``vnnx`` command. ``argv`` None: this process's own command line (the console
    script); then ``--timeout`` counts from the process start, imports included. With an
    explicit ``argv`` (a call from Python) it counts from this call."""
    import time

    global _STARTED
    if argv is None:
        from vnnx.util import process_start

        _STARTED = process_start()
    else:
        _STARTED = time.monotonic()
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if not debug:
        # torch/auto_LiRPA deprecation chatter is not for users of the command line.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = _main(argv, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    highs = sys.modules.get("vnnx.solvers.highs")
    if highs is not None and highs.abandoned_solves():
        _exit_now(code)   # a solve that overran its limit is still running: do not wait for it
    return code


def _main(argv: list, debug: bool) -> int:
    try:
        _set_threads()
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        _check_outputs(args)
        return int(args.func(args) or 0)
    except VnnxError as exc:
        if debug:
            raise
        print(f"vnnx: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vnnx: interrupted", file=sys.stderr)
        _exit_now(130)
    except _Terminated:
        print("vnnx: terminated", file=sys.stderr)
        _exit_now(143)
    except MemoryError:
        print("vnnx: error: out of memory", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug in vnnx: still one line, but say so
        if debug:
            raise
        print(f"vnnx: internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)",
              file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
