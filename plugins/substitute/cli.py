"""``vnnx radius`` and ``vnnx substitute``: parse, call the library, print JSON."""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from vnnx.errors import ConfigError

from .core import KINDS


def _clip(text: str):
    if text.lower() == "none":
        raise argparse.ArgumentTypeError("a bounded input domain is needed: LO,HI")
    try:
        lo, hi = (float(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"expected LO < HI, got {text!r}")
    return lo, hi


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, help="network (.onnx)")
    p.add_argument("--data", required=True, help=".npz with x (N, ...) in model-input space and y (N,)")
    p.add_argument("--index", type=int, required=True, help="which sample of --data is the anchor x0")
    p.add_argument("--clip", type=_clip, default=(0.0, 1.0), help="input domain LO,HI (default 0,1)")
    p.add_argument("--pgd-restarts", type=int, default=10, help="PGD restarts per ε (default 10)")
    p.add_argument("--pgd-steps", type=int, default=50, help="PGD steps per restart (default 50)")


def _add_substitute_flags(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--gamma", type=float, default=None if required else 0.9,
                   required=required, help="fraction of the ReLUs to replace, in [0, 1]")
    p.add_argument("--gamma0", type=float, default=0.5,
                   help="fraction of the remaining ReLUs replaced per bound recomputation (default 0.5)")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "radius", help="distance to the decision boundary (MILP binary search), optionally on a local substitute",
        description="Binary search over the L∞ radius ε between 0 and d_adv (PGD), one exact MILP per ε "
                    "against every other label. d_bnd is reported only when every solve completed.")
    _common(p)
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per MILP solve (default 30)")
    p.add_argument("--engine", choices=("milp", "verify"), default="milp",
                   help="how each ε is decided: milp = one exact MILP (default, the paper's); verify = the "
                        "complete `vnnx verify` pipeline (PGD, CROWN, alpha-CROWN, ReLU branch and bound, MILP), "
                        "often much faster on networks with many ReLUs")
    p.add_argument("--rel-tol", type=float, default=1e-3, help="stop when (hi - lo) <= rel-tol * hi (default 1e-3)")
    p.add_argument("--narrow", action="store_true",
                   help="after a solve times out, keep searching below it for a larger verified radius "
                        "and a closer counterexample (the result stays incomplete)")
    p.add_argument("--substitute", choices=KINDS, default=None,
                   help="estimate d_bnd on a local substitute of this kind instead of the network; the JSON's "
                        "'bracket' then holds a radius proven on the network itself (lower), the distance of a "
                        "counterexample to it (upper) and the estimate clamped into them")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="with --substitute: skip the one complete decision on the network at the estimate, which "
                        "turns the estimate into a proven lower or upper end (default: run it, --timeout seconds)")
    _add_substitute_flags(p, required=False)
    p.add_argument("--report", default=None, help="also write the JSON here")
    p.set_defaults(func=cmd_radius)

    q = subparsers.add_parser(
        "substitute", help="local substitute network at one anchor (Algorithm 1), ONNX out",
        description="Replace the fraction γ of the ReLUs with the narrowest CROWN bounds at ε = d_adv by "
                    "con/lin/act pieces and fold them into the affine layers.")
    _common(q)
    q.add_argument("--kind", choices=KINDS, required=True, help="con: f_i(x0); lin: line through x0 and x_adv; "
                                                              "act: identity if active at x0, else 0")
    _add_substitute_flags(q, required=True)
    q.add_argument("--out", required=True, help="substitute network (.onnx)")
    q.add_argument("--report", default=None, help="also write the JSON summary here")
    q.set_defaults(func=cmd_substitute)


def _anchor(args):
    from vnnx.data import fit_to_input, load_npz
    from vnnx.io.onnx import load_onnx, to_network

    data = load_npz(args.data)
    if not 0 <= args.index < len(data):
        raise ConfigError(f"--index {args.index} is outside 0..{len(data) - 1} ({args.data} has {len(data)} samples)")
    network = to_network(load_onnx(args.onnx))
    x0 = fit_to_input(data.x[args.index:args.index + 1], network.n_inputs)[0].astype(np.float64)
    lo, hi = args.clip
    if np.any(x0 < lo) or np.any(x0 > hi):
        raise ConfigError(f"sample {args.index} of {args.data} lies outside the input domain [{lo:g}, {hi:g}]")
    return network, x0, int(data.y[args.index])


def _emit(result: dict, path) -> None:
    text = json.dumps(result, indent=2, default=_jsonable)
    print(text)
    if path:
        from vnnx.util import write_text_atomic

        write_text_atomic(path, text + "\n")


def _jsonable(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def cmd_radius(args: argparse.Namespace) -> int:
    from .core import boundary_distance, make_substitute
    from .lemma import act_certificate

    network, x0, y = _anchor(args)
    out = {"onnx": args.onnx, "index": args.index, "true_label": y}
    kw = dict(clip=args.clip, pgd_restarts=args.pgd_restarts, pgd_steps=args.pgd_steps)
    target = network
    if args.substitute:
        sub = make_substitute(network, x0, args.substitute, args.gamma, gamma0=args.gamma0, **kw)
        out["substitute"] = sub.summary()
        target = sub.network
    res = boundary_distance(target, x0, label=sub.label if args.substitute else None, clip=args.clip, timeout=args.timeout, rel_tol=args.rel_tol, narrow=args.narrow,
                            pgd_restarts=args.pgd_restarts, pgd_steps=args.pgd_steps, engine=args.engine,
                            progress=lambda line: print(f"vnnx radius: {line}", file=sys.stderr, flush=True))
    out.update(res.to_dict())
    if args.substitute == "act":
        out["lemma1"] = act_certificate(network, x0, sub, res, clip=args.clip)
    if args.substitute:
        from .core import certify_estimate

        out["bracket"] = certify_estimate(network, x0, sub.label, res.d_bnd, sub.d_adv, clip=args.clip,
                                          check=args.check, timeout=args.timeout).to_dict()
    _emit(out, args.report)
    return 0


def cmd_substitute(args: argparse.Namespace) -> int:
    from vnnx.io.onnx import network_to_onnx

    from .core import make_substitute, substitute_collapsed

    start = time.monotonic()
    network, x0, y = _anchor(args)
    sub = make_substitute(network, x0, args.kind, args.gamma, gamma0=args.gamma0, clip=args.clip,
                          pgd_restarts=args.pgd_restarts, pgd_steps=args.pgd_steps)
    network_to_onnx(sub.network, args.out)
    out = {"onnx": args.onnx, "index": args.index, "true_label": y, "out": args.out, **sub.summary(),
           "collapsed": substitute_collapsed(sub.network, x0, sub.label, args.clip),
           "seconds": time.monotonic() - start}
    _emit(out, args.report)
    return 0
