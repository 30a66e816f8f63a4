"""The search loop of a branch and bound over activation splits (:class:`BabSearch`), and the
helpers its subclasses share. The bounds live in the subclass: :class:`vnnx.graph_bab.GraphBab`
(β-CROWN on the bound graph).

Only a fully closed tree is reported as 'unsat'; a point is reported as a counterexample only
after the caller's check (onnxruntime on the original model) accepts it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

# A domain is dropped as infeasible only when some neuron's lower bound exceeds its upper bound by
# more than this, relative to the bounds' size: float64 round-off makes two sound bounds of a
# neuron whose value is fixed (a zero-width input range) cross by ~1e-14, and such a domain is
# feasible. (Dropping it on any crossing gave a wrong 'unsat' on VNN-COMP 2022 collins_rul_cnn.)
EMPTY_TOL = 1e-6


def intersect_interval(lo1: torch.Tensor, up1: torch.Tensor, lo2: torch.Tensor, up2: torch.Tensor):
    """The intersection of two sound intervals of the same values. Both hold the true value, so
    they overlap in exact arithmetic; where round-off makes the intersection cross, the span
    between its two ends is kept (it holds the true value), never an empty interval."""
    lo, up = torch.maximum(lo1, lo2), torch.minimum(up1, up2)
    return torch.minimum(lo, up), torch.maximum(lo, up)


def infeasible(lo: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """(D,) whether some neuron of each domain has ``lower > upper`` beyond round-off (the split
    constraints contradict a sound bound, so the domain holds no input)."""
    return (lo - up > EMPTY_TOL * (1.0 + torch.maximum(lo.abs(), up.abs()))).any(1)


@dataclass


@dataclass
class BabResult:
    status: str                     # 'unsat' | 'sat' | 'timeout' | 'unknown'
    x: Optional[np.ndarray] = None  # counterexample accepted by the caller's check
    domains: int = 0                # domains bounded
    max_open: int = 0               # largest number of open domains at once
    seconds: float = 0.0
    message: str = ""


def pick_splits(scores: torch.Tensor, n_splits: int):
    """The entries to split per domain from ``scores`` (D, entries; < 0: nothing to split there):
    ``(live, exhausted, top)``: the domains with something left, the mask of those without, and
    the ``k <= n_splits`` best-scored entries of each live domain (D', k), None when none is live."""
    n_unstable = (scores >= 0).sum(1)
    exhausted = n_unstable == 0
    live = torch.nonzero(~exhausted).flatten()
    if live.numel() == 0:
        return live, exhausted, None
    k = int(min(n_splits, int(n_unstable[live].min())))
    return live, exhausted, scores[live].topk(k, dim=1).indices


class BabSearch:
    """The search loop of a branch and bound over activation splits
    (:class:`vnnx.graph_bab.GraphBab`). A subclass sets ``iterations``,
    ``batch``, ``margin``, ``max_domains`` and gives:

    * ``_root(layer_bounds, deadline)``: the root domain batch (length 1);
    * ``_optimise(dom, iterations)``: bound ``dom`` in place (α/β steps), return (what branching
      reads, the input points that minimise the bound);
    * ``_branch(dom, seen, n_splits)``: (children or None, mask of parents with nothing to split);
    * ``_empty(children)``: mask of children whose splits contradict their bounds;
    * ``_solve_leaf(dom, d)``: ('closed' | 'open', candidate point) for a fully split domain;
    * ``_try_points(points)``: a counterexample the caller's check accepts, or None.

    Domain batches have ``bound`` (D,), ``take(idx)`` and a static ``cat(parts)``."""

    _probed = None
    _deadline: Optional[float] = None
    check: Optional[Callable[[np.ndarray], bool]] = None

    def _offer(self, points: np.ndarray, value: np.ndarray) -> Optional[np.ndarray]:
        """The first of at most 8 ``points`` whose clause ``value`` (largest row of ``A y - b``)
        is ``<= 0`` that the caller's check accepts, or None."""
        for i in np.nonzero(value <= 0)[0][:8]:
            x = points[i].copy()
            if self.check(x):
                return x
        return None

    @staticmethod
    def _where_rows(mask: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
        """``new`` where ``mask`` (its leading axes: domains, or domains x rows), else ``old``."""
        return torch.where(mask.reshape(mask.shape + (1,) * (new.dim() - mask.dim())), new, old)

    def probe(self, layer_bounds: Optional[dict] = None, deadline: Optional[float] = None) -> float:
        """Bound the root (α/β optimised) and try the box corners that minimise it as
        counterexamples. Returns the root's lower bound (> margin: the clause is refuted);
        ``run`` continues from here. ``layer_bounds``: sound bounds to intersect with the root's
        (chains: {network layer index: (lower, upper)}; graphs: {node: (lower, upper)})."""
        self._deadline = deadline
        with torch.no_grad():
            root = self._root(layer_bounds, deadline)
        seen, corners = self._optimise(root, self.iterations)
        x = self._try_points(corners)
        self._probed = (root, seen, x)
        return float(root.bound[0])

    @property
    def counterexample(self) -> Optional[np.ndarray]:
        """The counterexample the probe found, if any."""
        return None if self._probed is None else self._probed[2]

    def run(self, layer_bounds: Optional[dict] = None, deadline: Optional[float] = None,
            progress: Optional[Callable[[dict], None]] = None) -> BabResult:
        """``deadline``: ``time.monotonic()`` value. See :meth:`probe` for ``layer_bounds``."""
        t0 = time.monotonic()
        self._deadline = deadline
        res = BabResult("unknown")
        if self._probed is None:
            self.probe(layer_bounds, deadline)
        root, seen, x = self._probed
        res.domains = 1
        if x is not None:
            return BabResult("sat", x, 1, 1, time.monotonic() - t0)
        open_ = root if float(root.bound[0]) <= self.margin else None
        pending_seen = seen   # the root's, valid while the root is the only open domain
        while open_ is not None and len(open_):
            if deadline is not None and time.monotonic() > deadline:
                res.status = "timeout"
                break
            if len(open_) > self.max_domains:
                res.status = "unknown"
                res.message = f"more than {self.max_domains} open domains"
                break
            # The worst domains first (their bounds are the furthest from closing).
            order = torch.argsort(open_.bound)
            half = max(1, self.batch // 2)
            take, rest = order[:half], order[half:]
            batch = open_.take(take)
            keep = open_.take(rest) if rest.numel() else None
            if pending_seen is None or len(open_) != 1:
                with torch.no_grad():
                    batch_seen, _ = self._optimise(batch, 0)
            else:
                batch_seen = pending_seen
            n_splits = max(1, min(3, int(np.log2(max(1, self.batch // max(1, len(batch)))))))
            with torch.no_grad():
                children, exhausted = self._branch(batch, batch_seen, n_splits)
            leaves_open = []
            for d in torch.nonzero(exhausted).flatten().tolist():
                status, point = self._solve_leaf(batch, d)
                if status == "open":
                    if point is not None:
                        x = self._try_points(torch.as_tensor(point).view(1, -1))
                        if x is not None:
                            res.status, res.x = "sat", x
                            break
                    leaves_open.append(d)
            if res.status == "sat":
                break
            if leaves_open:
                res.message = "a fully split domain could not be closed"
                res.status = "unknown"
                break
            if children is None:
                open_, pending_seen = keep, None
                continue
            empty = self._empty(children)
            _, corners = self._optimise(children, self.iterations)
            res.domains += len(children)
            x = self._try_points(corners)
            if x is not None:
                res.status, res.x = "sat", x
                break
            alive = (children.bound <= self.margin) & ~empty
            survivors = children.take(torch.nonzero(alive).flatten())
            open_ = type(children).cat([keep, survivors])
            pending_seen = None
            res.max_open = max(res.max_open, len(open_) if open_ is not None else 0)
            if progress is not None:
                progress({"domains": res.domains, "open": len(open_) if open_ is not None else 0,
                          "worst": float(open_.bound.min()) if open_ is not None else None,
                          "seconds": time.monotonic() - t0})
        else:
            res.status = "unsat"
        res.seconds = time.monotonic() - t0
        return res
