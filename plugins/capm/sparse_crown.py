"""CAPM in vnnx's sparse CROWN engine, which refines every neuron: a cost that does not depend on ε.

auto_LiRPA's CROWN refines only the neurons that IBP leaves unstable, so its time grows with ε
(docs/capm.md); CAPM's dual network bounds every neuron in one fixed pass. This is that pass:
:class:`vnnx.sparse_crown.SparseCrown` with each MaxPool window relaxed by the CAPM chain of
ReLUs (:func:`relaxation.relax_windows`, the same code as the auto_LiRPA operator), its step
parameters ``a_j`` and ``β_j`` optimised under α-CROWN.
"""
from __future__ import annotations

from typing import Optional

import torch

from vnnx.sparse_crown import PoolRelaxation, SparseCrown

from .relaxation import relax_windows


class SparseCapmCrown(SparseCrown):
    """CROWN / α-CROWN with the CAPM MaxPool relaxation, every neuron refined."""

    def relax_pool(self, op, lower: torch.Tensor, upper: torch.Tensor,
                   params: Optional[tuple] = None) -> PoolRelaxation:
        index = torch.as_tensor(op.index)
        P, K = index.shape
        cells = (lower[index].view(1, 1, P, K), upper[index].view(1, 1, P, K))
        a = b = None
        if params:   # K == 1 windows have no step, hence no parameters
            a, b = (p.view(-1, 1, 1, P, K - 1) for p in params)
        rel = relax_windows(*cells, torch.as_tensor(op.valid), lower_slope=a, upper_mix=b)
        # the chain visits the slots in rel.order: the weights are in that order
        sorted_index = torch.gather(index.view(1, 1, P, K), -1, rel.order).view(P, K)
        steps = () if K == 1 else (rel.lower_slope.reshape(-1, P, K - 1), rel.upper_mix.reshape(-1, P, K - 1))
        return PoolRelaxation(sorted_index, rel.w_lower.reshape(-1, P, K), rel.w_upper.reshape(-1, P, K),
                              rel.b_upper.reshape(-1, P), steps)
