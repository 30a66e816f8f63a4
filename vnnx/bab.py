"""ReLU-splitting branch and bound with β-CROWN bounds, for chains of affine layers and ReLUs.

The bound of a domain (a set of ReLU splits ``z >= 0`` / ``z <= 0``) is a CROWN backward pass
(Zhang et al. 2018) with optimisable lower slopes α (α-CROWN, Xu et al. 2021) and Lagrange
multipliers β >= 0 for the split constraints (β-CROWN, Wang et al. 2021):

    min_{x in box, splits} c·y(x)  >=  min_{x in box} c·y(x) - Σ β_j s_j z_j(x)

for any β >= 0, where ``s_j = +1`` for an active split (z_j >= 0) and -1 for an inactive one,
because every feasible x has ``s_j z_j(x) >= 0``. Split neurons are relaxed exactly (identity
or zero); unsplit unstable ones with the triangle relaxation. Every α in [0, 1] and β >= 0
gives a sound bound, so the optimiser (Adam, projected) can only change how tight it is.

Intermediate (pre-activation) bounds of a child are the parent's, intersected with a fresh
backward pass that uses the child's splits (Fast-Lin slopes, one matrix product per layer for
both bounds). Everything runs in float64 on the network's exact weights.

A domain whose every unstable ReLU is split is an LP in x; it is solved exactly with HiGHS.

Only a fully closed tree is reported as 'unsat'; a point is reported as a counterexample only
after the caller's check (onnxruntime on the original model) accepts it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch

from vnnx.network import Conv, Dense, MatrixCache, Network, Relu, layer_matrix

# Dense matrices of convolutions above this many entries make the chain too big to bound this way.
MAX_MATRIX_ENTRIES = 20_000_000
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
class ReluChain:
    """``y = W_L relu(... relu(W_0 x + b_0) ...) + b_L`` with float64 torch tensors.

    ``layer_index[i]``: the index in ``Network.layers`` of the affine layer whose output is the
    pre-activation of hidden layer i (the key of ``BoundsResult.pre_activation``)."""

    weights: list
    biases: list
    layer_index: list
    # backs[i]: ``coef -> coef @ weights[i]`` through a transposed convolution when affine
    # layer i is one convolution (a fraction of the dense product's cost), else None.
    backs: Optional[list] = None

    @property
    def n_hidden(self) -> int:
        return len(self.weights) - 1

    def back(self, i: int, coef: torch.Tensor) -> torch.Tensor:
        """``coef @ weights[i]`` (coefficients on layer i's output to its input)."""
        op = self.backs[i] if self.backs is not None else None
        return op(coef) if op is not None else coef @ self.weights[i]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.T + b
            if i < self.n_hidden:
                h = h.clamp(min=0)
        return h


def transposed_conv(layer: Conv) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """``coef -> coef @ W`` for the matrix W of ``layer`` (coef (..., out) to (..., in)), as a
    float64 transposed convolution; None when the layer's geometry does not map onto one
    (groups, dilation, asymmetric padding, input rows or columns the kernel never reaches)."""
    import torch.nn.functional as F

    if layer.groups != 1 or tuple(layer.dilation) != (1, 1):
        return None
    pt, pl, pb, pr = layer.padding
    c, h, w = layer.in_shape
    o, oh, ow = layer.out_shape
    kh, kw = layer.weight.shape[2:]
    sh, sw = layer.stride
    oph, opw = h - ((oh - 1) * sh - 2 * pt + kh), w - ((ow - 1) * sw - 2 * pl + kw)
    if pt != pb or pl != pr or not (0 <= oph < sh and 0 <= opw < sw):
        return None
    kernel = torch.as_tensor(np.asarray(layer.weight, dtype=np.float64))

    def back(coef: torch.Tensor) -> torch.Tensor:
        lead = coef.shape[:-1]
        y = F.conv_transpose2d(coef.reshape(-1, o, oh, ow), kernel, stride=(sh, sw), padding=(pt, pl),
                               output_padding=(oph, opw))
        return y.reshape(*lead, c * h * w)

    return back


def _transposed_single_conv(run: list) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """:func:`transposed_conv` of a run of affine layers that is one convolution, else None."""
    return transposed_conv(run[0]) if len(run) == 1 and isinstance(run[0], Conv) else None


def relu_chain(network: Network, matrix_cache: Optional[MatrixCache] = None) -> Optional[ReluChain]:
    """The affine/ReLU chain of ``network``, consecutive affine layers merged, or None when the
    network has other layers (MaxPool, Sigmoid, ...) or convolution matrices too big to densify.

    ``matrix_cache``: a :class:`vnnx.network.MatrixCache` kept by the caller across calls on
    networks that share layer objects."""
    weights, biases, index, backs = [], [], [], []
    pending = None  # (W, b) of the affine layers since the last ReLU
    run: list = []  # those layers
    for k, layer in enumerate(network.layers):
        if isinstance(layer, (Dense, Conv)):
            if isinstance(layer, Conv) and np.prod(layer.in_shape) * np.prod(layer.out_shape) > MAX_MATRIX_ENTRIES:
                return None
            w, b = layer_matrix(layer, matrix_cache)
            pending = (w, b) if pending is None else (w @ pending[0], w @ pending[1] + b)
            run.append(layer)
            last_affine = k
        elif isinstance(layer, Relu):
            if pending is None:
                return None
            weights.append(pending[0])
            biases.append(pending[1])
            index.append(last_affine)
            backs.append(_transposed_single_conv(run))
            pending, run = None, []
        else:
            return None
    if pending is None or not weights:
        return None
    weights.append(pending[0])
    biases.append(pending[1])
    backs.append(_transposed_single_conv(run))
    return ReluChain([torch.from_numpy(np.ascontiguousarray(w)) for w in weights],
                     [torch.from_numpy(np.ascontiguousarray(b)) for b in biases], index, backs)


def crown_layer_bounds(chain: ReluChain, x_lower: np.ndarray, x_upper: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """CROWN pre-activation bounds ``(lower, upper)`` of every hidden layer of ``chain`` on the
    input box, in float64 (Zhang et al. 2018, as auto_LiRPA's CROWN computes them, but for every
    neuron): each layer's bounds come from a backward pass through the finished bounds of the
    layers before it, with the upper line ``u (z - l) / (u - l)`` of every unstable ReLU and the
    adaptive lower line (slope 1 when ``u > -l``, else 0). Lower and upper bounds are one pass
    with the coefficients ``[W; -W]``. Cost: one dense product per earlier layer, whatever the box.
    """
    x_lo = torch.as_tensor(np.asarray(x_lower, dtype=np.float64).ravel())
    x_up = torch.as_tensor(np.asarray(x_upper, dtype=np.float64).ravel())
    mid, rad = (x_up + x_lo) / 2, (x_up - x_lo) / 2
    W0, b0 = chain.weights[0], chain.biases[0]
    out = [(W0 @ mid - W0.abs() @ rad + b0, W0 @ mid + W0.abs() @ rad + b0)]
    for j in range(1, chain.n_hidden):
        W, b = chain.weights[j], chain.biases[j]
        m = W.shape[0]
        lam = torch.cat([W, -W])                       # minimise z and -z at once
        const = torch.cat([b, -b]).clone()
        for i in reversed(range(j)):
            lo, up = out[i]
            active, inactive = lo >= 0, up <= 0
            unstable = ~active & ~inactive
            s = torch.where(unstable, up / (up - lo).clamp(min=1e-300), torch.zeros_like(up))
            low = torch.where(unstable, (up > -lo).to(up.dtype), active.to(up.dtype))
            up_slope = torch.where(active, torch.ones_like(s), s)
            # min over the ReLU: positive coefficients take the lower line, negative the upper one.
            coef = lam.clamp(min=0) * low + lam.clamp(max=0) * up_slope
            const = const + lam.clamp(max=0) @ torch.where(unstable, s * (-lo), torch.zeros_like(s))
            const = const + coef @ chain.biases[i]
            lam = coef @ chain.weights[i]
        value = const + lam @ mid - lam.abs() @ rad
        lo_j, hi_j = value[:m], -value[m:]
        out.append((lo_j, torch.maximum(hi_j, lo_j)))
    return [(lo.numpy(), up.numpy()) for lo, up in out]


@dataclass
class BabResult:
    status: str                     # 'unsat' | 'sat' | 'timeout' | 'unknown'
    x: Optional[np.ndarray] = None  # counterexample accepted by the caller's check
    domains: int = 0                # domains bounded
    max_open: int = 0               # largest number of open domains at once
    seconds: float = 0.0
    message: str = ""


class _Domains:
    """A batch of domains as stacked tensors (D leading)."""

    def __init__(self, lbs, ubs, splits, alphas, betas, bound):
        self.lbs, self.ubs, self.splits = lbs, ubs, splits
        self.alphas, self.betas, self.bound = alphas, betas, bound

    def __len__(self) -> int:
        return self.bound.shape[0]

    def take(self, idx):
        return _Domains([t[idx] for t in self.lbs], [t[idx] for t in self.ubs], [t[idx] for t in self.splits],
                        [t[idx] for t in self.alphas], [t[idx] for t in self.betas], self.bound[idx])

    @staticmethod
    def cat(parts):
        parts = [p for p in parts if p is not None and len(p)]
        if not parts:
            return None
        n = len(parts[0].lbs)
        return _Domains([torch.cat([p.lbs[i] for p in parts]) for i in range(n)],
                        [torch.cat([p.ubs[i] for p in parts]) for i in range(n)],
                        [torch.cat([p.splits[i] for p in parts]) for i in range(n)],
                        [torch.cat([p.alphas[i] for p in parts]) for i in range(n)],
                        [torch.cat([p.betas[i] for p in parts]) for i in range(n)],
                        torch.cat([p.bound for p in parts]))


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
    """The search loop of a branch and bound over activation splits, shared by :class:`ReluBab`
    (chains) and :class:`vnnx.graph_bab.GraphBab` (graphs). A subclass sets ``iterations``,
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


class ReluBab(BabSearch):
    """Branch and bound for ``min_x c_r·y(x) - d_r > margin for some row r`` over an input box.

    ``check``: called with candidate points (n_in,) whose output violates the clause; returns
    True when the caller accepts the point as a counterexample (e.g. after onnxruntime)."""

    def __init__(self, chain: ReluChain, x_lower: np.ndarray, x_upper: np.ndarray, A: np.ndarray, b: np.ndarray,
                 *, margin: float = 1e-7, batch: int = 256, iterations: int = 20, lr_alpha: float = 0.1,
                 lr_beta: float = 0.05, max_domains: int = 200_000,
                 check: Optional[Callable[[np.ndarray], bool]] = None, rebound_intermediate: bool = False) -> None:
        self.chain = chain
        self.rebound_intermediate = rebound_intermediate
        self.x_lo = torch.as_tensor(np.asarray(x_lower, dtype=np.float64).reshape(-1))
        self.x_up = torch.as_tensor(np.asarray(x_upper, dtype=np.float64).reshape(-1))
        self.A = torch.as_tensor(np.atleast_2d(np.asarray(A, dtype=np.float64)))
        self.b = torch.as_tensor(np.asarray(b, dtype=np.float64).reshape(-1))
        self.margin = margin
        self.batch = batch
        self.iterations = iterations
        self.lr_alpha, self.lr_beta = lr_alpha, lr_beta
        self.max_domains = max_domains
        self.check = check
        # The objective rows folded into the last layer: c_r·y - d_r = (c_r W_L) a + c_r b_L - d_r.
        self.c_w = self.A @ chain.weights[-1]
        self.c_b = self.A @ chain.biases[-1] - self.b
        self.k = self.A.shape[0]
        self._x_mid = (self.x_lo + self.x_up) / 2
        self._x_rad = (self.x_up - self.x_lo) / 2
        self._probed = None
        self._deadline: Optional[float] = None   # time.monotonic() value, set by run()

    # ----------------------------------------------------------------- bounds
    def _backward(self, lam, const, lbs, ubs, splits, alphas, betas, upto):
        """Propagate coefficients ``lam`` (D, k, n_upto) on the post-activation of hidden layer
        ``upto - 1`` back to the input; returns (lam on x, const, per-layer lam on activations)."""
        seen = []
        for i in reversed(range(upto)):
            lo, up, sp = lbs[i].unsqueeze(1), ubs[i].unsqueeze(1), splits[i].unsqueeze(1)
            seen.append(lam)
            active = (lo >= 0) | (sp > 0)
            inactive = ((up <= 0) | (sp < 0)) & ~active
            unstable = ~active & ~inactive
            s = torch.where(unstable, up / (up - lo).clamp(min=1e-300), torch.zeros_like(up))
            lam_pos, lam_neg = lam.clamp(min=0), lam.clamp(max=0)
            if alphas is None:
                lower_slope = s   # Fast-Lin: the same slope as the upper line
            else:
                lower_slope = alphas[i]
            coef = torch.where(active, lam, torch.zeros_like(lam))
            coef = coef + torch.where(unstable, lam_pos * lower_slope + lam_neg * s, torch.zeros_like(lam))
            const = const + (torch.where(unstable, lam_neg * s * (-lo), torch.zeros_like(lam))).sum(-1)
            if betas is not None:
                coef = coef - betas[i] * sp.to(coef.dtype)
            const = const + coef @ self.chain.biases[i]
            lam = self.chain.back(i, coef)
        return lam, const, seen[::-1]

    def _concretize_min(self, lam, const):
        return const + lam.clamp(min=0) @ self.x_lo + lam.clamp(max=0) @ self.x_up

    def _intermediate(self, lbs, ubs, splits, from_layer):
        """Tighten the pre-activation bounds of hidden layers >= ``from_layer`` (>= 1) in place,
        each from a backward pass through the (already final) bounds of the layers before it.
        ``from_layer``: an int, or a (D,) tensor per domain (domains whose value is the number of
        hidden layers are left alone)."""
        n = self.chain.n_hidden
        D = lbs[0].shape[0]
        first = torch.as_tensor(from_layer).expand(D) if not torch.is_tensor(from_layer) else from_layer
        first = first.clamp(min=1)
        for j in range(1, n):
            idx = torch.nonzero(first <= j).flatten()
            if idx.numel() == 0:
                continue
            sub_l = [t[idx] for t in lbs[:j]]
            sub_u = [t[idx] for t in ubs[:j]]
            sub_s = [t[idx] for t in splits[:j]]
            lam = self.chain.weights[j].unsqueeze(0).expand(idx.numel(), -1, -1)
            const = self.chain.biases[j].unsqueeze(0).expand(idx.numel(), -1)
            # With the Fast-Lin slopes, lower and upper bounds share the coefficients on x and
            # differ in the intercepts of the upper lines, which only the negative (lower bound)
            # or positive (upper bound) coefficients pick up.
            lam_x, c_lo, c_hi = self._shared_backward(lam, const, sub_l, sub_u, sub_s, j)
            centre = lam_x @ self._x_mid
            spread = lam_x.abs_() @ self._x_rad
            lo, hi = intersect_interval(lbs[j][idx], ubs[j][idx], c_lo + centre - spread, c_hi + centre + spread)
            sp = splits[j][idx]
            lbs[j][idx] = torch.where(sp > 0, lo.clamp(min=0), lo)
            ubs[j][idx] = torch.where(sp < 0, hi.clamp(max=0), hi)

    def _shared_backward(self, lam, const, lbs, ubs, splits, upto):
        c_lo = const.clone()
        c_hi = const.clone()
        for i in reversed(range(upto)):
            lo, up, sp = lbs[i].unsqueeze(1), ubs[i].unsqueeze(1), splits[i].unsqueeze(1)
            active = (lo >= 0) | (sp > 0)
            inactive = ((up <= 0) | (sp < 0)) & ~active
            unstable = ~active & ~inactive
            s = torch.where(unstable, up / (up - lo).clamp(min=1e-300), torch.zeros_like(up))
            slope = torch.where(active, torch.ones_like(s), s)
            coef = lam * slope
            icpt = torch.where(unstable, s * (-lo), torch.zeros_like(s))   # upper-line intercepts
            c_lo = c_lo + (lam.clamp(max=0) * icpt).sum(-1)
            c_hi = c_hi + (lam.clamp(min=0) * icpt).sum(-1)
            c_lo = c_lo + coef @ self.chain.biases[i]
            c_hi = c_hi + coef @ self.chain.biases[i]
            lam = self.chain.back(i, coef)
        return lam, c_lo, c_hi

    def _optimise(self, dom: _Domains, iterations: int):
        """Optimise α and β of ``dom`` for its final bound; updates it in place and returns the
        per-layer coefficients on the activations at the best point (for branching) and the
        input-box corners that minimise the bound (counterexample candidates)."""
        D = len(dom)
        lam0 = self.c_w.unsqueeze(0).expand(D, -1, -1)
        const0 = self.c_b.unsqueeze(0).expand(D, -1)
        alphas = [a.clone().requires_grad_(True) for a in dom.alphas]
        betas = [b.clone().requires_grad_(True) for b in dom.betas]
        params = [{"params": alphas, "lr": self.lr_alpha}, {"params": betas, "lr": self.lr_beta}]
        opt = torch.optim.Adam(params, maximize=True) if iterations > 0 else None
        best = torch.full((D, self.k), -np.inf, dtype=torch.float64)
        best_alpha = [a.detach().clone() for a in dom.alphas]
        best_beta = [b.detach().clone() for b in dom.betas]
        best_seen = None
        best_lamx = None
        n = self.chain.n_hidden
        for it in range(max(1, iterations + 1)):
            with torch.enable_grad():
                lam_x, const, seen = self._backward(lam0, const0, dom.lbs, dom.ubs, dom.splits, alphas, betas, n)
                bound = self._concretize_min(lam_x, const)
                with torch.no_grad():
                    better = bound > best
                    row_better = better.any(-1)
                    best = torch.where(better, bound, best)
                    for i in range(n):
                        best_alpha[i] = self._where_rows(better, alphas[i], best_alpha[i])
                        best_beta[i] = self._where_rows(better, betas[i], best_beta[i])
                    if best_seen is None:
                        best_seen = [s.detach().clone() for s in seen]
                        best_lamx = lam_x.detach().clone()
                    else:
                        best_seen = [self._where_rows(row_better, s.detach(), bs) for s, bs in zip(seen, best_seen)]
                        best_lamx = self._where_rows(row_better, lam_x.detach(), best_lamx)
                # Every iteration's bound is sound, so stopping early at the deadline only costs
                # tightness (a batch of 20 steps took 2-3 s on a 1,500-ReLU MLP under load).
                if it == iterations or opt is None or (
                        self._deadline is not None and time.monotonic() > self._deadline):
                    break
                opt.zero_grad()
                # Domains already closed need no more work; the sum lets each row's own α/β
                # follow its own gradient.
                bound.sum().backward()
                opt.step()
            with torch.no_grad():
                for a in alphas:
                    a.clamp_(0, 1)
                for b in betas:
                    b.clamp_(min=0)
        dom.alphas, dom.betas = best_alpha, best_beta
        dom.bound = torch.maximum(dom.bound, best.max(-1).values) if dom.bound is not None else best.max(-1).values
        corners = torch.where(best_lamx > 0, self.x_lo, self.x_up)   # (D, k, n_in)
        return best_seen, corners

    # --------------------------------------------------------------- branching
    def _scores(self, dom: _Domains, seen):
        """BaBSR-style score per unsplit unstable neuron: how much the upper line's intercept
        costs the bound (|negative coefficient| x u(-l)/(u-l)), summed over rows, plus a tiny
        width term so that ties go to wide neurons."""
        scores = []
        for i in range(self.chain.n_hidden):
            lo, up, sp = dom.lbs[i], dom.ubs[i], dom.splits[i]
            unstable = (lo < 0) & (up > 0) & (sp == 0)
            icpt = torch.where(unstable, up * (-lo) / (up - lo).clamp(min=1e-300), torch.zeros_like(lo))
            lam_neg = seen[i].clamp(max=0).abs().sum(1)
            sc = lam_neg * icpt + 1e-9 * (up - lo)
            scores.append(torch.where(unstable, sc, torch.full_like(sc, -1.0)))
        return scores

    def _branch(self, dom: _Domains, seen, n_splits: int):
        """Children of every domain in ``dom``: ``2 ** n_splits`` each, split on the best-scored
        neurons (with ``rebound_intermediate``, their later layers' bounds recomputed). Returns
        the children and a mask of parents with nothing left to split."""
        scores = self._scores(dom, seen)
        flat = torch.cat(scores, 1)
        sizes = [s.shape[1] for s in scores]
        offsets = np.cumsum([0] + sizes)
        live, exhausted, top = pick_splits(flat, n_splits)
        if top is None:
            return None, exhausted
        dom = dom.take(live)
        k = top.shape[1]
        layer_of = torch.as_tensor(np.searchsorted(offsets, top.numpy(), side="right") - 1)
        # Bounds of the layers after the first one split change; the split layer's own bounds
        # were set by the split itself.
        first = layer_of.min(1).values + 1
        children = dom
        for t in range(k):
            pos = top[:, t]
            parts = []
            for sign in (1, -1):
                c = _Domains([x.clone() for x in children.lbs], [x.clone() for x in children.ubs],
                             [x.clone() for x in children.splits], [x.clone() for x in children.alphas],
                             [x.clone() for x in children.betas], children.bound.clone())
                reps = c.bound.shape[0] // pos.shape[0]
                p = pos.repeat(reps)
                rows = torch.arange(c.bound.shape[0])
                for i in range(self.chain.n_hidden):
                    sel = (p >= offsets[i]) & (p < offsets[i + 1])
                    if sel.any():
                        r, j = rows[sel], p[sel] - offsets[i]
                        c.splits[i][r, j] = sign
                        if sign > 0:
                            c.lbs[i][r, j] = c.lbs[i][r, j].clamp(min=0)
                        else:
                            c.ubs[i][r, j] = c.ubs[i][r, j].clamp(max=0)
                parts.append(c)
            children = _Domains.cat(parts)
        if self.rebound_intermediate:
            self._intermediate(children.lbs, children.ubs, children.splits, first.repeat(2 ** k))
        return children, exhausted

    def _empty(self, children: _Domains) -> torch.Tensor:
        empty = torch.zeros(len(children), dtype=torch.bool)
        for lo, up in zip(children.lbs, children.ubs):
            empty |= infeasible(lo, up)
        return empty

    # ---------------------------------------------------------------- driver
    def _root(self, layer_bounds, deadline=None):
        n = self.chain.n_hidden
        lo0 = self.chain.weights[0].clamp(min=0) @ self.x_lo + self.chain.weights[0].clamp(max=0) @ self.x_up
        hi0 = self.chain.weights[0].clamp(min=0) @ self.x_up + self.chain.weights[0].clamp(max=0) @ self.x_lo
        lbs = [(lo0 + self.chain.biases[0]).unsqueeze(0)]
        ubs = [(hi0 + self.chain.biases[0]).unsqueeze(0)]
        for i in range(1, n):
            w = self.chain.weights[i].shape[0]
            lbs.append(torch.full((1, w), -np.inf, dtype=torch.float64))
            ubs.append(torch.full((1, w), np.inf, dtype=torch.float64))
        splits = [torch.zeros_like(l, dtype=torch.int8) for l in lbs]
        if layer_bounds:
            for i, k in enumerate(self.chain.layer_index):
                if k in layer_bounds:
                    lo, hi = layer_bounds[k]
                    lbs[i], ubs[i] = intersect_interval(
                        lbs[i], ubs[i], torch.as_tensor(np.asarray(lo, dtype=np.float64)).view(1, -1),
                        torch.as_tensor(np.asarray(hi, dtype=np.float64)).view(1, -1))
        # Layer by layer, so that each layer's pass uses the finished bounds of the ones before.
        self._intermediate(lbs, ubs, splits, 1)
        alphas = [(u > -l).to(torch.float64).unsqueeze(1).expand(-1, self.k, -1).clone() for l, u in zip(lbs, ubs)]
        betas = [torch.zeros(1, self.k, l.shape[1], dtype=torch.float64) for l in lbs]
        return _Domains(lbs, ubs, splits, alphas, betas, torch.full((1,), -np.inf, dtype=torch.float64))

    def _try_points(self, points: torch.Tensor) -> Optional[np.ndarray]:
        """Offer the points whose outputs violate the clause (every row ``<= 0``) to the check."""
        if self.check is None or points.numel() == 0:
            return None
        points = points.reshape(-1, self.x_lo.numel())
        with torch.no_grad():
            y = self.chain.forward(points)
            val = (y @ self.A.T - self.b).max(-1).values
        return self._offer(points.numpy(), val.numpy())

    def _solve_leaf(self, dom: _Domains, d: int):
        """Exact LP for a domain whose unstable ReLUs are all split: every ReLU is linear there.
        Returns ('closed' | 'open', point)."""
        from scipy.optimize import linprog

        n_in = self.x_lo.numel()
        M = torch.eye(n_in, dtype=torch.float64)
        m = torch.zeros(n_in, dtype=torch.float64)
        A_ub, b_ub = [], []
        for i in range(self.chain.n_hidden):
            Wz = self.chain.weights[i] @ M
            bz = self.chain.weights[i] @ m + self.chain.biases[i]
            lo, up, sp = dom.lbs[i][d], dom.ubs[i][d], dom.splits[i][d]
            on = (lo >= 0) | (sp > 0)
            off = ((up <= 0) | (sp < 0)) & ~on
            if bool((~on & ~off).any()):
                return "open", None
            # on: z >= 0  ->  -Wz x <= bz ; off: z <= 0  ->  Wz x <= -bz
            if on.any():
                A_ub.append(-Wz[on])
                b_ub.append(bz[on])
            if off.any():
                A_ub.append(Wz[off])
                b_ub.append(-bz[off])
            M = Wz * on.unsqueeze(1).to(Wz.dtype)
            m = bz * on.to(bz.dtype)
        Wy = self.chain.weights[-1] @ M
        by = self.chain.weights[-1] @ m + self.chain.biases[-1]
        A_ub = torch.cat(A_ub).numpy() if A_ub else None
        b_ub = torch.cat(b_ub).numpy() if b_ub else None
        bounds = list(zip(self.x_lo.numpy(), self.x_up.numpy()))
        point = None
        for r in range(self.k):
            cost = (self.A[r] @ Wy).numpy()
            off = float(self.A[r] @ by - self.b[r])
            res = linprog(cost, A_ub=A_ub, b_ub=b_ub, bounds=bounds, method="highs")
            if res.status == 2:      # infeasible domain
                return "closed", None
            if res.status != 0:
                return "open", None
            # The LP optimum is exact up to HiGHS's tolerances; demand a clear margin.
            if res.fun + off > max(self.margin, 1e-6):
                return "closed", None
            point = res.x
        return "open", point
