"""One bound engine over the :mod:`vnnx.graph`: IBP, CROWN and α-CROWN, with a deadline.

* **IBP**: every operator's ``interval`` rule, in topological order.
* **CROWN** (Zhang et al., NeurIPS 2018): the bounds of every node read by a nonlinear operator
  (ReLU, MaxPool, Sigmoid, ...) are refined in topological order by a backward pass from that node
  to the input (each operator's ``backward``), for the entries that operator's relaxation depends
  on (``needs_tight_input``: the unstable ReLUs, every Sigmoid input); then the spec rows get
  one backward pass from the output. Sums over residual branches are exact: a node's
  coefficients are the sum of what its consumers pass back. A refinement that starts at a
  convolution or pooling of one box runs on sparse coefficients (scipy CSR: only the receptive
  field is non-zero) until they fill in, then densely (each operator's ``backward_sparse``).
* **α-CROWN** (Xu et al., ICLR 2021): the spec rows' lower ReLU slopes are optimised (Adam,
  projected onto [0, 1]) with the intermediate bounds of CROWN fixed; every step's bound is
  sound, the best per row is kept, and the loop stops at ``deadline``.

Everything runs in float64 torch on ``device``. The returned bounds are sound for every input
in the box up to float64 round-off, which ``vnnx.verify.REFUTE_MARGIN`` absorbs.

Example::

    engine = GraphEngine(from_onnx(model))
    res = engine.compute(x_lo, x_hi, "crown", C)      # res.lower, res.upper: (rows,)
"""
from __future__ import annotations

import time
from typing import Mapping, Optional

import numpy as np
import scipy.sparse as sp
import torch

from vnnx.errors import VnnxError
from vnnx.graph import Graph
from vnnx.ops.base import Relaxation, rowdot

METHODS = ("ibp", "crown", "alpha-crown")
# The coefficient tensors of one backward pass hold at most about this many float64 entries
# (2 MiB: small blocks stay in cache; measured fastest on the shared suites, tools/bench_engine.py);
# intermediate refinements are chunked over their rows to stay below it.
MAX_BACKWARD_ENTRIES = 2 ** 18
# Refinements that start on the sparse back end (convolutions: the coefficients stay within the
# receptive field) take this many times more rows per chunk.
SPARSE_CHUNK = 16
# Sparse coefficients with more than this share of non-zeros continue densely (measured on
# capm_overlap_case: 0.2 is 8x slower, 0.5 best, 0.8 about the same).
SPARSE_DENSE_AT = 0.5


class GraphEngine:
    """Bounds of one graph, queried for many boxes and specs. Same interface as
    :class:`vnnx.bounds.BoundComputer` (``compute``, ``lower_bounds_batch``,
    ``alpha_iterations``), so that the verify stages use either.

    ``intersect_interval``: refined bounds are intersected with the interval ones (both are
    sound; off, CROWN's bounds equal auto_LiRPA's, which the cross-check tests use).
    ``max_entries``: the memory cap of one backward pass (:data:`MAX_BACKWARD_ENTRIES`).
    ``device``: 'cpu' or 'cuda'; float64 everywhere. ``relaxations``: operator kind -> a
    plugin's :class:`vnnx.ops.base.Relaxation` used instead of the operator's own (CAPM's
    MaxPool chain). ``sparse``: refinements of one box on the CPU that start at a local operator
    (convolution, pooling) run on the sparse back end (scipy CSR coefficients over the receptive
    field, dense once they fill in); the bounds are the same either way."""

    def __init__(self, graph: Graph, alpha_iterations: int = 20, alpha_lr: float = 0.1,
                 device: str = "cpu", max_entries: int = MAX_BACKWARD_ENTRIES,
                 intersect_interval: bool = True, relaxations: Optional[Mapping[str, Relaxation]] = None,
                 sparse: bool = True) -> None:
        self.graph = graph
        self.relaxations = dict(relaxations or {})
        self.sparse = bool(sparse)
        # The float64 torch module on flattened inputs (input splitting's gradients), as
        # BoundComputer.module.
        self.module = graph.to_torch(torch.float64)
        self.intersect_interval = bool(intersect_interval)
        self.alpha_iterations = int(alpha_iterations)
        self.alpha_lr = float(alpha_lr)
        self.device = torch.device(device)
        self.max_entries = int(max_entries)
        # Nodes whose interval bounds are already exact per entry need no refinement.
        self._tight = set(graph.nonlinear_inputs()) - exact_interval_nodes(graph)
        self._local_nodes: dict = {}
        self._sizes: dict = {}
        self._ancestor_size = {}
        for k in self._tight | {graph.output}:
            self._ancestor_size[k] = max(int(np.prod(graph.nodes[i].shape)) for i in graph.ancestors(k))

    # ------------------------------------------------------------------ public interface
    def compute(self, x_lower: np.ndarray, x_upper: np.ndarray, method: str = "crown",
                C: Optional[np.ndarray] = None, deadline: Optional[float] = None):
        """Bounds on ``C @ y`` over the box (each (n_inputs,)); ``C``: (rows, n_outputs), identity
        when None. Returns a :class:`vnnx.bounds.BoundsResult` whose ``pre_activation`` maps each
        node read by a nonlinear operator to its flattened (lower, upper), and ``node_bounds``
        holds every node's bounds as (1, *shape) tensors."""
        from vnnx.bounds import BoundsResult

        if method not in METHODS:
            raise VnnxError(f"unknown bound method {method!r}; choose one of {', '.join(METHODS)}")
        start = time.monotonic()
        lo, hi = self._box(np.asarray(x_lower).reshape(1, -1), np.asarray(x_upper).reshape(1, -1))
        C = np.eye(self.graph.n_outputs) if C is None else np.asarray(C, dtype=np.float64)
        c = self._spec(C, 1)
        bounds = self.intermediate(lo, hi, method, deadline)
        both = torch.cat([c, -c], dim=1)
        with torch.no_grad():
            lower = self._final(both, bounds, method, deadline)[0]
        rows = C.shape[0]
        pre = {k: (bounds[k][0].reshape(-1).cpu().numpy(), bounds[k][1].reshape(-1).cpu().numpy())
               for k in sorted(self._tight)}
        return BoundsResult(lower[:rows].cpu().numpy(), -lower[rows:].cpu().numpy(), pre, method,
                            time.monotonic() - start, node_bounds=bounds)

    def lower_bounds_batch(self, x_lower: np.ndarray, x_upper: np.ndarray, C: np.ndarray,
                           method: str = "crown", info: Optional[dict] = None) -> np.ndarray:
        """Lower bounds of ``C @ y`` over each of B boxes: (B, n_inputs) each -> (B, rows).

        The refined bounds are not intersected with the interval ones here (CROWN exactly as
        auto_LiRPA computes it): CROWN's adaptive slopes are not monotone in the intermediate
        bounds, and on ACAS Xu 1_1 prop_2 input splitting needed 87,797 boxes with the
        intersection against 46,429 without (auto_LiRPA: 46,429).

        ``info`` (CROWN only): filled with ``info["input"]``, the bound's coefficients on the
        input, (B, rows, n_inputs) numpy: row r's lower bound is ``A[b, r] · x + const`` minimised
        over box b (what input splitting reads to choose a dimension)."""
        if method not in ("ibp", "crown"):
            raise VnnxError(f"batched bounds support ibp and crown, not {method!r}")
        if info is not None and method != "crown":
            raise VnnxError("the input coefficients (info) come with CROWN only")
        lo, hi = self._box(np.asarray(x_lower), np.asarray(x_upper))
        c = self._spec(np.asarray(C, dtype=np.float64), lo.shape[0])
        bounds = self.intermediate(lo, hi, method, intersect=False)
        with torch.no_grad():
            if info is None:
                return self._final(c, bounds, method, None).cpu().numpy()
            coeffs: dict = {}
            lower = self.backward(self.graph.output, c, bounds, info=coeffs)
            A0 = coeffs.get("input")
            info["input"] = None if A0 is None else A0.reshape(A0.shape[0], A0.shape[1], -1).cpu().numpy()
            return lower.cpu().numpy()

    # ------------------------------------------------------------------ the passes
    def intermediate(self, lo: torch.Tensor, hi: torch.Tensor, method: str = "crown",
                     deadline: Optional[float] = None, optimise: bool = False,
                     intersect: Optional[bool] = None) -> list:
        """Bounds ``(lo, hi)`` of every node, each (B, *shape): interval rules, and with CROWN
        the nodes read by nonlinear operators refined. ``optimise``: each refinement also
        optimises the lower slopes of the activations before it (α-CROWN's intermediate bounds,
        as auto_LiRPA computes them; ``alpha_iterations`` steps per chunk of rows). Past
        ``deadline`` refinement stops (the interval bounds that remain are sound, only looser).
        ``intersect``: overrides ``intersect_interval`` for this call."""
        g = self.graph
        B = lo.shape[0]
        bounds: list = [None] * len(g.nodes)
        bounds[0] = (lo.reshape((B,) + g.input_shape), hi.reshape((B,) + g.input_shape))
        with torch.no_grad():
            for k in range(1, len(g.nodes)):
                node = g.nodes[k]
                bounds[k] = node.op.interval(*(bounds[i] for i in node.inputs))
                if method == "ibp" or k not in self._tight:
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    continue
                need = None
                for j in g.consumers(k):
                    m = g.nodes[j].op.needs_tight_input(*bounds[k])
                    if m is not None:
                        need = m if need is None else need | m
                if need is None:
                    continue
                idx = torch.nonzero(need.reshape(B, -1).any(0)).reshape(-1)
                if idx.numel():
                    bounds[k] = self._refine(k, idx, bounds, optimise, deadline,
                                             self.intersect_interval if intersect is None else intersect)
        return bounds

    def _refine(self, k: int, idx: torch.Tensor, bounds: list, optimise: bool = False,
                deadline: Optional[float] = None, intersect: bool = True):
        g = self.graph
        lo, hi = bounds[k]
        B = lo.shape[0]
        shape = g.nodes[k].shape
        size = int(np.prod(shape))
        chunk = max(1, self.max_entries // (2 * B * self._ancestor_size[k]))
        local = self.sparse and B == 1 and self.device.type == "cpu" and self._local(k, bounds)
        if local:
            chunk *= SPARSE_CHUNK
        # A linear node's first step reads its matrix rows (_unit_rows); α-CROWN needs the
        # identity block itself.
        unit = not local and not optimise and g.nodes[k].op.linear and g.nodes[k].op.kind not in self.relaxations
        lo_f, hi_f = lo.reshape(B, -1).clone(), hi.reshape(B, -1).clone()
        for s in range(0, idx.numel(), chunk):
            part = idx[s:s + chunk]
            r = part.numel()
            dense = None
            if optimise or not (local or unit):
                dense = lo.new_zeros((B, r, size))
                dense[:, torch.arange(r), part] = 1.0
                dense = torch.cat([dense, -dense], dim=1).reshape((B, 2 * r) + tuple(shape))
            if local:
                rows = np.arange(2 * r)
                cols = np.concatenate([part.cpu().numpy()] * 2)
                signs = np.repeat([1.0, -1.0], r)
                lower = self.backward(k, sp.csr_matrix((signs, (rows, cols)), shape=(2 * r, size)), bounds)
            elif unit:
                lower = self._unit_rows(k, part, B, bounds)
            else:
                lower = self.backward(k, dense, bounds)
            if optimise:
                lower = torch.maximum(lower, self._alpha(k, dense, bounds, lower, deadline))
            new_lo, new_hi = lower[:, :r], -lower[:, r:]
            old_lo, old_hi = lo_f[:, part], hi_f[:, part]
            a, b = torch.maximum(old_lo, new_lo), torch.minimum(old_hi, new_hi)
            # Both bounds are sound, so they cross only by round-off: keep a span covering both.
            if not intersect:
                a, b = new_lo, new_hi
            lo_f[:, part], hi_f[:, part] = torch.minimum(a, b), torch.maximum(a, b)
        return lo_f.reshape(lo.shape), hi_f.reshape(hi.shape)

    def _unit_rows(self, k: int, part: torch.Tensor, B: int, bounds: list) -> torch.Tensor:
        """Lower bounds (B, 2r) of ``+x_k[part]`` then ``-x_k[part]``: :meth:`backward` of the
        unit rows and their negations. The first step is linear in the rows (node ``k`` is
        linear), so it runs once on the r positive rows (:meth:`backward_rows`, a slice of a
        dense layer's matrix) and is negated for the others."""
        node = self.graph.nodes[k]
        ins = [bounds[i] for i in node.inputs]
        coeffs, bias = node.op.backward_rows(part, B, ins)
        acc = {}
        for i, c in zip(node.inputs, coeffs):
            if c is not None:
                c = torch.cat([c, -c], dim=1)
                acc[i] = c if i not in acc else _add(acc[i], c)
        bias = torch.cat([bias, -bias], dim=1)
        if not acc:
            return bias
        return bias + self._pass(k - 1, acc, bounds)

    def _local(self, k: int, bounds: list) -> bool:
        """Whether refinements of node ``k`` start on the sparse back end: its operator has a
        sparse step (a convolution, a pooling; a dense layer fills the coefficients in at once)."""
        if k not in self._local_nodes:
            node = self.graph.nodes[k]
            probe = sp.csr_matrix((1, int(np.prod(node.shape))))
            ins = [bounds[i] for i in node.inputs]
            step = self.relaxations.get(node.op.kind)
            done = node.op.backward_sparse(probe, ins) if step is None else step.backward_sparse(node.op, probe, ins)
            self._local_nodes[k] = done is not None
        return self._local_nodes[k]

    def _size_upto(self, j: int) -> int:
        """The largest per-sample size among node ``j`` and its ancestors."""
        if j not in self._sizes:
            g = self.graph
            self._sizes[j] = max(int(np.prod(g.nodes[i].shape)) for i in set(g.ancestors(j)) | {j})
        return self._sizes[j]

    def backward(self, start: int, A: torch.Tensor, bounds: list,
                 alphas: Optional[dict] = None, interval_at_nonlinear: bool = False,
                 extra: Optional[dict] = None, info: Optional[dict] = None) -> torch.Tensor:
        """The lower bound (B, K) of ``A · node[start]`` (A: (B, K, *shape)) by one backward
        pass to the input; ``alphas``: optimisable lower slopes per activation node. With
        ``interval_at_nonlinear`` the pass stops at nonlinear nodes and uses their interval
        bounds (IBP with the linear tail folded into the spec, as auto_LiRPA does).

        ``extra``: coefficients ``{node: (B, K, *shape)}`` added to the objective, i.e. the pass
        bounds ``A · node[start] + Σ extra[k] · node[k]`` (β-CROWN's split multipliers,
        :mod:`vnnx.graph_bab`). ``info``: filled with the coefficients reaching each node
        (``info[k]``, those on its output) and on the input (``info['input']``)."""
        return self._pass(start, {start: A}, bounds, alphas, interval_at_nonlinear, extra, info)

    def _pass(self, start: int, acc: dict, bounds: list, alphas=None, interval_at_nonlinear=False,
              extra=None, info=None) -> torch.Tensor:
        """:meth:`backward` from the coefficients ``acc`` (node -> block) on nodes ``<= start``."""
        g = self.graph
        bias = 0.0
        first = next(iter(acc.values()))
        out_rows = (1, first.shape[0]) if sp.issparse(first) else tuple(first.shape[:2])
        for j in range(start, 0, -1):
            Aj = acc.pop(j, None)
            if extra is not None and j in extra:
                Aj = extra[j] if Aj is None else _add(Aj, extra[j])
            if Aj is None:
                continue
            if info is not None:
                info[j] = Aj
            node = g.nodes[j]
            if interval_at_nonlinear and not node.op.linear:
                bias = bias + _concretize(Aj, *bounds[j])
                continue
            step = self.relaxations.get(node.op.kind)
            ins = [bounds[i] for i in node.inputs]
            done = None
            if sp.issparse(Aj):
                if Aj.nnz <= SPARSE_DENSE_AT * Aj.shape[0] * Aj.shape[1]:
                    done = node.op.backward_sparse(Aj, ins) if step is None else step.backward_sparse(node.op, Aj, ins)
                if done is None:
                    rows = max(1, self.max_entries // self._size_upto(j))
                    if Aj.shape[0] > rows:
                        # Filled in: the rest of the pass runs densely, in blocks of rows under the cap.
                        acc[j] = Aj
                        parts = [self._pass(j, {i: _rows(a, r0, r0 + rows) for i, a in acc.items()}, bounds)
                                 for r0 in range(0, Aj.shape[0], rows)]
                        return bias + torch.cat(parts, dim=1)
                    Aj = _dense(Aj, (1, Aj.shape[0]) + g.nodes[j].shape, bounds[j][0].device)
                else:
                    done = (done[0], torch.as_tensor(done[1], device=bounds[j][0].device).reshape(1, -1))
            if done is None:
                alpha = None if alphas is None else alphas.get(j)
                done = node.op.backward(Aj, ins, alpha=alpha) if step is None else step.backward(node.op, Aj, ins, alpha)
            coeffs, b = done
            bias = bias + b
            for i, c in zip(node.inputs, coeffs):
                if c is not None:
                    acc[i] = c if i not in acc else _add(acc[i], c)
        A0 = acc.get(0)
        if extra is not None and 0 in extra:
            A0 = extra[0] if A0 is None else _add(A0, extra[0])
        if info is not None:
            info["input"] = A0
        if A0 is not None:
            bias = bias + _concretize(A0, *bounds[0])
        if not torch.is_tensor(bias):    # nothing reached a bias or the input
            bias = torch.full(out_rows, float(bias), dtype=torch.float64, device=bounds[0][0].device)
        return bias

    def _final(self, c: torch.Tensor, bounds: list, method: str, deadline: Optional[float]) -> torch.Tensor:
        out = self.graph.output
        if method == "ibp":
            return self.backward(out, c, bounds, interval_at_nonlinear=True)
        lower = self.backward(out, c, bounds)
        if method == "alpha-crown":
            lower = torch.maximum(lower, self._alpha(out, c, bounds, lower, deadline))
        return lower

    def _alpha(self, start, c, bounds, best, deadline):
        """The best lower bounds of ``c · node[start]`` over Adam steps on the lower slopes of
        the activations before ``start`` (every step's bound is sound)."""
        g = self.graph
        rows = c.shape[1]
        alphas = {}
        needed = g.ancestors(start)
        params = {}
        for j, node in enumerate(g.nodes):
            if node.op is None or j not in needed:
                continue
            init, clamp = self._alpha_steps(node.op)
            if init is not None:
                lo, hi = bounds[node.inputs[0]]
                if bool(node.op.needs_tight_input(lo, hi).any()):
                    alphas[j] = init(lo, hi, rows).requires_grad_(True)
                    params[j] = clamp
        if not alphas or self.alpha_iterations <= 0:
            return best
        opt = torch.optim.Adam(list(alphas.values()), lr=self.alpha_lr)
        best = best.clone()
        for _ in range(self.alpha_iterations):
            if deadline is not None and time.monotonic() >= deadline:
                break
            with torch.enable_grad():
                lower = self.backward(start, c, bounds, alphas)
                best = torch.maximum(best, lower.detach())
                opt.zero_grad()
                (-lower.sum()).backward()
            opt.step()
            for j, a in alphas.items():
                params[j](a)
        with torch.no_grad():
            best = torch.maximum(best, self.backward(start, c, bounds, alphas))
        return best

    def _alpha_steps(self, op):
        """``(alpha_init(lo, hi, rows), alpha_clamp(alpha))`` of an operator's relaxation (a
        registered plugin relaxation's when there is one), or (None, None) without parameters."""
        step = self.relaxations.get(op.kind)
        if step is not None:
            if not step.has_alpha:
                return None, None
            return (lambda lo, hi, rows: step.alpha_init(op, lo, hi, rows)), (lambda a: step.alpha_clamp(op, a))
        if not op.has_alpha:
            return None, None
        return op.alpha_init, op.alpha_clamp

    # ------------------------------------------------------------------ helpers
    def _box(self, x_lower: np.ndarray, x_upper: np.ndarray):
        n = self.graph.n_inputs
        lo = torch.as_tensor(np.asarray(x_lower, dtype=np.float64), device=self.device)
        hi = torch.as_tensor(np.asarray(x_upper, dtype=np.float64), device=self.device)
        if lo.ndim != 2 or lo.shape[1] != n or hi.shape != lo.shape:
            raise VnnxError(f"input boxes must be (B, {n}), got {tuple(lo.shape)} / {tuple(hi.shape)}")
        if bool((lo > hi).any()):
            raise VnnxError("input box is empty (some lower bound exceeds its upper bound)")
        return lo, hi

    def _spec(self, C: np.ndarray, batch: int) -> torch.Tensor:
        m = self.graph.n_outputs
        if C.ndim != 2 or C.shape[1] != m:
            raise VnnxError(f"spec matrix must be (rows, {m}), got {C.shape}")
        c = torch.as_tensor(C, device=self.device).reshape((1, C.shape[0]) + self.graph.output_shape)
        return c.expand((batch,) + tuple(c.shape[1:])).contiguous()


def _dense(A, shape: tuple, device) -> torch.Tensor:
    """A sparse (K, n) coefficient matrix of one sample as the dense (1, K, *node shape) tensor."""
    return torch.as_tensor(A.toarray(), device=device).reshape(shape)


def _rows(a, r0: int, r1: int):
    """Rows ``r0:r1`` of a coefficient block (sparse (K, n), or dense (1, K, *shape))."""
    return a[r0:r1] if sp.issparse(a) else a[:, r0:r1]


def _add(a, b):
    """The sum of two coefficient blocks of one node, sparse only when both are."""
    if sp.issparse(a) and sp.issparse(b):
        return (a + b).tocsr()
    if sp.issparse(a):
        a = _dense(a, b.shape, b.device)
    if sp.issparse(b):
        b = _dense(b, a.shape, a.device)
    return a + b


def _concretize(A, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """min of ``A · x`` over ``lo <= x <= hi``: A (B, K, *shape), lo/hi (B, *shape) -> (B, K).
    A sparse A is one sample's (K, n) matrix."""
    if sp.issparse(A):
        mid, rad = ((lo + hi) / 2).reshape(-1).cpu().numpy(), ((hi - lo) / 2).reshape(-1).cpu().numpy()
        A = A.tocsr()
        absA = sp.csr_matrix((np.abs(A.data), A.indices, A.indptr), shape=A.shape)
        return torch.as_tensor(A @ mid - absA @ rad, device=lo.device).reshape(1, -1)
    mid, rad = ((lo + hi) / 2).unsqueeze(1), ((hi - lo) / 2).unsqueeze(1)
    return rowdot(A, mid) - rowdot(A.abs(), rad)


def exact_interval_nodes(graph: Graph) -> set[int]:
    """Nodes whose interval bounds are the exact range of every entry over the input box: a
    linear operator applied to box-shaped sets (the input, and reshapes or transposes of it),
    and elementwise activations of such nodes. CROWN cannot tighten them."""
    box = {0}
    exact = {0}
    for k, node in enumerate(graph.nodes[1:], 1):
        op = node.op
        if op.linear and all(i in box for i in node.inputs):
            exact.add(k)
            if getattr(op, "permutes", False):
                box.add(k)
        elif getattr(op, "elementwise", False) and node.inputs[0] in exact:
            exact.add(k)
    return exact


class ChainBounds:
    """The graph engine on a layer chain (:class:`vnnx.network.Network`, the view the plugins
    edit layer by layer), with results keyed by layer index as the plugins read them:
    ``pre_activation[k]`` bounds the output of ``network.layers[k]`` for each k whose next layer
    is an activation or MaxPool. ``relaxations``: as :class:`GraphEngine`'s (CAPM's MaxPool).

    Example::

        res = ChainBounds(network).compute(x_lo, x_hi, "crown")   # res.pre_activation[k]
    """

    def __init__(self, network, relaxations: Optional[Mapping[str, Relaxation]] = None,
                 device: str = "cpu", **engine_options) -> None:
        self.network = network
        self.graph = network.to_graph()
        self.engine = GraphEngine(self.graph, relaxations=relaxations, device=device, **engine_options)
        nodes = self.graph.layer_nodes
        # The node each activation reads is the previous layer's (or a Reshape of it: same values).
        self.pre_nodes = {k: self.graph.nodes[nodes[k + 1]].inputs[0]
                          for k in range(len(nodes) - 1)
                          if not self.graph.nodes[nodes[k + 1]].op.linear}

    @property
    def alpha_iterations(self) -> int:
        return self.engine.alpha_iterations

    @alpha_iterations.setter
    def alpha_iterations(self, value: int) -> None:
        self.engine.alpha_iterations = int(value)

    def compute(self, x_lower: np.ndarray, x_upper: np.ndarray, method: str = "crown",
                C: Optional[np.ndarray] = None, deadline: Optional[float] = None):
        """:meth:`GraphEngine.compute`, ``pre_activation`` keyed by layer index."""
        res = self.engine.compute(x_lower, x_upper, method, C, deadline)
        bounds = res.node_bounds
        res.pre_activation = {k: (bounds[node][0].reshape(-1).cpu().numpy(), bounds[node][1].reshape(-1).cpu().numpy())
                              for k, node in self.pre_nodes.items()}
        return res

    def lower_bounds_batch(self, x_lower: np.ndarray, x_upper: np.ndarray, C: np.ndarray,
                           method: str = "crown", info: Optional[dict] = None) -> np.ndarray:
        return self.engine.lower_bounds_batch(x_lower, x_upper, C, method, info)

    def layer_bounds(self, x_lower: np.ndarray, x_upper: np.ndarray, method: str = "crown",
                     deadline: Optional[float] = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Flattened float64 ``(lower, upper)`` of every layer's output for the box: interval
        bounds, and with CROWN those of the activations' inputs refined."""
        lo, hi = self.engine._box(np.asarray(x_lower).reshape(1, -1), np.asarray(x_upper).reshape(1, -1))
        bounds = self.engine.intermediate(lo, hi, method, deadline)
        flat = [(b[0].reshape(-1).cpu().numpy(), b[1].reshape(-1).cpu().numpy()) for b in bounds]
        return [flat[node] for node in self.graph.layer_nodes]
