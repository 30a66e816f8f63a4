"""Parameter budgets: Erdős–Rényi-Kernel (ERK) per-layer shares of K, and the number of units
(nodes / filters) each hidden layer keeps so that the compact network has at most K parameters.

ERK (Evci et al., "Rigging the Lottery", 2020, Sec. 3) gives layer ``l`` the density
``min(1, ε · (n_in + n_out + kh + kw) / (n_in · n_out · kh · kw))``, with ``ε`` chosen so that the
densities times the layer sizes sum to K (layers that would exceed density 1 are clipped and ε
is solved again for the rest).

Units are structural: removing a filter removes its weights, its bias and the matching input
channel of the next layer, so a layer's parameter count depends on its neighbours' unit counts
(:meth:`.structure.Structure.param_count`). :func:`unit_counts` turns the ERK densities into unit
targets (:func:`_unit_targets`), then repairs: it removes units while the total exceeds K and adds units (to the layer
furthest below its target) while one still fits. The result is exact bookkeeping: the active
parameters equal the compact network's parameters, are ``<= K``, and no further unit fits.
"""
from __future__ import annotations

import math
from typing import Sequence

from vnnx.errors import ConfigError

from .structure import PrunableLayer, Structure


def check_budget(structure: Structure, budget: int) -> None:
    """ConfigError when ``budget`` exceeds the backbone or cannot connect input to output."""
    if isinstance(budget, bool) or int(budget) != budget:
        raise ConfigError(f"budget must be a whole number of parameters, got {budget!r}")
    if budget > structure.n_params:
        raise ConfigError(f"budget {budget} exceeds the backbone's {structure.n_params} parameters; "
                          f"train the dense backbone instead or choose budget <= {structure.n_params}")
    if budget < structure.min_params:
        raise ConfigError(f"budget {budget} is below {structure.min_params}, the minimum needed to connect "
                          f"input to output (one unit in each of the {len(structure.hidden)} hidden layers)")


def _erk_raw(layer: PrunableLayer, kernel_hw: tuple[int, int]) -> float:
    n_in, n_out = layer.n_in * layer.spatial, layer.n_units
    kh, kw = kernel_hw
    return (n_in + n_out + kh + kw) / (n_in * n_out * kh * kw)


def _kernel_hw(layer: PrunableLayer) -> tuple[int, int]:
    ks = getattr(layer.module, "kernel_size", None)
    return (int(ks[0]), int(ks[1])) if ks is not None else (1, 1)


def erk_budgets(structure: Structure, budget: float) -> list[float]:
    """Per-layer parameter budgets (all layers, output included) by ERK; they sum to ``budget``.

    Each layer's share is ``density_l * n_params_l`` with ``density_l <= 1``. Example: for a
    backbone of 89,606 parameters and ``budget=8960``, ``sum(erk_budgets(s, 8960)) == 8960``.
    """
    sizes = [float(l.n_params) for l in structure.layers]
    if budget > sum(sizes) + 1e-9:
        raise ConfigError(f"budget {budget} exceeds the backbone's {int(sum(sizes))} parameters")
    raw = [_erk_raw(l, _kernel_hw(l)) for l in structure.layers]
    dense: set[int] = set()
    while True:
        rest = budget - sum(sizes[i] for i in dense)
        denom = sum(raw[i] * sizes[i] for i in range(len(sizes)) if i not in dense)
        eps = rest / denom if denom > 0 else 0.0
        over = [i for i in range(len(sizes)) if i not in dense and eps * raw[i] > 1.0]
        if not over:
            break
        dense.update(over)
    return [sizes[i] if i in dense else eps * raw[i] * sizes[i] for i in range(len(sizes))]


def budget_counts(structure: Structure, budget: int, counts=None) -> list[int]:
    """``counts`` (hidden units per layer), or :func:`unit_counts` when None, checked to fit
    ``budget`` parameters as a compact network."""
    counts = list(counts) if counts is not None else unit_counts(structure, budget)
    if structure.param_count(counts) > budget:
        raise ConfigError(f"unit counts {counts} need {structure.param_count(counts)} "
                          f"parameters, more than the budget {budget}")
    return counts


def unit_counts(structure: Structure, budget: int) -> list[int]:
    """Units to keep in each hidden layer so the compact network has ``<= budget`` parameters,
    following the ERK shares, and maximal: adding a unit to any layer would exceed the budget.

    Raises ConfigError for a budget above the backbone or below :attr:`Structure.min_params`.
    """
    check_budget(structure, budget)
    shares = erk_budgets(structure, float(budget))
    hidden = structure.hidden
    targets = _unit_targets(structure, shares)
    counts = [min(l.n_units, max(1, int(round(t)))) for l, t in zip(hidden, targets)]
    total = structure.param_count(counts)
    # Too many: take units from the layer with the largest fraction kept (ties: later layers).
    while total > budget:
        candidates = [i for i, c in enumerate(counts) if c > 1]
        if not candidates:  # pragma: no cover - excluded by check_budget
            raise ConfigError(f"budget {budget} is below the minimum {structure.min_params}")
        i = max(candidates, key=lambda j: (counts[j] / hidden[j].n_units, j))
        counts[i] -= 1
        total = structure.param_count(counts)
    # Room left: add units where the layer is furthest below its ERK target, while one fits.
    while True:
        options = []
        for i, c in enumerate(counts):
            if c < hidden[i].n_units:
                trial = counts.copy()
                trial[i] += 1
                t = structure.param_count(trial)
                if t <= budget:
                    options.append((counts[i] / targets[i], i, t))
        if not options:
            break
        _, i, total = min(options)
        counts[i] += 1
    return counts


def _unit_targets(structure: Structure, shares: Sequence[float]) -> list[float]:
    """Fractional unit counts of the hidden layers from the ERK densities ``d_l = share_l / size_l``.

    A unit of hidden layer ``l`` is both an output of layer ``l`` and an input of layer ``l+1``;
    keeping a fraction ``f_l`` of them makes layer ``l+1`` about ``f_l * f_(l+1)`` dense, so each
    hidden layer keeps ``f_l = sqrt(d_l * d_(l+1))``, the geometric mean of the densities of the
    two layers it joins."""
    dens = [share / l.n_params for share, l in zip(shares, structure.layers)]
    return [max(1.0, min(float(l.n_units), l.n_units * (dens[i] * dens[i + 1]) ** 0.5))
            for i, l in enumerate(structure.hidden)]


def budget_from_fraction(structure: Structure, fraction: float) -> int:
    """``floor(fraction * n_params)``, e.g. 0.1 for 10% of the backbone."""
    if not 0 < fraction <= 1:
        raise ConfigError(f"budget fraction must lie in (0, 1], got {fraction}")
    return int(math.floor(fraction * structure.n_params))
