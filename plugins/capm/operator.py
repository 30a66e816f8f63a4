"""``BoundCapmMaxPool``: an auto_LiRPA bound operator for ONNX ``MaxPool`` (CAPM relaxation).

Handles any kernel, stride (overlapping windows included), per-side padding with −∞ semantics
and ``ceil_mode``; dilation must be 1. The pool input may have any sign.

* ``forward``: exact max over each window (padding never wins).
* ``interval_propagate`` (IBP): ``[max l, max u]`` per window, the exact interval of a max.
* ``bound_backward`` (CROWN): the window relaxation of :mod:`.relaxation`, back-substituted:
  for ``λ·max`` the lower bound takes ``λ⁺·w + λ⁻·v`` and bias ``λ⁻·b``, the upper bound the
  mirror image; both go through one helper, :func:`_substitute`.
* α-CROWN: the lower slopes ``a_j`` and upper mixes ``β_j`` of every window step are
  parameters, per start node and spec row.

Patches-mode ``A`` (from a following convolution) is converted to a dense matrix, so the op
works under auto_LiRPA's default ``conv_mode='patches'`` as well as ``'matrix'``.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional

import torch
from torch import Tensor

from vnnx._compat import import_auto_lirpa

import_auto_lirpa()  # compat patches before auto_LiRPA's modules load
from auto_LiRPA.operators.activation import BoundOptimizableActivation
from auto_LiRPA.patches import Patches

from .geometry import PoolSpec, gather_windows, max_over_windows
from .relaxation import WindowRelaxation, relax_windows


class BoundCapmMaxPool(BoundOptimizableActivation):
    """Bound operator for ``onnx::MaxPool``; install with :func:`vnnx_plugins.capm.install`.

    ``options`` (auto_LiRPA's ``bound_opts``) may carry ``{'capm': {'order': 'lower'|'natural'}}``.
    """

    def __init__(self, attr=None, inputs=None, output_index=0, options=None):
        super().__init__(attr, inputs, output_index, options)
        attr = attr or {}
        self.spec = PoolSpec.from_onnx_attrs(attr, node=f"MaxPool {attr.get('name', '')}".strip())
        self.order = ((options or {}).get("capm") or {}).get("order", "lower")
        self.requires_input_bounds = [0]
        self.alpha = OrderedDict()
        # alpha[start] has shape (2, spec, batch, 2, C, P, K−1): [lower/upper pass], spec row,
        # batch, [a_j / β_j], channel, window, step. auto_LiRPA needs the batch at dim 2.
        self.alpha_batch_dim = 2

    # ---- concrete values ----------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        return max_over_windows(x, self.spec)

    def interval_propagate(self, *v):
        lower, upper = v[0][0], v[0][1]
        return self.forward(lower), self.forward(upper)

    # ---- relaxation -----------------------------------------------------------------------
    def _relax(self, x, lower_slope: Optional[Tensor] = None,
               upper_mix: Optional[Tensor] = None) -> tuple[WindowRelaxation, Tensor]:
        """The window relaxation on the current input bounds, and the input-cell index of every
        sorted slot, (B, C, P, K)."""
        index, valid = self.spec.windows(*x.lower.shape[-2:])
        rel = relax_windows(gather_windows(x.lower, index), gather_windows(x.upper, index),
                            valid, lower_slope=lower_slope, upper_mix=upper_mix, order=self.order)
        cells = index.to(rel.order.device).expand_as(rel.order)
        return rel, torch.gather(cells, -1, rel.order)

    def _params(self, start_node, side: int, spec_rows: int):
        """α-CROWN parameters ``(a, β)`` for one pass, or ``(None, None)`` for the CROWN choice."""
        if self.opt_stage not in ("opt", "reuse") or start_node is None:
            return None, None
        alpha = self.alpha.get(start_node.name)
        if alpha is None or alpha.shape[1] not in (1, spec_rows):
            # E.g. sparse intermediate specs (auto_LiRPA does not pass their indices to
            # non-ReLU activations): any slope is sound, fall back to the CROWN choice.
            return None, None
        alpha = alpha[side].clamp(0, 1)
        return alpha[:, :, 0], alpha[:, :, 1]

    def bound_backward(self, last_lA, last_uA, x, start_node=None, start_shape=None, **kwargs):
        last_lA, last_uA = (_as_matrix(a, self.output_shape) for a in (last_lA, last_uA))
        spec_rows = (last_lA if last_lA is not None else last_uA).shape[0]
        in_shape = x.lower.shape
        base = None
        results = []
        for side, last_A in ((0, last_lA), (1, last_uA)):
            if last_A is None:
                results.append((None, 0))
                continue
            a, beta = self._params(start_node, side, spec_rows)
            if a is None:
                base = base or self._relax(x)
                rel, cells = base
            else:
                rel, cells = self._relax(x, a, beta)
            zero = torch.zeros_like(rel.b_upper)
            if side == 0:   # lower bound of λ·max: λ⁺ takes the lower relaxation, λ⁻ the upper
                results.append(_substitute(last_A, cells, in_shape, rel.w_lower, zero, rel.w_upper, rel.b_upper))
            else:           # upper bound: the mirror image
                results.append(_substitute(last_A, cells, in_shape, rel.w_upper, rel.b_upper, rel.w_lower, zero))
        (lA, lbias), (uA, ubias) = results
        return [(lA, uA)], lbias, ubias

    # ---- α-CROWN ----------------------------------------------------------------------------
    def init_opt_parameters(self, start_nodes):
        x = self.inputs[0]
        rel, _ = self._relax(x)
        init = torch.stack([rel.lower_slope, rel.upper_mix], dim=1)   # (B, 2, C, P, K−1)
        optimize_intermediate = bool(self.options.get("enable_opt_interm_bounds", False))
        self.alpha = OrderedDict()
        for name, out_shape, _unstable in start_nodes:
            if name == "_forward":
                continue
            if isinstance(out_shape, int):      # the final node (or shared slopes)
                rows = out_shape
            else:                               # intermediate node: full spec only if optimised
                rows = int(torch.Size(out_shape).numel()) if optimize_intermediate else 1
            self.alpha[name] = init.detach().unsqueeze(0).unsqueeze(0).repeat(
                2, rows, *([1] * init.ndim)).requires_grad_()

    def clip_alpha_(self):
        for alpha in self.alpha.values():
            alpha.data.clamp_(0.0, 1.0)

    def dump_optimized_params(self):
        return {name: alpha.detach().clone() for name, alpha in self.alpha.items()}

    def restore_optimized_params(self, alpha):
        self.alpha = OrderedDict((name, a.clone().requires_grad_()) for name, a in alpha.items())


def _substitute(last_A: Tensor, cells: Tensor, in_shape, w_pos: Tensor, b_pos: Tensor,
                w_neg: Tensor, b_neg: Tensor) -> tuple[Tensor, Tensor]:
    """Back-substitute ``A·max`` through the window bounds ``max ≷ w·x + b``.

    ``last_A``: (S, B, C, OH, OW); ``cells``: (B, C, P, K) input-cell index of each slot;
    ``w_*``: ([S,] B, C, P, K), ``b_*``: ([S,] B, C, P). ``A⁺`` takes ``(w_pos, b_pos)`` and
    ``A⁻`` ``(w_neg, b_neg)``. Returns ``next_A`` (S, B, C, H, W) and the bias (S, B).
    """
    A = last_A.flatten(-2)                                     # (S, B, C, P)
    A_pos, A_neg = A.clamp(min=0), A.clamp(max=0)
    coeff = A_pos.unsqueeze(-1) * w_pos + A_neg.unsqueeze(-1) * w_neg    # (S, B, C, P, K)
    bias = (A_pos * b_pos + A_neg * b_neg).flatten(2).sum(-1)            # (S, B)
    next_A = torch.zeros(*A.shape[:3], in_shape[-2] * in_shape[-1], dtype=A.dtype, device=A.device)
    index = cells.flatten(-2).expand(*A.shape[:3], -1)
    next_A.scatter_add_(-1, index, coeff.flatten(-2))
    return next_A.reshape(*A.shape[:3], *in_shape[-2:]), bias


def _as_matrix(last_A, out_shape):
    """Patches -> dense (S, B, C, OH, OW); tensors pass through."""
    if isinstance(last_A, Patches):
        return last_A.to_matrix(out_shape).transpose(0, 1)
    return last_A
