"""Lemma 1 for ``act`` substitutes: the substitute equals f on the L∞ ball of radius δ around x0,
where δ is the smallest radius at which some replaced neuron of f changes its activation state.

δ here is a *sound lower bound*: the largest ε of a bisection at which no replaced neuron can
flip, proved first with CROWN (cheap) and then pushed up with exact MILPs on the network
truncated after each affine layer with replaced neurons (one clause per neuron: ``z_i <= 0`` for
neurons active at x0, ``z_i >= 0`` for inactive ones; touching 0 counts as a flip, which only
lowers δ). A MILP that times out stops the bisection at the last proven radius.

Then: f is robust at ``min(r_sub, δ)`` whenever the substitute is verified at r_sub, and a
substitute counterexample within δ is one of f too, so d_bnd(f) is bracketed by the
substitute's search when its upper end is <= δ.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from vnnx.engine import ChainBounds
from vnnx.io.vnnlib import Property
from vnnx.milp import verify_milp
from vnnx.network import Network

from .core import RadiusResult, SubstituteResult, _box, domain_radius


def _pruned(network: Network, x0: np.ndarray, sub: SubstituteResult) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    z0 = network.forward(x0[None], return_all=True)
    out = {}
    for k, rep in sub.replacements.items():
        idx = np.flatnonzero(rep.removed)
        out[k] = (idx, z0[k][0][idx] > 0)
    return out


def flip_radius(network: Network, x0: np.ndarray, sub: SubstituteResult, clip=(0.0, 1.0), *,
                timeout: float = 10.0, rel_tol: float = 1e-2) -> dict:
    """A sound lower bound on δ (see the module notes)."""
    start = time.monotonic()
    x0 = np.asarray(x0, np.float64).ravel()
    pruned = _pruned(network, x0, sub)
    eps_max = domain_radius(x0, clip)
    if not pruned:
        return {"delta": eps_max, "method": "none", "solves": 0, "seconds": 0.0}
    bc = ChainBounds(network)

    def crown_ok(eps: float) -> bool:
        pre = bc.compute(*_box(x0, eps, clip), "crown").pre_activation
        for k, (idx, active) in pruned.items():
            lo, up = pre[k]
            if np.any(np.where(active, lo[idx] < 0, up[idx] > 0)):
                return False
        return True

    lo, hi = 0.0, eps_max
    if crown_ok(hi):
        return {"delta": eps_max, "method": "crown", "solves": 0, "seconds": time.monotonic() - start}
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if crown_ok(mid) else (lo, mid)
    delta_crown = lo
    solves = 0

    def milp_ok(eps: float) -> Optional[bool]:
        nonlocal solves
        xl, xu = _box(x0, eps, clip)
        pre = bc.compute(xl, xu, "crown").pre_activation
        for k, (idx, active) in pruned.items():
            n_k = pre[k][0].size
            net_k = Network(network.input_shape, (n_k,), list(network.layers[:k + 1]))
            clauses = []
            for i, act in zip(idx, active):
                a = np.zeros((1, n_k))
                a[0, i] = 1.0 if act else -1.0
                clauses.append((a, np.zeros(1)))
            bounds = {j: b for j, b in pre.items() if j < k}
            solves += 1
            res = verify_milp(net_k, Property(xl, xu, clauses), layer_bounds=bounds, time_limit=timeout)
            if res.status == "sat":
                return False
            if res.status != "unsat":
                return None
        return True

    lo, hi = delta_crown, eps_max
    method = "crown"
    while hi - lo > rel_tol * hi:
        mid = (lo + hi) / 2
        ok = milp_ok(mid)
        if ok is None:
            break
        if ok:
            lo, method = mid, "milp"
        else:
            hi = mid
    return {"delta": lo, "delta_crown": delta_crown, "method": method, "solves": solves,
            "seconds": time.monotonic() - start}


def act_certificate(network: Network, x0: np.ndarray, sub: SubstituteResult, res: RadiusResult,
                    clip=(0.0, 1.0), timeout: float = 10.0) -> dict:
    """What Lemma 1 proves about f from the ``act`` substitute's radius search."""
    d = flip_radius(network, x0, sub, clip, timeout=timeout)
    delta = d["delta"]
    out = dict(d)
    out["f_verified_radius"] = min(res.verified_radius, delta)
    out["certifies_f"] = bool(res.status == "complete" and res.d_bnd_upper is not None
                              and res.d_bnd_upper <= delta)
    if out["certifies_f"]:
        out["f_d_bnd_bracket"] = [res.verified_radius, res.d_bnd_upper]
    return out
