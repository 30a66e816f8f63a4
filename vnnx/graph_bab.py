"""Activation-splitting branch and bound with β-CROWN bounds on the bound graph.

The graph counterpart of :mod:`vnnx.bab` (same search, same interface): any ONNX graph the
engine bounds (residual sums, Concat, MaxPool, ...) whose operators include a splittable one
(``Operator.splittable``: ReLU and LeakyReLU, whose input split at 0 makes them linear; Sigmoid
and Tanh, split at ``Operator.split_point``, see "S-shaped activations" below).

A domain is a set of splits ``z >= 0`` / ``z <= 0`` on entries of the nodes those operators
read. Its bound is one backward pass of :class:`vnnx.engine.GraphEngine` with

* the split entries' bounds clamped to their side (the relaxation is then exact there);
* optimisable lower slopes α per activation (α-CROWN, Xu et al. 2021);
* Lagrange multipliers β >= 0 for the split constraints (β-CROWN, Wang et al. 2021): the pass
  bounds ``c·y - Σ β_j s_j z_j``, which is ``<= c·y`` on every input of the domain because
  ``s_j z_j >= 0`` there (``s_j = +1`` active, -1 inactive). Every α in range and β >= 0 gives a
  sound bound; the optimiser (Adam, projected) only changes how tight it is.

Intermediate bounds of a child are its parent's (the root's CROWN bounds) with the new split
clamped. A domain with no unstable unsplit entry left is decided by the graph MILP over the
box with the domain's bounds (every split operator is then linear; MaxPool keeps its exact
encoding); it needs a piecewise-linear graph, else the domain stays open.

Branching: BaBSR-like, the unsplit unstable entry whose upper-line intercept costs the bound most
(|negative coefficient on the activation's output| x ``u(-l)/(u-l)``, summed over rows).

S-shaped activations (operators that are not piecewise linear): a split of entry z at
``t = op.split_point(lo, hi)`` makes two domains, ``z in [lo, t]`` and ``z in [t, hi]``; an
entry may be split again on a later round, and stops being split below ``op.split_min_width``.
Each side's relaxation is recomputed on its narrower range (sound there, and tighter: the gap
between the parallel lines shrinks about as the width squared). β multiplies the split bounds
themselves, ``β_lo (z - lo) >= 0`` and ``β_hi (hi - z) >= 0`` on the entries whose lower / upper
bound a split set, so the pass adds the constant ``Σ β_lo lo - β_hi hi`` (zero for ReLU, whose
split point is 0). When cheap (:attr:`GraphBab.refresh_intermediate`) the later nodes' bounds
are recomputed after each round of splits. A domain of a graph that is not piecewise linear never
goes to the MILP: it is closed only by its bound, and one left with nothing to split ends the
search 'unknown'. Branching: the entry whose split narrows its relaxation's gap the most, times
the coefficient mass on the activation's output.

Only a fully closed tree is reported as 'unsat'; a point is reported as a counterexample only
after the caller's check (onnxruntime on the original model) accepts it.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
import torch

from vnnx.bab import BabSearch, infeasible, intersect_interval, pick_splits
from vnnx.errors import VnnxError

#: Branching rules: 'babsr' (the score below), 'fsb' (filtered smart branching: the FSB_CANDIDATES
#: best-scored entries of each domain are each split and their two children bounded by one
#: backward pass with the parent's α and β; the entry whose worse child has the best bound wins).
BRANCHING = ("babsr", "fsb")
FSB_CANDIDATES = 4
# Entries (domains x rows x largest node size) one refresh pass of intermediate bounds holds.
REFRESH_ENTRIES = 2 ** 23


def split_nodes(graph) -> dict[int, list[int]]:
    """``{node k: [splittable operator nodes reading k]}``: the nodes whose entries can be split
    (inputs of ReLU / LeakyReLU, and of Sigmoid / Tanh)."""
    out: dict[int, list[int]] = {}
    for j, node in enumerate(graph.nodes[1:], 1):
        if getattr(node.op, "splittable", False):
            out.setdefault(node.inputs[0], []).append(j)
    return out


class _Domains:
    """A batch of domains: dicts of tensors with the domain index leading."""

    FIELDS = ("lo", "hi", "splits", "alphas", "betas")

    def __init__(self, lo, hi, splits, alphas, betas, bound):
        self.lo, self.hi, self.splits, self.alphas, self.betas, self.bound = lo, hi, splits, alphas, betas, bound

    def __len__(self) -> int:
        return self.bound.shape[0]

    def take(self, idx) -> "_Domains":
        return _Domains(*({k: t[idx] for k, t in getattr(self, f).items()} for f in self.FIELDS), self.bound[idx])

    def clone(self) -> "_Domains":
        return _Domains(*({k: t.clone() for k, t in getattr(self, f).items()} for f in self.FIELDS),
                        self.bound.clone())

    @staticmethod
    def cat(parts) -> Optional["_Domains"]:
        parts = [p for p in parts if p is not None and len(p)]
        if not parts:
            return None
        return _Domains(*({k: torch.cat([getattr(p, f)[k] for p in parts]) for k in getattr(parts[0], f)}
                          for f in _Domains.FIELDS), torch.cat([p.bound for p in parts]))


class GraphBab(BabSearch):
    """Branch and bound for ``min_x c_r·y(x) - d_r > margin for some row r`` over an input box,
    on ``engine``'s graph. Same interface as :class:`vnnx.bab.ReluBab` (``probe``, ``run``,
    ``counterexample``).

    ``check``: called with candidate points (n_in,) whose output violates the clause; returns
    True when the caller accepts the point as a counterexample. ``leaf_time``: seconds the MILP
    may take on one fully split domain."""

    #: Recompute later nodes' bounds after each round of splits of S-shaped activations
    #: (:meth:`_refresh`): True, False, or None (auto: only when its rows, two per entry of the
    #: kept nodes after the first split node, are at most 4x the rows the α/β steps bound,
    #: ``(iterations + 1) x clause rows``). It closed trees in fewer domains and less time on
    #: 2-input 10x10 nets and on the 3x20 MNIST MLPs; on the 6x100 ones it cost 6-10x the
    #: domains per second and closed fewer clauses in the same time.
    refresh_intermediate: Optional[bool] = None

    def __init__(self, engine, x_lower: np.ndarray, x_upper: np.ndarray, A: np.ndarray, b: np.ndarray,
                 *, margin: float = 1e-7, batch: int = 256, iterations: int = 20, lr_alpha: float = 0.1,
                 lr_beta: float = 0.05, max_domains: int = 200_000,
                 check: Optional[Callable[[np.ndarray], bool]] = None, leaf_time: float = 10.0,
                 branching: str = "babsr") -> None:
        if branching not in BRANCHING:
            raise VnnxError(f"unknown branching rule {branching!r}; choose one of {', '.join(BRANCHING)}")
        self.branching = branching
        g = engine.graph
        self.engine, self.graph = engine, g
        self.split_at = split_nodes(g)
        if not self.split_at:
            raise VnnxError("the network has no activation to split; the branch and bound needs one")
        self.split_keys = sorted(self.split_at)
        # Split nodes read by an operator that is not piecewise linear (Sigmoid, Tanh): their
        # entries are split at the operator's split_point, possibly many times, and each split
        # narrows the range the relaxation is computed on (see _branch).
        self.smooth_op = {}
        for k in self.split_keys:
            smooth = [g.nodes[j].op for j in self.split_at[k] if not g.nodes[j].op.piecewise_linear]
            if smooth:
                self.smooth_op[k] = smooth[0]
        self.max_size = max(int(np.prod(n.shape)) for n in g.nodes)
        # Where each split node's entries start in the flattened scores (split_keys order).
        self.offsets = np.cumsum([0] + [int(np.prod(g.nodes[k].shape)) for k in self.split_keys])
        # The nodes whose bounds a backward pass reads: every input of a nonlinear operator.
        # (node 0, the input box, too: input splits shrink it, and the pass concretises on it).
        self.keep = sorted(set(g.nonlinear_inputs()) | set(self.split_keys) | {0})
        dev = engine.device
        self.x_lo = torch.as_tensor(np.asarray(x_lower, dtype=np.float64).reshape(1, -1), device=dev)
        self.x_up = torch.as_tensor(np.asarray(x_upper, dtype=np.float64).reshape(1, -1), device=dev)
        self.A = torch.as_tensor(np.atleast_2d(np.asarray(A, dtype=np.float64)), device=dev)
        self.b = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1), device=dev)
        if self.A.shape[1] != g.n_outputs:
            raise VnnxError(f"clause has {self.A.shape[1]} output columns, the network {g.n_outputs}")
        self.k = self.A.shape[0]
        self.c = self.A.reshape((1, self.k) + g.output_shape)
        self.alpha_nodes = [j for j in sorted(g.ancestors(g.output)) if j and g.nodes[j].op.has_alpha]
        self.margin = margin
        self.batch = batch
        self.iterations = iterations
        self.lr_alpha, self.lr_beta = lr_alpha, lr_beta
        self.max_domains = max_domains
        self.check = check
        self.leaf_time = leaf_time

    # ----------------------------------------------------------------- bounds
    def _bounds_list(self, dom: _Domains) -> list:
        out: list = [None] * len(self.graph.nodes)
        for k in self.keep:
            out[k] = (dom.lo[k], dom.hi[k])
        return out

    def _optimise(self, dom: _Domains, iterations: int):
        """Optimise α and β of ``dom`` for its final bound; updates it in place. Returns the
        coefficients on each splittable operator's output at the best point (for branching) and
        the input-box corners that minimise the bound (counterexample candidates, (D, k, n_in))."""
        g = self.graph
        D = len(dom)
        c = self.c.expand((D,) + tuple(self.c.shape[1:]))
        bounds = self._bounds_list(dom)
        alphas = {j: a.clone().requires_grad_(True) for j, a in dom.alphas.items()}
        betas = {k: b.clone().requires_grad_(True) for k, b in dom.betas.items()}
        signs = {k: s.unsqueeze(1).to(self.A.dtype) for k, s in dom.splits.items() if k not in self.smooth_op}
        sides = self._smooth_sides(dom)
        opt = None
        if iterations > 0:
            opt = torch.optim.Adam([{"params": list(alphas.values()), "lr": self.lr_alpha},
                                    {"params": list(betas.values()), "lr": self.lr_beta}], maximize=True)
        best = torch.full((D, self.k), -np.inf, dtype=self.A.dtype, device=self.A.device)
        best_alpha = {j: a.detach().clone() for j, a in dom.alphas.items()}
        best_beta = {k: b.detach().clone() for k, b in dom.betas.items()}
        best_seen: Optional[dict] = None
        best_in = None
        relu_nodes = [j for js in self.split_at.values() for j in js]
        for it in range(max(1, iterations + 1)):
            with torch.enable_grad():
                info: dict = {}
                extra = {k: -betas[k] * signs[k] for k in self.split_keys if k not in self.smooth_op}
                for k, (m_lo, m_hi, lo_k, hi_k) in sides.items():
                    extra[k] = betas[k][:, :, 1] * m_hi - betas[k][:, :, 0] * m_lo
                lower = self.engine.backward(g.output, c, bounds, alphas, extra=extra, info=info) - self.b
                for k, (m_lo, m_hi, lo_k, hi_k) in sides.items():
                    # The constant of β (z - lo) >= 0 and β (hi - z) >= 0 (split at lo or hi).
                    const = betas[k][:, :, 0] * m_lo * lo_k - betas[k][:, :, 1] * m_hi * hi_k
                    lower = lower + const.flatten(2).sum(-1)
                with torch.no_grad():
                    better = lower > best
                    row_better = better.any(-1)
                    best = torch.where(better, lower, best)
                    for store, params in ((best_alpha, alphas), (best_beta, betas)):
                        for key, p in params.items():
                            store[key] = self._where_rows(better, p.detach(), store[key])
                    seen = {j: _detach(info.get(j), D, self.k, g.nodes[j].shape, lower) for j in relu_nodes}
                    x_in = _detach(info.get("input"), D, self.k, g.input_shape, lower)
                    if best_seen is None:
                        best_seen, best_in = seen, x_in
                    else:
                        for j in relu_nodes:
                            best_seen[j] = self._where_rows(row_better, seen[j], best_seen[j])
                        best_in = self._where_rows(row_better, x_in, best_in)
                if it == iterations or opt is None or (
                        self._deadline is not None and time.monotonic() > self._deadline):
                    break
                opt.zero_grad()
                lower.sum().backward()
                opt.step()
            with torch.no_grad():
                for j, a in alphas.items():
                    g.nodes[j].op.alpha_clamp(a)
                for b in betas.values():
                    b.clamp_(min=0)
        dom.alphas, dom.betas = best_alpha, best_beta
        dom.bound = torch.maximum(dom.bound, best.max(-1).values)
        flat = best_in.reshape(D, self.k, -1)
        corners = torch.where(flat > 0, dom.lo[0].reshape(D, 1, -1), dom.hi[0].reshape(D, 1, -1))
        return best_seen, corners

    def _smooth_sides(self, dom: _Domains) -> dict:
        """Per smooth split node: masks (D, 1, *shape) of entries whose lower / upper bound a
        split set, and those bounds, (D, 1, *shape)."""
        out = {}
        for k in self.smooth_op:
            sp = dom.splits[k].unsqueeze(1)
            out[k] = (((sp & 1) != 0).to(self.A.dtype), ((sp & 2) != 0).to(self.A.dtype),
                      dom.lo[k].unsqueeze(1), dom.hi[k].unsqueeze(1))
        return out

    # --------------------------------------------------------------- branching
    def _smooth_score(self, k: int, dom: _Domains, seen: dict) -> torch.Tensor:
        """Score of splitting each entry of smooth node ``k`` (-1 where it is narrower than the
        operator's ``split_min_width``): the coefficient mass on the operator's output times how
        much the split narrows the relaxation's gap on its worse side (``op.gap``: the S-shaped
        operators' parallel lines)."""
        op = self.smooth_op[k]
        lo, hi = dom.lo[k], dom.hi[k]
        width = hi - lo
        t = op.split_point(lo, hi)
        gain = (op.gap(lo, hi) - torch.maximum(op.gap(lo, t), op.gap(t, hi))).clamp(min=0)
        lam = sum(seen[j].abs().sum(1) for j in self.split_at[k])
        sc = lam * gain + 1e-9 * width
        return torch.where(width > op.split_min_width, sc, torch.full_like(sc, -1.0)).reshape(len(dom), -1)

    def _scores(self, dom: _Domains, seen: dict) -> torch.Tensor:
        """(D, total entries) score per unsplit unstable entry (-1 elsewhere), split nodes in
        ``split_keys`` order, flattened."""
        parts = []
        for k in self.split_keys:
            if k in self.smooth_op:
                parts.append(self._smooth_score(k, dom, seen))
                continue
            lo, hi, sp = dom.lo[k], dom.hi[k], dom.splits[k]
            unstable = (lo < 0) & (hi > 0) & (sp == 0)
            icpt = torch.where(unstable, hi * (-lo) / (hi - lo).clamp(min=1e-300), torch.zeros_like(lo))
            lam = sum(seen[j].clamp(max=0).abs().sum(1) for j in self.split_at[k])
            sc = lam * icpt + 1e-9 * (hi - lo)
            parts.append(torch.where(unstable, sc, torch.full_like(sc, -1.0)).reshape(len(dom), -1))
        return torch.cat(parts, 1)

    def _branch(self, dom: _Domains, seen: dict, n_splits: int):
        """Children of every domain in ``dom``: ``2 ** n_splits`` each, split on the best-scored
        entries. Returns the children and a mask of parents with nothing left to split."""
        flat = self._scores(dom, seen)
        if self.branching == "fsb":
            flat = self._fsb(dom, flat)
        live, exhausted, top = pick_splits(flat, n_splits)
        if top is None:
            return None, exhausted
        children = dom.take(live)
        for t in range(top.shape[1]):
            parts = []
            for sign in (1, -1):
                c = children.clone()
                self._apply_split(c, top[:, t].repeat(len(c) // top.shape[0]), sign)
                parts.append(c)
            children = _Domains.cat(parts)
        if self.smooth_op and self._refreshing():
            self._refresh(children)
        return children, exhausted

    def _apply_split(self, c: _Domains, p: torch.Tensor, sign: int) -> None:
        """Split entry ``p[i]`` (an index into the flattened split nodes, ``split_keys`` order) of
        each domain ``i`` of ``c`` to its ``sign`` side, in place."""
        offsets = self.offsets
        rows = torch.arange(len(c), device=p.device)
        for n, key in enumerate(self.split_keys):
            sel = (p >= int(offsets[n])) & (p < int(offsets[n + 1]))
            if not bool(sel.any()):
                continue
            r, e = rows[sel], p[sel] - int(offsets[n])
            sp, lo, hi = (x.reshape(len(c), -1) for x in (c.splits[key], c.lo[key], c.hi[key]))
            if key in self.smooth_op:
                # An S-shaped activation's input: split at its split point, each side marked
                # (bit 1: lower bound set, bit 2: upper bound set), possibly again later.
                at = self.smooth_op[key].split_point(lo[r, e], hi[r, e])
                if sign > 0:
                    lo[r, e], sp[r, e] = at, sp[r, e] | 1
                else:
                    hi[r, e], sp[r, e] = at, sp[r, e] | 2
                continue
            sp[r, e] = sign
            if sign > 0:
                lo[r, e] = lo[r, e].clamp(min=0)
            else:
                hi[r, e] = hi[r, e].clamp(max=0)

    def _fsb(self, dom: _Domains, flat: torch.Tensor) -> torch.Tensor:
        """Filtered smart branching: the scores ``flat`` with each domain's
        :data:`FSB_CANDIDATES` best entries re-ranked above all others by the bound of the worse
        of their two children (one backward pass each, the parent's α and β; an empty child
        counts as closed). The pass only ranks: the children are bounded again when created."""
        D = len(dom)
        n_live = (flat >= 0).sum(1)
        k = int(min(FSB_CANDIDATES, int(n_live.max()) if D else 0))
        if k <= 1:
            return flat
        cand = flat.topk(k, dim=1).indices                               # (D, k)
        valid = torch.gather(flat, 1, cand) >= 0
        parts = []
        for j in range(k):
            for sign in (1, -1):
                c = dom.clone()
                self._apply_split(c, torch.where(valid[:, j], cand[:, j], cand[:, 0]), sign)
                parts.append(c)
        kids = _Domains.cat(parts)                                       # (2k D): (j, sign, d)
        bound = torch.empty(len(kids), dtype=flat.dtype, device=flat.device)
        step = max(1, self.batch)
        for s0 in range(0, len(kids), step):
            part = kids.take(torch.arange(s0, min(len(kids), s0 + step), device=flat.device))
            part.bound = torch.full_like(part.bound, -np.inf)
            empty = self._empty(part)
            self._optimise(part, 0)
            bound[s0:s0 + len(part)] = torch.where(empty, torch.full_like(part.bound, np.inf), part.bound)
        worse = bound.reshape(k, 2, D).min(1).values.T                   # (D, k)
        worse = torch.where(valid, worse, torch.full_like(worse, -np.inf))
        rank = torch.argsort(torch.argsort(worse, dim=1), dim=1).to(flat.dtype)   # 0 = worst
        out = flat.clone()
        top = flat.max(1, keepdim=True).values + 1.0
        out.scatter_(1, cand, torch.where(valid, top + rank, torch.gather(flat, 1, cand)))
        return out

    def _refreshing(self) -> bool:
        if self.refresh_intermediate is not None:
            return bool(self.refresh_intermediate)
        first = min(self.smooth_op)
        rows = sum(2 * int(np.prod(self.graph.nodes[k].shape)) for k in self.keep if k > first)
        return rows <= 4 * (self.iterations + 1) * self.k

    def _refresh(self, dom: _Domains) -> None:
        """Recompute (CROWN, batched over domains) the bounds of every kept node after the first
        smooth split node, intersected with the domain's own: a split narrows the relaxation of
        its entry, which tightens every later pre-activation bound (unlike a ReLU split, whose
        effect the final pass's β mostly captures). In place; stops at the deadline (the bounds
        left are the parent's, still sound)."""
        g = self.graph
        D = len(dom)
        first = min(self.smooth_op)
        bounds = self._bounds_list(dom)
        for k in self.keep:
            if k <= first:
                continue
            if self._deadline is not None and time.monotonic() > self._deadline:
                return
            shape = tuple(g.nodes[k].shape)
            n = int(np.prod(shape))
            chunk = max(1, REFRESH_ENTRIES // (2 * D * self.max_size))
            lo_f, hi_f = dom.lo[k].reshape(D, -1).clone(), dom.hi[k].reshape(D, -1).clone()
            for s0 in range(0, n, chunk):
                idx = torch.arange(s0, min(n, s0 + chunk), device=lo_f.device)
                r = idx.numel()
                A = lo_f.new_zeros((D, r, n))
                A[:, torch.arange(r), idx] = 1.0
                A = torch.cat([A, -A], dim=1).reshape((D, 2 * r) + shape)
                lower = self.engine.backward(k, A, bounds)
                lo_f[:, idx], hi_f[:, idx] = intersect_interval(lo_f[:, idx], hi_f[:, idx], lower[:, :r], -lower[:, r:])
            dom.lo[k], dom.hi[k] = lo_f.reshape(dom.lo[k].shape), hi_f.reshape(dom.hi[k].shape)
            bounds[k] = (dom.lo[k], dom.hi[k])

    # ---------------------------------------------------------------- driver
    def _root(self, layer_bounds: Optional[dict], deadline: Optional[float]) -> _Domains:
        bounds = self.engine.intermediate(self.x_lo, self.x_up, "crown", deadline, optimise=True)
        lo, hi = {}, {}
        for k in self.keep:
            lo[k], hi[k] = bounds[k]
            given = (layer_bounds or {}).get(k)
            if given is not None and np.asarray(given[0]).size == lo[k].numel():
                gl, gh = (torch.as_tensor(np.asarray(v, dtype=np.float64), device=lo[k].device).reshape(lo[k].shape)
                          for v in given)
                lo[k], hi[k] = intersect_interval(lo[k], hi[k], gl, gh)
        g = self.graph
        splits = {k: torch.zeros(lo[k].shape, dtype=torch.int8, device=lo[k].device) for k in self.split_keys}
        alphas = {}
        for j in self.alpha_nodes:
            i = g.nodes[j].inputs[0]
            alphas[j] = g.nodes[j].op.alpha_init(lo[i], hi[i], self.k)
        betas = {k: torch.zeros((1, self.k) + ((2,) if k in self.smooth_op else ()) + tuple(lo[k].shape[1:]),
                                dtype=lo[k].dtype, device=lo[k].device)
                 for k in self.split_keys}
        return _Domains(lo, hi, splits, alphas, betas,
                        torch.full((1,), -np.inf, dtype=self.A.dtype, device=self.A.device))

    def _try_points(self, points: torch.Tensor) -> Optional[np.ndarray]:
        """Offer the points whose outputs violate the clause (every row ``<= 0``) to the check."""
        if self.check is None or points.numel() == 0:
            return None
        pts = points.detach().cpu().numpy().reshape(-1, self.graph.n_inputs)
        y = self.graph.forward(pts)
        val = (y @ self.A.cpu().numpy().T - self.b.cpu().numpy()).max(-1)
        return self._offer(pts, val)

    def _solve_leaf(self, dom: _Domains, d: int):
        """A domain with every unstable splittable entry split: the graph MILP over the domain's
        input box and node bounds decides it (the bounds are sound for the domain's inputs, so
        an infeasible or positive minimum closes it; a minimising point is a candidate
        counterexample, in the box). Returns ('closed' | 'open', point)."""
        from vnnx.milp import encode
        from vnnx.solvers import open_session

        if not self.graph.is_piecewise_linear:
            # Every entry is narrower than its operator's minimum width: nothing closes this
            # domain but its bound; its centre is a candidate counterexample.
            return "open", ((dom.lo[0][d] + dom.hi[0][d]) / 2).reshape(-1).cpu().numpy()
        given = {k: (dom.lo[k][d].reshape(-1).cpu().numpy(), dom.hi[k][d].reshape(-1).cpu().numpy())
                 for k in self.keep if k}
        x_lo, x_up = dom.lo[0][d].reshape(-1).cpu().numpy(), dom.hi[0][d].reshape(-1).cpu().numpy()
        A, b = self.A.cpu().numpy(), self.b.cpu().numpy()
        try:
            enc = encode(self.graph, x_lo, x_up, given)
            session = open_session(enc.problem)
        except VnnxError:
            return "open", None
        point = None
        for r in range(self.k):
            left = self.leaf_time
            if self._deadline is not None:
                left = min(left, max(0.1, self._deadline - time.monotonic()))
            session.set_objective(enc.objective(A[r]))
            sol = session.solve(left)
            if sol.status == "infeasible":
                return "closed", None
            # The proven bound is exact up to HiGHS's tolerances; demand a clear margin.
            if sol.bound is not None and sol.bound - b[r] > max(self.margin, 1e-6):
                return "closed", None
            if sol.x is not None:
                point = np.clip(sol.x[enc.input_cols], x_lo, x_up)
        return "open", point

    def _empty(self, children: _Domains) -> torch.Tensor:
        empty = torch.zeros(len(children), dtype=torch.bool, device=children.bound.device)
        for k in self.split_keys:
            n = len(children)
            empty |= infeasible(children.lo[k].reshape(n, -1), children.hi[k].reshape(n, -1))
        return empty


def _detach(t: Optional[torch.Tensor], D: int, k: int, shape, like: torch.Tensor) -> torch.Tensor:
    """``t`` detached and expanded to (D, k, *shape) (a view: the pass never writes into the
    tensors it hands out); zeros when the pass never reached it."""
    full = (D, k) + tuple(shape)
    if t is None:
        return like.new_zeros(full)
    return t.detach().expand(full)
