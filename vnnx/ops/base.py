"""The operator protocol: what every operator module of :mod:`vnnx.ops` provides.

Tensors: every operator works on a batch of samples, ``x``: ``(B, *shape)`` where ``shape`` is the
ONNX tensor shape of one sample (the file's leading batch dim of 1 included), in float64 torch.

Bounds are propagated backward as in CROWN (Zhang et al., NeurIPS 2018, §3): a linear form
``A · y + c`` of an operator's output, ``A``: ``(B, K, *out_shape)`` for K rows, becomes a form
``sum_i A_i · x_i + c'`` of its inputs that is a *lower bound* of the original for every input in
the given bounds. An upper bound is the negated lower bound of ``-A``. Linear operators are exact
(:class:`LinearOperator`); a nonlinear operator uses its linear relaxation, whose lower-bound
slopes may be optimised (α-CROWN, Xu et al., ICLR 2021) through ``alpha``.

An operator's whole behaviour lives in its module: the ONNX builder (registered with
:func:`vnnx.ops.onnx_builder`), ``forward``, ``interval``, ``backward`` and, for piecewise-linear
operators, ``milp``. No code outside ``vnnx/ops`` looks inside an operator.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import scipy.sparse as sp
import torch

Shape = tuple[int, ...]
#: A linear map whose sparse matrix has more than this share of non-zeros takes the dense step.
SPARSE_FILL = 0.2
#: The sparse step reads an operator's matrix off dense probes only up to this many entries.
SPARSE_PROBE_ENTRIES = 2 ** 24
Bounds = tuple[torch.Tensor, torch.Tensor]


class Operator:
    """One node's operation. ``in_shapes``: the per-sample shapes of its variable inputs;
    ``out_shape``: of its output (set by the graph builder from a forward pass).

    Class attributes: ``kind`` (the ONNX-like name shown to users), ``linear`` (affine in its
    inputs), ``piecewise_linear`` (the MILP can encode it exactly), ``has_alpha`` (its relaxation
    has optimisable lower slopes), ``splittable`` (the branch and bound splits its input at 0,
    where each side makes the operator linear: :mod:`vnnx.graph_bab`)."""

    kind = "operator"
    linear = False
    piecewise_linear = True
    has_alpha = False
    splittable = False

    in_shapes: tuple[Shape, ...] = ()
    out_shape: Shape = ()

    # ------------------------------------------------------------------ evaluation
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The operator on ``(B, *in_shape)`` tensors, in their dtype (float64 or float32)."""
        raise NotImplementedError

    def interval(self, *bounds: Bounds) -> Bounds:
        """Sound elementwise bounds of the output given bounds ``(lo, hi)`` of each input."""
        raise NotImplementedError

    def backward(self, A: torch.Tensor, bounds: Sequence[Bounds],
                 alpha: Optional[torch.Tensor] = None) -> tuple[list[Optional[torch.Tensor]], torch.Tensor]:
        """CROWN's backward step: ``A``: (B, K, *out_shape) -> (one (B, K, *in_shape) coefficient
        tensor per input (None for no dependence), bias (B, K)) such that
        ``A · y >= sum_i A_i · x_i + bias`` whenever each ``x_i`` lies in ``bounds[i]``."""
        raise NotImplementedError

    def backward_sparse(self, A, bounds: Sequence[Bounds]):
        """The same step for one sample on a sparse back end: ``A`` a scipy CSR matrix (K,
        n_out) over the flattened output -> (one CSR matrix (K, n_in_i) or None per input,
        bias (K,) numpy), or None when this operator has no sparse step (or a dense one is
        faster): the engine then continues densely. Used where the coefficients are local (a
        convolution's receptive field), :meth:`vnnx.engine.GraphEngine.backward`."""
        return None

    # ------------------------------------------------------------------ splitting / refinement
    def needs_tight_input(self, lo: torch.Tensor, hi: torch.Tensor) -> Optional[torch.Tensor]:
        """For nonlinear operators: which input entries' bounds the relaxation depends on (a bool
        tensor like ``lo``); the engine refines those with CROWN. None for linear operators."""
        return None

    def split_point(self, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        """Where the branch and bound splits an input entry with bounds ``[lo, hi]`` of a
        ``splittable`` operator (elementwise, like ``lo``): 0 by default (ReLU: each side is
        linear). Operators that are not piecewise linear override it (:mod:`vnnx.ops.sshape`)."""
        return torch.zeros_like(lo)

    #: For operators that are not piecewise linear: entries narrower than this are not split.
    split_min_width = 0.0

    def alpha_init(self, lo: torch.Tensor, hi: torch.Tensor, rows: int) -> Optional[torch.Tensor]:
        """The initial optimisable lower slopes, (B, rows, *in_shape), or None."""
        return None

    def alpha_clamp(self, alpha: torch.Tensor) -> None:
        """Project ``alpha`` (in place) back onto the slopes that keep the relaxation sound."""

    def as_splittable(self, add, name: str, inputs: tuple, in_shapes: Sequence[Shape],
                      shape: Shape) -> Optional[int]:
        """How a branch and bound splits this operator when it is not ``splittable`` itself:
        write it as a subgraph of operators that are (or are linear), through ``add(name, op,
        inputs, shape, in_shapes) -> node index``, and return the node of its output
        (:func:`vnnx.graph.as_splittable`; MaxPool: a chain of ReLUs per window). None keeps the
        operator as it is."""
        return None

    # ------------------------------------------------------------------ MILP
    def milp(self, builder, cols: Sequence, bounds: Sequence, out_bounds) -> "object":
        """Add this operator's exact encoding to a :class:`vnnx.graph_milp.Builder`; ``cols`` are
        the inputs' column index arrays (flattened C order), ``bounds`` their float64 numpy
        ``(lo, hi)``, ``out_bounds`` the output's. Returns the output's column indices."""
        raise NotImplementedError(f"{self.kind} has no MILP encoding")

    def describe(self) -> str:
        return self.kind


class Relaxation:
    """A plugin's relaxation of an operator kind, used by the engine instead of the operator's
    own (``GraphEngine(relaxations={kind: Relaxation})``; CAPM's MaxPool chain). The same two
    steps as :class:`Operator`, given the operator."""

    def backward(self, op: Operator, A: torch.Tensor, bounds: Sequence[Bounds],
                 alpha: Optional[torch.Tensor] = None):
        raise NotImplementedError

    def backward_sparse(self, op: Operator, A, bounds: Sequence[Bounds]):
        return None

    #: Whether :meth:`backward` takes optimisable parameters (α-CROWN), as ``Operator.has_alpha``.
    has_alpha = False

    def alpha_init(self, op: Operator, lo: torch.Tensor, hi: torch.Tensor, rows: int) -> Optional[torch.Tensor]:
        """The initial parameters for ``rows`` spec rows (any shape :meth:`backward` reads)."""
        return None

    def alpha_clamp(self, op: Operator, alpha: torch.Tensor) -> None:
        """Project ``alpha`` (in place) back onto the parameters that keep the relaxation sound."""


class LinearOperator(Operator):
    """An affine map ``y = L(x_1, ..., x_n) + c``. Subclasses give ``forward`` and ``linear_part``
    (``L`` without ``c``) or override ``backward``; interval and bias come from them."""

    linear = True
    #: False for operators without a constant term (reshapes, sums, pooling): their backward
    #: step then adds no bias, and no zero tensor is multiplied on the hot path.
    has_constant = True

    def linear_part(self, *xs: torch.Tensor) -> torch.Tensor:
        """``L(x)``: the operator without its constant term."""
        raise NotImplementedError

    def abs_linear_part(self, *rs: torch.Tensor) -> torch.Tensor:
        """``|L|(r)`` for nonnegative ``r`` (radii): the interval rule's half-width."""
        raise NotImplementedError

    def constant(self, like: torch.Tensor) -> Optional[torch.Tensor]:
        """``c = forward(0)``, (1, *out_shape); None when it is zero (``has_constant`` False)."""
        if not self.has_constant:
            return None
        zeros = [torch.zeros((1,) + tuple(s), dtype=like.dtype, device=like.device) for s in self.in_shapes]
        return self.forward(*zeros)

    def interval(self, *bounds: Bounds) -> Bounds:
        mids = [(lo + hi) / 2 for lo, hi in bounds]
        rads = [(hi - lo) / 2 for lo, hi in bounds]
        mid = self.forward(*mids)
        rad = self.abs_linear_part(*rads)
        return mid - rad, mid + rad

    def backward(self, A, bounds, alpha=None):
        c = self.constant(A)
        bias = A.new_zeros(A.shape[:2]) if c is None else rowdot(A, c.unsqueeze(1))
        return self.transpose(A), bias

    def backward_sparse(self, A, bounds):
        if "_sparse" not in self.__dict__:
            probe = (type(self).sparse_matrices is LinearOperator.sparse_matrices and not hasattr(self, "index_map"))
            costly = probe and int(np.prod(self.out_shape)) * max(int(np.prod(s)) for s in self.in_shapes) > SPARSE_PROBE_ENTRIES
            found = None if costly else self.sparse_matrices()
            # A dense map fills the coefficients in: the dense step is faster from here on.
            if found is None or any(w.nnz > SPARSE_FILL * w.shape[0] * w.shape[1] for w in found[0]):
                self._sparse = None
            else:
                self._sparse = (found[0], found[1] if self.has_constant and np.any(found[1]) else None)
        mats = self._sparse
        if mats is None:
            return None
        ws, c = mats
        bias = np.zeros(A.shape[0]) if c is None else A @ c
        return [A @ w for w in ws], bias

    def backward_rows(self, idx: torch.Tensor, B: int, bounds):
        """:meth:`backward` of the unit rows ``A[b, r] = e_{idx[r]}`` (entries of the flattened
        output) for B samples: the first step of a refinement of this node's ``idx`` entries.
        Operators whose coefficients for a unit row are a slice of their matrix override it
        (:class:`vnnx.ops.linear.Linear`: rows of W), skipping the product with the identity."""
        A = bounds[0][0].new_zeros((B, idx.numel(), int(np.prod(self.out_shape))))
        A[:, torch.arange(idx.numel()), idx] = 1.0
        return self.backward(A.reshape((B, idx.numel()) + tuple(self.out_shape)), bounds)

    def transpose(self, A: torch.Tensor) -> list[Optional[torch.Tensor]]:
        """``A ∘ L`` per input: (B, K, *out_shape) -> [(B, K, *in_shape_i)]. By default the
        vector-Jacobian product of :meth:`linear_part` (exact for a linear map)."""
        B, K = A.shape[:2]
        xs = [torch.zeros((B * K,) + tuple(s), dtype=A.dtype, device=A.device, requires_grad=True)
              for s in self.in_shapes]
        with torch.enable_grad():
            y = self.linear_part(*xs)
            grads = torch.autograd.grad(y, xs, A.reshape((B * K,) + tuple(self.out_shape)), allow_unused=True,
                                        create_graph=A.requires_grad)
        return [None if g is None else g.reshape((B, K) + tuple(s)) for g, s in zip(grads, self.in_shapes)]

    def milp(self, builder, cols, bounds, out_bounds):
        return builder.linear(self, cols, out_bounds)

    def sparse_matrices(self):
        """``([W_i], c)``: the operator as ``y = sum_i W_i x_i + c`` on flattened tensors, each
        ``W_i`` a float64 scipy CSR matrix (n_out, n_in_i), ``c``: (n_out,). By default read off
        :meth:`transpose` applied to blocks of identity rows (n_out x n_in dense entries: see
        :meth:`backward_sparse`); a selection of entries (``index_map``, e.g. Reshape, Transpose)
        is read off directly."""
        n_out = int(np.prod(self.out_shape))
        sizes = [int(np.prod(s)) for s in self.in_shapes]
        c = self.constant(torch.zeros(1, dtype=torch.float64))
        const = np.zeros(n_out) if c is None else c.reshape(-1).numpy()
        if hasattr(self, "index_map"):
            cols = np.asarray(self.index_map())
            return [sp.csr_matrix((np.ones(n_out), (np.arange(n_out), cols)), shape=(n_out, sizes[0]))], const
        step = max(1, 2 ** 22 // max(1, max(sizes)))
        blocks: list[list] = [[] for _ in sizes]
        for r0 in range(0, n_out, step):
            r1 = min(n_out, r0 + step)
            eye = torch.zeros((1, r1 - r0, n_out), dtype=torch.float64)
            eye[0, torch.arange(r1 - r0), torch.arange(r0, r1)] = 1.0
            parts = self.transpose(eye.reshape((1, r1 - r0) + tuple(self.out_shape)))
            for i, (p, n) in enumerate(zip(parts, sizes)):
                dense = np.zeros((r1 - r0, n)) if p is None else p.reshape(r1 - r0, n).numpy()
                blocks[i].append(sp.csr_matrix(dense))
        return [sp.vstack(b, format="csr") for b in blocks], const


class Activation(Operator):
    """An elementwise nonlinear function with a linear relaxation per entry:
    ``lw x + lb <= f(x) <= uw x + ub`` on ``[lo, hi]`` (:meth:`relax`)."""

    elementwise = True

    def relax(self, lo: torch.Tensor, hi: torch.Tensor, alpha: Optional[torch.Tensor] = None):
        """``(lw, lb, uw, ub)``, each broadcastable to ``alpha``'s (B, K, *shape) when given,
        else to (B, *shape); ``lb`` may be None for zero intercepts (ReLU)."""
        raise NotImplementedError

    def function(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x):
        return self.function(x)

    def interval(self, bounds):
        # Every activation here is monotone nondecreasing.
        lo, hi = bounds
        return self.function(lo), self.function(hi)

    def backward(self, A, bounds, alpha=None):
        lo, hi = bounds[0]
        if alpha is None:   # (B, *shape) -> (B, 1, *shape), once per bounds (chunked refinements)
            lw, lb, uw, ub = memo(self, "relax", (lo, hi), lambda: tuple(
                None if t is None else t.unsqueeze(1) for t in self.relax(lo, hi)))
        else:
            lw, lb, uw, ub = self.relax(lo, hi, alpha)
        # A positive coefficient takes the lower line, a negative one the upper line. Written to
        # touch the (B, K, *shape) tensors as few times as possible: this step dominates CROWN's
        # time on batches of boxes (input splitting) and on wide convolutional layers.
        coeff = torch.where(A >= 0, lw, uw)
        coeff = coeff * A if coeff.requires_grad or A.requires_grad else coeff.mul_(A)
        bias = _signed_rowdot(A, ub, negative=True)
        if lb is not None:
            bias = bias + _signed_rowdot(A, lb, negative=False)
        return [coeff], bias

    def backward_sparse(self, A, bounds):
        lo, hi = bounds[0]
        lw, lb, uw, ub = memo(self, "relax_np", (lo, hi), lambda: tuple(
            None if t is None else torch.broadcast_to(t, lo.shape).reshape(-1).cpu().numpy()
            for t in self.relax(lo, hi)))
        d, cols = A.data, A.indices
        neg = d < 0
        rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))
        terms = np.where(neg, d * ub[cols], 0.0 if lb is None else d * lb[cols])
        out = sp.csr_matrix((d * np.where(neg, uw[cols], lw[cols]), cols, A.indptr), shape=A.shape)
        return [out], np.bincount(rows, weights=terms, minlength=A.shape[0])

    def needs_tight_input(self, lo, hi):
        return torch.ones_like(lo, dtype=torch.bool)


# _signed_rowdot looks for the live entries of layers at least this wide (on narrow ones the
# search costs more than the full sum).
SIGNED_LIVE_MIN = 1024


def _signed_rowdot(A: torch.Tensor, v: torch.Tensor, negative: bool) -> torch.Tensor:
    """``rowdot(A.clamp(max=0), v)`` (``negative``) or ``rowdot(A.clamp(min=0), v)``, reading
    only the entries where ``v`` is non-zero when they are few (a ReLU's intercepts: its
    unstable entries only) on layers of at least SIGNED_LIVE_MIN entries."""
    B, K = A.shape[:2]
    flat_v = v.reshape(v.shape[0], 1, -1)
    n = flat_v.shape[-1]
    if n >= SIGNED_LIVE_MIN and A.shape[2:].numel() == n and not v.requires_grad:
        live = torch.nonzero((flat_v != 0).any(0).reshape(-1)).reshape(-1)
        if live.numel() <= n // 4:
            part = A.reshape(B, K, n)[:, :, live]
            part = part.clamp(max=0) if negative else part.clamp(min=0)
            return rowdot(part, flat_v[:, :, live])
    return rowdot(A.clamp(max=0) if negative else A.clamp(min=0), v)


def by_sign(A):
    """A scipy CSR matrix (K, n) as (K, 2n): each positive entry in its column j, each negative
    one in column n + j. Then ``by_sign(A) @ vstack([L, U])`` applies ``L`` to the positive and
    ``U`` to the negative coefficients in one product (a relaxation's lower and upper lines)."""
    A = A.tocsr()
    n = A.shape[1]
    return sp.csr_matrix((A.data, np.where(A.data >= 0, A.indices, A.indices + n), A.indptr), shape=(A.shape[0], 2 * n))


def memo(op, name: str, tensors: Sequence[torch.Tensor], compute):
    """``compute()``, reused while ``op`` is asked again with the very same ``tensors``, unmodified
    (same objects, same in-place version counters). One slot per ``(op, name)``: a backward pass
    chunked over rows, or repeated over α steps, relaxes each operator once per set of bounds.
    Nothing is reused for tensors that carry gradients."""
    if any(t.requires_grad for t in tensors):
        return compute()
    slots = op.__dict__.setdefault("_memo", {})
    key = tuple((id(t), t._version) for t in tensors)
    hit = slots.get(name)
    # The slot keeps the tensors alive, so their ids cannot be reused by other tensors meanwhile.
    if hit is not None and hit[0] == key and all(a is b for a, b in zip(hit[1], tensors)):
        return hit[2]
    value = compute()
    slots[name] = (key, tuple(tensors), value)
    return value


def rowdot(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``Σ A * v`` over everything after the first two axes: A (B, K, *shape), v broadcastable
    to it; a batched matrix product when v is one vector per sample (B or 1, 1, *shape)."""
    B, K = A.shape[:2]
    if v.shape[1] == 1 and v.shape[0] == 1:     # one vector for every sample: one matrix-vector product
        return (A.reshape(B * K, -1) @ v.reshape(-1)).reshape(B, K)
    if v.shape[1] == 1 and v.shape[0] == B:
        return torch.bmm(A.reshape(B, K, -1), v.reshape(B, -1, 1)).squeeze(-1)
    return (A * v).flatten(2).sum(-1)


def check_auto_pad(node, attrs: dict, label: str) -> None:
    """Accept ``auto_pad`` NOTSET (explicit ``pads``) and VALID (no padding: ``pads`` absent, so
    zero); refuse SAME_UPPER / SAME_LOWER with the node named."""
    from vnnx.errors import UnsupportedOpError

    mode = attrs.get("auto_pad", b"NOTSET")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode not in ("NOTSET", "VALID"):
        raise UnsupportedOpError(f"{label}: {node.op_type} node '{node.name}': auto_pad={mode} is not supported "
                                 "(NOTSET and VALID are)")
    if mode == "VALID" and any(attrs.get("pads", [])):
        raise UnsupportedOpError(f"{label}: {node.op_type} node '{node.name}': auto_pad=VALID with non-zero pads")


def pool_window(node, attrs: dict, label: str) -> tuple[tuple, tuple, tuple]:
    """``(kernel, strides, pads)`` of a 2-D pooling node (MaxPool, AveragePool), refusing what
    vnnx does not handle (other ranks, auto_pad SAME_*, dilations) with the node named."""
    from vnnx.errors import UnsupportedOpError

    kernel = tuple(attrs["kernel_shape"])
    if len(kernel) != 2:
        raise UnsupportedOpError(f"{label}: {node.op_type} node '{node.name}' is {len(kernel)}-D; vnnx handles 2-D")
    check_auto_pad(node, attrs, label)
    if any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise UnsupportedOpError(f"{label}: {node.op_type} node '{node.name}' with dilations")
    return kernel, tuple(attrs.get("strides", [1, 1])), tuple(attrs.get("pads", [0, 0, 0, 0]))
