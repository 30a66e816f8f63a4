"""Distance to the decision boundary (MILP binary search) and local substitutes (Algorithm 1).

All radii are L∞ and in model-input space; every box is intersected with the clip range.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from vnnx.attack import pgd_spec
from vnnx.engine import ChainBounds
from vnnx.errors import ConfigError, VnnxError
from vnnx.io.vnnlib import robustness_property
from vnnx.milp import verify_milp
from vnnx.network import MatrixCache, Network

from .bounds import SubstituteBounds
from .fold import FoldInfo, Replacement, build_substitute, candidate_layers, layer_size

KINDS = ("con", "lin", "act")
RANKINGS = ("width", "stable-first")


def _box(x0: np.ndarray, eps: float, clip) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = x0 - eps, x0 + eps
    if clip is not None:
        lo, hi = np.maximum(lo, clip[0]), np.minimum(hi, clip[1])
    return lo, hi


def domain_radius(x0: np.ndarray, clip) -> float:
    """The smallest ε whose clipped box is the whole clip domain."""
    if clip is None:
        raise ConfigError("the substitute plugin needs a bounded input domain (--clip LO,HI)")
    return float(max(np.max(x0 - clip[0]), np.max(clip[1] - x0)))


def anchor_label(network: Network, x0: np.ndarray) -> int:
    return int(np.argmax(network.forward(x0[None])[0]))


def _is_adversarial(network: Network, x: np.ndarray, label: int) -> bool:
    y = network.forward(np.asarray(x, np.float64)[None])[0]
    others = np.delete(y, label)
    return bool(np.max(others) >= y[label])


# ----------------------------------------------------------------------------------- d_adv
@dataclass
class AdvResult:
    """``d_adv``: smallest ε (to ``rel_tol``) where PGD found ``x_adv`` (float64-checked), or None."""

    d_adv: Optional[float]
    x_adv: Optional[np.ndarray]
    seconds: float
    attacks: int


def find_adversarial(network: Network, x0: np.ndarray, label: int, clip=(0.0, 1.0), *,
                     eps_start: float = 0.01, rel_tol: float = 0.01, restarts: int = 10, steps: int = 50,
                     seed: int = 0) -> AdvResult:
    """PGD (``vnnx.attack.pgd_spec``) at growing ε (doubling from ``eps_start`` up to the domain
    radius), then bisection on ε; every point is re-checked in float64."""
    start = time.monotonic()
    module = network.to_torch(torch.float32).eval()
    n_out = network.n_outputs
    eps_max = domain_radius(x0, clip)
    attacks = 0

    def attack(eps: float):
        nonlocal attacks
        attacks += 1
        prop = robustness_property(x0, eps, label, n_out, clip)
        res = pgd_spec(module, prop.x_lower, prop.x_upper, prop.clauses, restarts=restarts, steps=steps, seed=seed)
        if res.x is not None and res.margin <= 0:
            x = np.clip(res.x.astype(np.float64), prop.x_lower, prop.x_upper)
            if _is_adversarial(network, x, label):
                return x
        return None

    lo, hi, x_hi = 0.0, None, None
    eps = min(eps_start, eps_max)
    while True:
        x = attack(eps)
        if x is not None:
            hi, x_hi = eps, x
            break
        lo = eps
        if eps >= eps_max:
            return AdvResult(None, None, time.monotonic() - start, attacks)
        eps = min(2 * eps, eps_max)
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        x = attack(mid)
        if x is not None:
            hi, x_hi = mid, x
        else:
            lo = mid
    # The distance of the point found, which may be below the ε it was searched at.
    return AdvResult(float(np.max(np.abs(x_hi - x0))), x_hi, time.monotonic() - start, attacks)


# ----------------------------------------------------------------------------------- d_bnd
@dataclass
class RadiusResult:
    """Outcome of the binary search.

    ``status``: 'complete' (every solve finished; ``d_bnd`` is the largest verified radius and
    ``d_bnd_upper`` an ε with a checked counterexample (float64 for the MILP, onnxruntime for
    the 'verify' engine), within ``rel_tol``),
    'incomplete' (a solve timed out or was unknown: ``d_bnd`` is None and ``verified_radius``
    the largest radius proven before that), 'collapsed' (the whole clip domain gets the anchor
    label: there is no boundary), or 'no-adversarial' (no counterexample and the domain-wide
    solve did not finish).
    """

    status: str
    label: int
    d_bnd: Optional[float]
    d_bnd_upper: Optional[float]
    verified_radius: float
    d_adv: Optional[float]
    solves: int
    solve_seconds: list = field(default_factory=list)
    solve_statuses: list = field(default_factory=list)
    solve_eps: list = field(default_factory=list)
    pgd_seconds: float = 0.0
    seconds: float = 0.0
    engine: str = "milp"

    def to_dict(self) -> dict:
        d = asdict(self)
        s = self.solve_seconds
        d["milp_seconds_total"] = float(np.sum(s)) if s else 0.0
        d["milp_seconds_mean"] = float(np.mean(s)) if s else None
        return d


def milp_at(bc: ChainBounds, x0: np.ndarray, label: int, eps: float, clip, timeout: Optional[float]):
    """Exact MILP (CROWN big-M bounds of ``bc``, the graph engine on the chain) of "label stays
    the argmax on the L-inf ball of radius ``eps`` around ``x0``, clipped to ``clip``", on
    ``bc.network``. Returns ``(result, seconds)``."""
    prop = robustness_property(x0, eps, label, bc.network.n_outputs, clip)
    t = time.monotonic()
    bounds = bc.compute(prop.x_lower, prop.x_upper, "crown").pre_activation
    res = verify_milp(bc.network, prop, layer_bounds=bounds, time_limit=timeout)
    return res, time.monotonic() - t


#: How each ε of the d_bnd search is decided: 'milp' (one exact MILP, the paper's way) or
#: 'verify' (``vnnx verify --method auto``: PGD, CROWN, α-CROWN, ReLU branch and bound, then the
#: MILP; also complete, usually much faster on networks with many ReLUs).
ENGINES = ("milp", "verify")


@dataclass
class _Outcome:
    status: str
    x: Optional[np.ndarray] = None


class VerifyEngine:
    """Decides "``label`` stays the argmax on the clipped ε-ball" with :class:`vnnx.verify.Verifier`
    (the network exported once to a temporary ONNX file, since a 'sat' there is confirmed by
    onnxruntime on it)."""

    def __init__(self, network: Network) -> None:
        import tempfile

        from vnnx.io.onnx import load_onnx, network_to_onnx
        from vnnx.verify import Verifier

        self.network = network
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/network.onnx"
            network_to_onnx(network, path)
            self.verifier = Verifier(load_onnx(path))

    def at(self, x0: np.ndarray, label: int, eps: float, clip, timeout: Optional[float]):
        from vnnx.io.vnnlib import Spec

        prop = robustness_property(x0, eps, label, self.network.n_outputs, clip)
        spec = Spec("radius", self.network.n_inputs, self.network.n_outputs, [prop])
        t = time.monotonic()
        res = self.verifier.verify(spec, "auto", timeout)
        seconds = time.monotonic() - t
        if res.verdict == "sat" and res.counterexample is not None:
            return _Outcome("sat", np.asarray(res.counterexample.x, np.float64).ravel()), seconds
        return _Outcome(res.verdict if res.verdict in ("unsat", "timeout") else "unknown"), seconds


def boundary_distance(network: Network, x0: np.ndarray, label: Optional[int] = None, clip=(0.0, 1.0), *,
                      timeout: float = 30.0, rel_tol: float = 1e-3, adv: Optional[AdvResult] = None,
                      pgd_restarts: int = 10, pgd_steps: int = 50, engine: str = "milp",
                      narrow: bool = False, progress: Optional[Callable[[str], None]] = None) -> RadiusResult:
    """d_bnd of ``network`` at ``x0`` (L∞): binary search over ε, one exact decision per ε
    against every other label, each with ``timeout`` seconds: with ``engine='milp'`` an exact
    MILP (``vnnx.milp.verify_milp``, CROWN pre-activation bounds), with 'verify' the complete
    ``vnnx verify`` pipeline. The search starts from [0, d_adv] with d_adv from PGD.

    A decision that times out makes the result 'incomplete' (no d_bnd). It stops the search,
    unless ``narrow``: then the search goes on below the undecided ε, to the same tolerance,
    for the largest radius it can still prove (``verified_radius``) and any counterexample
    closer than d_adv (``d_bnd_upper``); the result stays 'incomplete'. ``progress``: called
    with one line of text after each decision."""
    if engine not in ENGINES:
        raise ConfigError(f"unknown radius engine {engine!r}; choose one of {', '.join(ENGINES)}")
    start = time.monotonic()
    x0 = np.asarray(x0, np.float64).ravel()
    if label is None:
        label = anchor_label(network, x0)
    if adv is None:
        adv = find_adversarial(network, x0, label, clip, restarts=pgd_restarts, steps=pgd_steps)
    if engine == "milp":
        bc = ChainBounds(network)

        def decide(eps: float):
            return milp_at(bc, x0, label, eps, clip, timeout)
    else:
        verify_engine = VerifyEngine(network)

        def decide(eps: float):
            return verify_engine.at(x0, label, eps, clip, timeout)
    times: list[float] = []
    statuses: list[str] = []
    eps_list: list[float] = []

    def solve(eps: float):
        res, seconds = decide(eps)
        times.append(seconds)
        statuses.append(res.status)
        eps_list.append(float(eps))
        if progress is not None:
            progress(f"decision {len(times)}: eps={eps:.6g} {res.status} ({seconds:.1f} s)")
        return res

    def done(status, d_bnd, upper, verified):
        return RadiusResult(status, label, d_bnd, upper, verified, adv.d_adv, len(times), times, statuses,
                            eps_list, adv.seconds, time.monotonic() - start, engine)

    lo = 0.0
    if adv.d_adv is None:
        eps_max = domain_radius(x0, clip)
        res = solve(eps_max)
        if res.status == "unsat":
            return done("collapsed", None, None, eps_max)
        if res.status != "sat":
            return done("no-adversarial", None, None, 0.0)
        hi = float(np.max(np.abs(res.x - x0)))
    else:
        hi = adv.d_adv
    top = hi          # upper end of the search: hi, or the lowest undecided ε below it
    undecided = False
    while top - lo > rel_tol * top:
        mid = (lo + top) / 2
        res = solve(mid)
        if res.status == "unsat":
            lo = mid
        elif res.status == "sat":
            hi = min(mid, float(np.max(np.abs(res.x - x0))))
            top = min(top, hi)
        else:
            undecided = True
            if not narrow:
                break
            top = mid
    if undecided:
        return done("incomplete", None, hi, lo)
    return done("complete", lo, hi, lo)


# ----------------------------------------------------------------------------- substitutes
@dataclass
class SubstituteResult:
    """A substitute and how it was made. ``relus_total``: ReLUs of the original; ``removed``:
    ReLUs replaced (deleted, merged or linear pass-through); ``relus_kept``: ReLUs of the
    substitute that are still nonlinear."""

    network: Network
    kind: str
    gamma: float
    label: int
    d_adv: float
    x_adv: np.ndarray
    replacements: dict
    info: FoldInfo
    iterations: int
    prune_seconds: float
    pgd_seconds: float
    ranking: str = "width"
    stable_removed: int = 0     # replaced ReLUs that CROWN proved stable on the ball when chosen

    def summary(self) -> dict:
        i = self.info
        removed = int(sum(int(r.removed.sum()) for r in self.replacements.values()))
        return {"kind": self.kind, "gamma": self.gamma, "label": self.label, "d_adv": self.d_adv,
                "relus_total": i.relus_total, "relus_removed": removed, "relus_kept": i.relus_kept,
                "neurons_deleted": i.deleted, "linear_passthrough": i.linear_passthrough,
                "layers_merged": i.layers_merged, "layers": len(self.network.layers),
                "ranking": self.ranking, "stable_removed": self.stable_removed,
                "iterations": self.iterations, "prune_seconds": self.prune_seconds,
                "pgd_seconds": self.pgd_seconds}


def _replacement_values(kind: str, z0: np.ndarray, za: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r0, ra = np.maximum(z0, 0), np.maximum(za, 0)
    if kind == "con":
        return np.zeros_like(z0), r0
    if kind == "act":
        return (z0 > 0).astype(np.float64), np.zeros_like(z0)
    if kind == "lin":
        dz = za - z0
        ok = np.abs(dz) > 1e-12
        slope = np.where(ok, (ra - r0) / np.where(ok, dz, 1.0), 0.0)
        return slope, r0 - slope * z0
    raise ConfigError(f"unknown substitute kind {kind!r}; choose one of {', '.join(KINDS)}")


def _crown_pre_activation(network: Network, lo: np.ndarray, hi: np.ndarray) -> dict:
    """CROWN pre-activation bounds {layer index: (l, u)} with every ReLU input refined, on the
    graph engine (:class:`.bounds.SubstituteBounds`; equal to the sparse CROWN used before, to
    round-off)."""
    return SubstituteBounds(network).pre_activation_bounds(lo, hi)


def make_substitute(network: Network, x0: np.ndarray, kind: str, gamma: float, *, gamma0: float = 0.5,
                    clip=(0.0, 1.0), label: Optional[int] = None, adv: Optional[AdvResult] = None,
                    pgd_restarts: int = 10, pgd_steps: int = 50, fixed_lines: bool = True,
                    ranking: str = "width") -> SubstituteResult:
    """Algorithm 1: PGD gives d_adv and x_adv; CROWN pre-activation bounds at ε = d_adv; remove
    the fraction ``gamma0`` of the remaining ReLUs with the smallest width u − l, recompute the
    bounds on the partial substitute, until ``gamma`` of the (replaceable) ReLUs are gone.

    ``ranking``: 'width' (the paper's) or 'stable-first': the ReLUs whose CROWN bounds on the
    ball (the same bounds as the widths) are one-signed (l >= 0 or u <= 0) go first, narrowest
    first, then the unstable ones by width. In the first round those bounds are f's, and there a
    stable ReLU's replacement is exact on the ball for every kind (x0 and x_adv lie in it, so
    each piece agrees with the ReLU); later rounds bound the partial substitute.

    The bounds are CROWN on the graph engine with every ReLU input refined
    (:class:`.bounds.SubstituteBounds`). ``fixed_lines`` (the default): f itself is bounded,
    with the replaced neurons on fixed lines (``SubstituteBounds``'s ``linear``), and the
    substitute is folded once at the end. ``fixed_lines=False`` folds each partial substitute
    (sparse matrices) and bounds it: the same bounds and the same ReLUs (tested), but 1.6–2.5x
    slower on the graph engine, whose dense layers the folded networks become (measured on
    ``specs/mnist_demo`` 2x50 and vc_backbone; with the earlier sparse engine folding was the
    faster one)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown substitute kind {kind!r}; choose one of {', '.join(KINDS)}")
    if not 0.0 <= gamma <= 1.0:
        raise ConfigError(f"--gamma must be in [0, 1], got {gamma}")
    if not 0.0 < gamma0 <= 1.0:
        raise ConfigError(f"--gamma0 must be in (0, 1], got {gamma0}")
    if ranking not in RANKINGS:
        raise ConfigError(f"unknown ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")
    if not network.is_piecewise_linear:
        raise ConfigError("substitutes need a piecewise-linear network (Dense, Conv, ReLU, MaxPool)")
    x0 = np.asarray(x0, np.float64).ravel()
    if label is None:
        label = anchor_label(network, x0)
    if adv is None:
        adv = find_adversarial(network, x0, label, clip, restarts=pgd_restarts, steps=pgd_steps)
    if adv.d_adv is None:
        raise VnnxError("PGD found no adversarial example in the whole input domain; d_adv (and the "
                        "substitute's bound box) is undefined")
    start = time.monotonic()
    cands = candidate_layers(network)
    z0 = network.forward(x0[None], return_all=True)
    za = network.forward(adv.x_adv[None], return_all=True)
    reps: dict[int, Replacement] = {}
    for k in cands:
        slope, icpt = _replacement_values(kind, z0[k][0], za[k][0])
        reps[k] = Replacement(np.zeros(slope.size, bool), slope, icpt)
    total = sum(layer_size(network.layers[k]) for k in cands)
    target = int(math.floor(gamma * total + 1e-9))
    domain = (np.full(network.n_inputs, clip[0], np.float64), np.full(network.n_inputs, clip[1], np.float64))
    lo, hi = _box(x0, adv.d_adv, clip)
    matrix_cache = MatrixCache()   # the layers' sparse matrices, kept across the foldings
    # With fixed lines, one engine on f for every iteration: the replaced neurons are its fixed
    # lines, so the substitute is folded once, at the end (the CROWN bounds of the folded
    # network, as a test checks).
    engine = SubstituteBounds(network) if fixed_lines else None
    sub, info = (network, None) if engine is not None else build_substitute(network, {}, domain, matrix_cache)
    n_removed, iterations, n_stable = 0, 0, 0
    while n_removed < target:
        iterations += 1
        ids, widths, stable = [], [], []
        if engine is not None:
            pre = engine.pre_activation_bounds(lo, hi, {k: (r.removed, r.slope, r.intercept)
                                                        for k, r in reps.items() if r.removed.any()})
            for k in cands:
                if k not in pre:
                    continue
                sel = np.flatnonzero(~reps[k].removed)
                ids += [(k, int(i)) for i in sel]
                widths.append(pre[k][1][sel] - pre[k][0][sel])
                stable.append((pre[k][0][sel] >= 0) | (pre[k][1][sel] <= 0))
        else:
            pre = _crown_pre_activation(sub, lo, hi)
            for new_k, (orig_k, idx, nonlinear) in info.neuron_map.items():
                if orig_k not in reps or new_k not in pre:
                    continue
                l, u = pre[new_k]
                sel = np.flatnonzero(nonlinear)
                ids += [(orig_k, int(idx[j])) for j in sel]
                widths.append(u[sel] - l[sel])
                stable.append((l[sel] >= 0) | (u[sel] <= 0))
        if not ids:
            break
        widths = np.concatenate(widths)
        stable = np.concatenate(stable)
        remaining = len(ids)
        n_now = min(max(1, math.ceil(gamma0 * remaining)), target - n_removed, remaining)
        order = np.lexsort((widths, ~stable)) if ranking == "stable-first" else np.argsort(widths, kind="stable")
        for j in order[:n_now]:
            k, i = ids[j]
            reps[k].removed[i] = True
            n_stable += int(stable[j])
        n_removed += n_now
        if engine is None:
            sub, info = build_substitute(network, {k: r for k, r in reps.items() if r.removed.any()}, domain,
                                         matrix_cache)
    if engine is not None:
        sub, info = build_substitute(network, {k: r for k, r in reps.items() if r.removed.any()}, domain,
                                     matrix_cache)
    return SubstituteResult(sub, kind, float(gamma), label, float(adv.d_adv), adv.x_adv,
                            {k: r for k, r in reps.items() if r.removed.any()}, info, iterations,
                            time.monotonic() - start, adv.seconds, ranking, n_stable)


def substitute_collapsed(network: Network, x0: np.ndarray, label: int, clip=(0.0, 1.0),
                         timeout: float = 10.0) -> Optional[bool]:
    """Whether the whole clip domain gets ``label`` (a collapsed substitute has no boundary):
    True when CROWN or the MILP proves it, False when the MILP finds another label, None when
    the MILP ran out of time."""
    x0 = np.asarray(x0, np.float64).ravel()
    prop = robustness_property(x0, domain_radius(x0, clip), label, network.n_outputs, clip)
    C = np.concatenate([A for A, _ in prop.clauses])
    bounds = ChainBounds(network).compute(prop.x_lower, prop.x_upper, "crown", C)
    if np.all(bounds.lower > 0):
        return True
    res = verify_milp(network, prop, layer_bounds=bounds.pre_activation, time_limit=timeout)
    return {"unsat": True, "sat": False}.get(res.status)


# ------------------------------------------------------------------ certified bracket (issue 24)
#: CROWN steps of the lower end's search (bisection between 0 and the estimate).
BRACKET_CROWN_STEPS = 12


@dataclass
class Bracket:
    """Where f's true d_bnd lies, whatever the substitute says: ``lower`` is a radius proven on f
    itself (``lower_by``: 'crown' or 'check'), ``upper`` the distance of a counterexample to f
    (``upper_by``: 'pgd' or 'check'; None when none was found). ``estimate_raw`` is the
    substitute's d_bnd, ``estimate`` the same clamped into [lower, upper]. ``check``: the one
    decision on f at the raw estimate (None with ``check=False``)."""

    lower: float
    lower_by: str
    upper: Optional[float]
    upper_by: Optional[str]
    estimate_raw: Optional[float]
    estimate: Optional[float]
    check: Optional[dict]
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


def estimate_error(bracket: Bracket) -> Optional[float]:
    """How far f's true d_bnd can lie from the raw estimate, given the bracket, relative to the
    estimate: ``max(|estimate - lower|, |upper - estimate|) / estimate`` (None without an
    estimate or an upper end). The bracket proves it; the true error is at most this."""
    e = bracket.estimate_raw
    if e is None or e <= 0 or bracket.upper is None:
        return None
    return max(abs(e - bracket.lower), abs(bracket.upper - e)) / e


def crown_radius(network: Network, x0: np.ndarray, label: int, hi: float, clip=(0.0, 1.0),
                 steps: int = BRACKET_CROWN_STEPS) -> float:
    """The largest ε in a bisection of [0, ``hi``] (``steps`` CROWN calls) at which CROWN proves
    ``label`` the argmax on the clipped ε-ball of ``network``: a sound lower bound on d_bnd."""
    from vnnx.verify import refuted_clauses

    bc = ChainBounds(network)
    lo, top = 0.0, float(hi)
    for _ in range(steps):
        mid = (lo + top) / 2
        prop = robustness_property(x0, mid, label, network.n_outputs, clip)
        C = np.concatenate([a for a, _ in prop.clauses])
        res = bc.compute(prop.x_lower, prop.x_upper, "crown", C)
        if all(refuted_clauses(res.lower, prop.clauses)):
            lo = mid
        else:
            top = mid
    return lo


def certify_estimate(network: Network, x0: np.ndarray, label: int, estimate: Optional[float],
                     d_adv: Optional[float], clip=(0.0, 1.0), *, check: bool = True,
                     timeout: float = 30.0) -> Bracket:
    """A certified bracket around a substitute's d_bnd ``estimate`` for ``network`` (f) at
    ``x0``: the lower end from CROWN on f (:func:`crown_radius` up to the estimate or d_adv), the
    upper end from f's own PGD counterexample (``d_adv``); with ``check``, one complete decision
    on f at the estimate (``vnnx verify``, ``timeout`` seconds) moves the lower end up to it
    (unsat) or the upper end down to it (sat, a witness onnxruntime confirmed)."""
    start = time.monotonic()
    upper, upper_by = (float(d_adv), "pgd") if d_adv is not None else (None, None)
    reach = estimate if estimate is not None else (upper if upper is not None else domain_radius(x0, clip))
    lower, lower_by = crown_radius(network, x0, label, reach, clip), "crown"
    decision = None
    if check and estimate is not None and estimate > lower:
        outcome, seconds = VerifyEngine(network).at(x0, label, float(estimate), clip, timeout)
        decision = {"epsilon": float(estimate), "verdict": outcome.status, "seconds": round(seconds, 3)}
        if outcome.status == "unsat":
            lower, lower_by = float(estimate), "check"
        elif outcome.status == "sat" and outcome.x is not None:
            dist = float(np.max(np.abs(outcome.x - x0)))
            decision["counterexample_distance"] = dist
            if upper is None or dist < upper:
                upper, upper_by = dist, "check"
    clamped = None
    if estimate is not None:
        clamped = max(float(estimate), lower)
        if upper is not None:
            clamped = min(clamped, upper)
    return Bracket(lower, lower_by, upper, upper_by, estimate, clamped, decision, time.monotonic() - start)
