"""``vnnx radius`` and ``vnnx substitute``: parse, call the library, print JSON."""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from vnnx.errors import ConfigError

from .core import KINDS, RANKINGS


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


def _index(text: str):
    """An anchor index ``i``, or a range ``A:B`` (A included, B excluded)."""
    try:
        if ":" in text:
            a, b = (int(v) for v in text.split(":"))
            if b <= a:
                raise ValueError
            return range(a, b)
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--index wants an integer or a range A:B with A < B, got {text!r}") from None


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx", required=True, help="network (.onnx)")
    p.add_argument("--data", required=True, help=".npz with x (N, ...) in model-input space and y (N,)")
    p.add_argument("--index", type=_index, required=True,
                   help="which sample of --data is the anchor x0 (radius also takes a range A:B, every anchor of it)")
    p.add_argument("--clip", type=_clip, default=(0.0, 1.0), help="input domain LO,HI (default 0,1)")
    p.add_argument("--pgd-restarts", type=int, default=10, help="PGD restarts per ε (default 10)")
    p.add_argument("--pgd-steps", type=int, default=50, help="PGD steps per restart (default 50)")


def _add_substitute_flags(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--gamma", type=float, default=None if required else 0.9,
                   required=required, help="fraction of the ReLUs to replace, in [0, 1]")
    p.add_argument("--gamma0", type=float, default=0.5,
                   help="fraction of the remaining ReLUs replaced per bound recomputation (default 0.5)")
    p.add_argument("--ranking", choices=RANKINGS, default="width",
                   help="which ReLUs go first: width = narrowest CROWN bounds at d_adv (the paper's, default); "
                        "stable-first = those CROWN proves stable on that ball first, then by width")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    from vnnx.certify import add_certify_flags

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
    p.add_argument("--refine", type=float, default=None, metavar="TOL",
                   help="with --substitute: when the bracket shows the raw estimate off by more than TOL "
                        "(relative to it), lower gamma by --gamma-step and estimate again, while --refine-budget "
                        "lasts; the bracket is the intersection of every attempt's (each end is a fact about f)")
    p.add_argument("--gamma-step", type=float, default=0.1, help="with --refine: how much gamma drops per attempt")
    p.add_argument("--refine-budget", type=float, default=120.0,
                   help="with --refine: seconds for the further attempts at one anchor (default 120)")
    p.add_argument("--truth", action="store_true",
                   help="with --index A:B and --substitute: also search f's own d_bnd at every anchor and summarise "
                        "the estimates' errors, the brackets and the time against f's search")
    p.add_argument("--plot", default=None, help="with --index A:B and --substitute: PNG of brackets and estimates per anchor")
    p.add_argument("--report", default=None, help="also write the JSON here")
    from vnnx.executor import add_executor_flags

    add_executor_flags(p)   # --index A:B: anchors at once, locally or on a Dask cluster
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
    add_certify_flags(q)
    q.set_defaults(func=cmd_substitute)


def _anchor(args, index=None):
    from vnnx.data import fit_to_input, load_npz
    from vnnx.io.onnx import load_onnx, to_network

    index = args.index if index is None else index
    if isinstance(index, range):
        raise ConfigError("--index takes a single anchor here (a range A:B only for radius)")
    data = load_npz(args.data)
    if not 0 <= index < len(data):
        raise ConfigError(f"--index {index} is outside 0..{len(data) - 1} ({args.data} has {len(data)} samples)")
    network = to_network(load_onnx(args.onnx))
    x0 = fit_to_input(data.x[index:index + 1], network.n_inputs)[0].astype(np.float64)
    lo, hi = args.clip
    if np.any(x0 < lo) or np.any(x0 > hi):
        raise ConfigError(f"sample {index} of {args.data} lies outside the input domain [{lo:g}, {hi:g}]")
    return network, x0, int(data.y[index])


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
    if isinstance(args.index, range):
        return _radius_many(args)
    _emit(_radius_one(args, args.index), args.report)
    return 0


def _radius_one(args, index: int, truth: bool = False) -> dict:
    from .core import boundary_distance, estimate_error
    from .lemma import act_certificate

    network, x0, y = _anchor(args, index)
    out = {"onnx": args.onnx, "index": index, "true_label": y}
    progress = lambda line: print(f"vnnx radius: {line}", file=sys.stderr, flush=True)  # noqa: E731
    if not args.substitute:
        res = boundary_distance(network, x0, clip=args.clip, timeout=args.timeout, rel_tol=args.rel_tol,
                                narrow=args.narrow, pgd_restarts=args.pgd_restarts, pgd_steps=args.pgd_steps,
                                engine=args.engine, progress=progress)
        out.update(res.to_dict())
        return out
    start = time.monotonic()
    gamma, attempts, adv = args.gamma, [], None
    while True:
        sub, res, bracket = _estimate(args, network, x0, gamma, adv, progress)
        adv = (sub.d_adv, sub.x_adv)
        attempts.append({"gamma": gamma, "estimate_raw": bracket.estimate_raw,
                         "lower": bracket.lower, "upper": bracket.upper, "check": bracket.check})
        off = estimate_error(_intersect(bracket, attempts))
        attempts[-1]["off"] = off
        if getattr(args, "refine", None) is None or off is None or off <= args.refine:
            break
        if time.monotonic() - start > args.refine_budget or gamma - args.gamma_step < -1e-9:
            break
        gamma = round(gamma - args.gamma_step, 10)
        progress(f"anchor {index}: estimate off by {off:.1%} > {args.refine:.1%}; gamma -> {gamma:g}")
    out["substitute"] = sub.summary()
    out.update(res.to_dict())
    if args.substitute == "act":
        out["lemma1"] = act_certificate(network, x0, sub, res, clip=args.clip)
    out["bracket"] = _intersect(bracket, attempts).to_dict()
    if len(attempts) > 1 or getattr(args, "refine", None) is not None:
        out["refinements"] = attempts
    if truth:
        f = boundary_distance(network, x0, label=sub.label, clip=args.clip, timeout=args.timeout,
                              rel_tol=args.rel_tol, engine=args.engine, pgd_restarts=args.pgd_restarts,
                              pgd_steps=args.pgd_steps)
        out["f"] = {"status": f.status, "d_bnd": f.d_bnd, "d_bnd_upper": f.d_bnd_upper,
                    "verified_radius": f.verified_radius, "seconds": f.seconds}
    return out


def _estimate(args, network, x0, gamma, adv, progress):
    """One substitute at ``gamma`` (reusing f's PGD result ``adv`` = (d_adv, x_adv) when given),
    its d_bnd search and the bracket on f."""
    from .core import AdvResult, boundary_distance, certify_estimate, make_substitute

    kw = dict(clip=args.clip, pgd_restarts=args.pgd_restarts, pgd_steps=args.pgd_steps, ranking=args.ranking)
    if adv is not None:
        kw["adv"] = AdvResult(adv[0], adv[1], 0.0, 0)
    sub = make_substitute(network, x0, args.substitute, gamma, gamma0=args.gamma0, **kw)
    res = boundary_distance(sub.network, x0, label=sub.label, clip=args.clip, timeout=args.timeout,
                            rel_tol=args.rel_tol, narrow=args.narrow, pgd_restarts=args.pgd_restarts,
                            pgd_steps=args.pgd_steps, engine=args.engine, progress=progress)
    bracket = certify_estimate(network, x0, sub.label, res.d_bnd, sub.d_adv, clip=args.clip,
                               check=args.check, timeout=args.timeout)
    return sub, res, bracket


def _intersect(last, attempts):
    """``last`` (a Bracket) narrowed to the intersection of every attempt's ends; its estimate is
    ``last``'s raw one clamped into it."""
    import dataclasses

    lowers = [(a["lower"], a) for a in attempts if a["lower"] is not None]
    uppers = [(a["upper"], a) for a in attempts if a["upper"] is not None]
    lower = max(v for v, _ in lowers) if lowers else last.lower
    upper = min(v for v, _ in uppers) if uppers else last.upper
    if lower == last.lower and upper == last.upper:
        return last
    est = last.estimate_raw
    clamped = None if est is None else min(max(est, lower), upper if upper is not None else np.inf)
    lower_by = last.lower_by if lower == last.lower else f"{_by(attempts, 'lower', lower)} (gamma attempt)"
    upper_by = last.upper_by if upper == last.upper else f"{_by(attempts, 'upper', upper)} (gamma attempt)"
    return dataclasses.replace(last, lower=lower, lower_by=lower_by, upper=upper, upper_by=upper_by, estimate=clamped)


def _by(attempts, end, value):
    a = next(a for a in attempts if a[end] == value)
    return f"gamma {a['gamma']:g}"


def _radius_many(args) -> int:
    """Every anchor of ``--index A:B``; with ``--truth`` also f's own d_bnd search, and a summary of
    the estimates' errors, the brackets and the time against f's search (``--plot``: per anchor)."""
    from vnnx.executor import Task, executor_spec, run_tasks

    spec = executor_spec(args)
    tasks = [Task(f"{args.onnx}\t{args.data}\t{i}", _radius_anchor, (args, i)) for i in args.index]
    by_index = {}
    for outcome in run_tasks(tasks, spec, progress=spec.kind != "in-process", desc="anchors"):
        i = outcome.task.args[1]
        if outcome.status == "ok":
            by_index[i] = outcome.value
        else:   # one anchor that cannot be searched (no adversarial example, a crash) is its row
            print(f"vnnx radius: anchor {i}: {outcome.reason}", file=sys.stderr, flush=True)
            by_index[i] = {"onnx": args.onnx, "index": i, "status": "error", "error": outcome.reason}
    anchors = [by_index[i] for i in args.index]
    out = {"onnx": args.onnx, "anchors": anchors, "summary": radius_summary(anchors)}
    if args.plot and args.substitute:
        plot_brackets(anchors, args.plot)
    _emit(out, args.report)
    return 0


def _radius_anchor(args, i: int) -> dict:
    """One anchor of ``--index A:B`` (a task of :mod:`vnnx.executor`)."""
    print(f"vnnx radius: anchor {i}", file=sys.stderr, flush=True)
    return _radius_one(args, i, truth=args.truth and bool(args.substitute))


def radius_summary(anchors: list[dict]) -> dict:
    """Counts, and where f's d_bnd is known (``f`` complete) the raw and clamped estimates' mean
    absolute relative error, how often the true d_bnd lies in the bracket, the bracket's mean
    relative width, and the substitute path's total time against f's searches.

    f's search knows its d_bnd only to ``--rel-tol``: f is proven robust at ``d_bnd`` and has a
    counterexample at ``d_bnd_upper``, so the true boundary lies in [d_bnd, d_bnd_upper].
    ``inside_bracket`` counts the anchors where that interval meets the certified bracket (what
    soundness demands; a bracket end proven inside f's own tolerance is no contradiction);
    ``point_inside_bracket`` counts those where the point ``d_bnd`` itself lies in it. Rows
    without ``d_bnd_upper`` (older reports) use ``d_bnd`` for it."""
    s = {"anchors": len(anchors), "complete": sum(a.get("status") == "complete" for a in anchors),
         "errors": sum(a.get("status") == "error" for a in anchors)}
    known = [a for a in anchors if a.get("f", {}).get("d_bnd") and a.get("bracket", {}).get("estimate_raw") is not None]
    if known:
        t = np.array([a["f"]["d_bnd"] for a in known])
        raw = np.array([a["bracket"]["estimate_raw"] for a in known])
        clamped = np.array([a["bracket"]["estimate"] for a in known])
        lo = np.array([a["bracket"]["lower"] for a in known])
        up = np.array([a["bracket"]["upper"] if a["bracket"]["upper"] is not None else np.inf for a in known])
        t_up = np.array([a["f"].get("d_bnd_upper") or a["f"]["d_bnd"] for a in known])
        s.update(compared=len(known), raw_mean_abs_rel_error=float(np.mean(np.abs(raw - t) / t)),
                 clamped_mean_abs_rel_error=float(np.mean(np.abs(clamped - t) / t)),
                 inside_bracket=int(np.sum((lo <= t_up * (1 + 1e-6)) & (t <= up * (1 + 1e-6)))),
                 point_inside_bracket=int(np.sum((lo <= t * (1 + 1e-6)) & (t <= up * (1 + 1e-6)))),
                 bracket_mean_rel_width=float(np.mean((up - lo) / t)),
                 substitute_seconds=float(sum(a["seconds"] + a["bracket"]["seconds"] + a["substitute"]["prune_seconds"]
                                              for a in known)),
                 f_search_seconds=float(sum(a["f"]["seconds"] for a in known)))
    return s


def plot_brackets(anchors: list[dict], path) -> None:
    """Per anchor: the bracket (bar), the raw and clamped estimates and f's d_bnd (when known)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vnnx.util import atomic_path

    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(anchors)), 3.8))
    for k, a in enumerate(anchors):
        b = a.get("bracket") or {}
        if b.get("upper") is not None:
            ax.plot([k, k], [b["lower"], b["upper"]], color="0.7", lw=6, solid_capstyle="butt",
                    label="certified bracket" if k == 0 else None)
        if b.get("estimate_raw") is not None:
            ax.plot(k, b["estimate_raw"], "x", color="tab:red", label="raw estimate" if k == 0 else None)
            ax.plot(k, b["estimate"], "o", mfc="none", color="tab:blue", label="clamped estimate" if k == 0 else None)
        if a.get("f", {}).get("d_bnd"):
            ax.plot(k, a["f"]["d_bnd"], "_", color="k", ms=14, mew=2, label="true d_bnd (f)" if k == 0 else None)
    ax.set_xticks(range(len(anchors)), [str(a["index"]) for a in anchors], rotation=90)
    ax.set_xlabel("anchor")
    ax.set_ylabel("L∞ distance")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def cmd_substitute(args: argparse.Namespace) -> int:
    from vnnx.io.onnx import network_to_onnx

    from .core import make_substitute, substitute_collapsed

    start = time.monotonic()
    network, x0, y = _anchor(args)
    sub = make_substitute(network, x0, args.kind, args.gamma, gamma0=args.gamma0, clip=args.clip,
                          pgd_restarts=args.pgd_restarts, pgd_steps=args.pgd_steps, ranking=args.ranking)
    network_to_onnx(sub.network, args.out)
    out = {"onnx": args.onnx, "index": args.index, "true_label": y, "out": args.out, **sub.summary(),
           "collapsed": substitute_collapsed(sub.network, x0, sub.label, args.clip),
           "seconds": time.monotonic() - start}
    if args.certify is not None:   # the anchor's own ball; the text on stderr keeps stdout JSON
        from vnnx.certify import certify_transform

        text, out["certify"] = certify_transform(args.onnx, args.out, x0[None], args.certify, what="anchor",
                                                 clip=args.clip, timeout=args.certify_timeout, progress=False)
        print(text, file=sys.stderr)
    _emit(out, args.report)
    return 0
