"""Loss terms of Xiao et al. (ICLR 2019): L1 weight sparsity and the RS (ReLU stability) loss.

Each factory returns a :data:`vnnx.training.LossTerm`, ``term(model, x, y, epsilon) -> scalar``
(already multiplied by its weight), so terms compose by listing them::

    from vnnx.training import train, linear_ramp
    terms = [l1_term(2e-5), rs_term(1e-4, bounds="improved", epsilon=0.1)]
    train(model, x, y, loss_terms=terms, ...)

``model`` must be a Sequential that :func:`.chain.chain_from_sequential` accepts (every
architecture in :mod:`vnnx.architectures` is). ``x`` is the clean batch, (B, C, H, W) or
(B, n) in model-input space.
"""
from __future__ import annotations

import math
import weakref
from typing import Optional, Sequence

import torch
from torch import nn

from vnnx.errors import ConfigError, VnnxError
from vnnx.training import LossTerm

from .bounds import IA_METHODS, Bounds, input_box, pre_activation_bounds
from .chain import Chain, chain_from_sequential

#: RS-loss bound methods: naive IA, improved IA (Appendix C), auto_LiRPA CROWN-IBP.
RS_BOUNDS = ("naive", "improved", "crown-ibp")


# ------------------------------------------------------------------------------------- L1
def _weighted_layers(model: nn.Module, input_shape: tuple[int, ...]) -> list[tuple[nn.Module, float]]:
    """(layer, reuse factor) for every Linear/Conv2d, in forward order. A conv weight is used
    once per output position, so it counts H_out * W_out times: the fully connected matrix the
    conv stands for has that many copies of it (the paper's code: ``14*14*|W_conv1|``)."""
    found: list[tuple[nn.Module, float]] = []
    hooks = []

    def hook(module, _inp, out):
        factor = float(math.prod(out.shape[2:])) if isinstance(module, nn.Conv2d) else 1.0
        found.append((module, factor))

    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            hooks.append(m.register_forward_hook(hook))
    try:
        ref = next(iter(model.parameters()))
        with torch.no_grad():
            model(torch.zeros((1,) + tuple(input_shape), dtype=ref.dtype, device=ref.device))
    finally:
        for h in hooks:
            h.remove()
    return found


def l1_penalty(model: nn.Module, input_shape: Sequence[int], *, reuse_weighted: bool = True,
               include_output_layer: bool = False, include_bias: bool = False) -> torch.Tensor:
    """``Σ_layers factor · Σ|W|`` over the Linear/Conv2d layers of ``model``.

    ``input_shape``: per-sample, e.g. (1, 28, 28). ``reuse_weighted``: conv weights count once
    per output position (see :func:`_weighted_layers`). The output layer is left out by
    default, as in the paper's code (it regularises the hidden layers only).
    """
    layers = _weighted_layers(model, tuple(input_shape))
    if not include_output_layer and layers:
        layers = layers[:-1]
    ref = next(iter(model.parameters()))
    total = torch.zeros((), dtype=ref.dtype, device=ref.device)
    for module, factor in layers:
        f = factor if reuse_weighted else 1.0
        total = total + f * module.weight.abs().sum()
        if include_bias and module.bias is not None:
            total = total + f * module.bias.abs().sum()
    return total


def l1_term(weight: float, *, reuse_weighted: bool = True, include_output_layer: bool = False,
            include_bias: bool = False) -> LossTerm:
    """L1 weight penalty times ``weight`` (paper, MNIST ε=0.1: 2e-5), as a loss term.

    Example: ``train(model, x, y, loss_terms=[l1_term(2e-5)])``.
    """
    if weight < 0:
        raise ConfigError(f"l1 weight must be >= 0, got {weight}")

    def term(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilon: float) -> torch.Tensor:
        return weight * l1_penalty(model, tuple(x.shape[1:]), reuse_weighted=reuse_weighted,
                                   include_output_layer=include_output_layer, include_bias=include_bias)
    return term


# ------------------------------------------------------------------------------------- RS
def rs_loss(pre_activation: Sequence[Bounds], layer_weights: Optional[Sequence[float]] = None,
            scale: float = 1.0) -> torch.Tensor:
    """RS loss (paper, Eq. 5 and its code): ``Σ_layers w_j · mean_batch Σ_neurons −tanh(1 + scale·l·u)``.

    ``pre_activation``: one ``(l, u)`` pair of (B, n_j) tensors per ReLU layer. Minimising it
    raises ``l·u``: an unstable ReLU (``l < 0 < u``, ``l·u < 0``) is pushed towards a fixed
    sign, and the push fades (tanh saturates) once ``l·u`` is well above −1.
    """
    if layer_weights is not None and len(layer_weights) != len(pre_activation):
        raise ConfigError(f"rs layer_weights has {len(layer_weights)} entries but the network has "
                          f"{len(pre_activation)} ReLU layers")
    total = None
    for j, (lower, upper) in enumerate(pre_activation):
        w = 1.0 if layer_weights is None else float(layer_weights[j])
        layer = -torch.tanh(1.0 + scale * lower * upper).reshape(lower.shape[0], -1).sum(dim=1).mean()
        total = w * layer if total is None else total + w * layer
    if total is None:
        raise VnnxError("RS loss: the network has no ReLU")
    return total


class _ChainCache:
    """One chain per (model, input shape); parameters are shared, so it stays current."""

    def __init__(self) -> None:
        self._cache: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()

    def get(self, model: nn.Module, shape: tuple[int, ...]) -> Chain:
        per_model = self._cache.setdefault(model, {})
        if shape not in per_model:
            per_model[shape] = chain_from_sequential(model, shape)
        return per_model[shape]


class CrownIbpBounds:
    """Pre-activation bounds from auto_LiRPA: each ReLU input by CROWN, with IBP bounds for the
    ReLUs before it (CROWN-IBP per layer, Zhang et al. 2020), intersected with IBP.

    The bounded module shares the model's parameters, so gradients reach the model.
    """

    def __init__(self) -> None:
        self._modules: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()

    def _bounded(self, model: nn.Module, shape: tuple[int, ...]):
        per_model = self._modules.setdefault(model, {})
        if shape in per_model:
            return per_model[shape]
        from vnnx.bounds import tied_bounded_module

        bounded = tied_bounded_module(model, shape)
        per_model[shape] = bounded
        return bounded

    def __call__(self, model: nn.Module, lo: torch.Tensor, hi: torch.Tensor,
                 input_shape: tuple[int, ...]) -> list[Bounds]:
        from vnnx._compat import import_auto_lirpa

        lirpa = import_auto_lirpa()
        bounded = self._bounded(model, input_shape)
        # BoundParams.forward sets requires_grad = training on the (shared) parameter.
        bounded.train()
        batch = lo.shape[0]
        x_lo, x_hi = lo.reshape((batch,) + input_shape), hi.reshape((batch,) + input_shape)
        x = lirpa.BoundedTensor((x_lo + x_hi) / 2, lirpa.PerturbationLpNorm(norm=float("inf"), x_L=x_lo, x_U=x_hi))
        bounded.compute_bounds(x=(x,), method="IBP")
        nodes = [relu.inputs[0] for relu in bounded.relus]
        ibp = {n.name: (n.lower, n.upper) for n in nodes}
        out: list[Bounds] = []
        for node in nodes:
            shape = tuple(node.output_shape[1:])
            p = math.prod(shape)
            c = torch.eye(p, dtype=lo.dtype).reshape((1, p) + shape).expand((batch, p) + shape)
            lower, upper = bounded.compute_bounds(x=(x,), C=c, method="CROWN", final_node_name=node.name,
                                                  intermediate_layer_bounds=dict(ibp))
            il, iu = ibp[node.name]
            out.append((torch.maximum(lower.reshape(batch, -1), il.reshape(batch, -1)),
                        torch.minimum(upper.reshape(batch, -1), iu.reshape(batch, -1))))
        return out


def rs_term(weight: float, *, bounds: str = "naive", epsilon: Optional[float] = None,
            clip: Optional[tuple[float, float]] = (0.0, 1.0), layer_weights: Optional[Sequence[float]] = None,
            scale: float = 1.0, chunk_size: Optional[int] = None) -> LossTerm:
    """RS loss times ``weight`` (paper, MNIST ε=0.1: 1e-4 to 12e-4), as a loss term.

    ``bounds``: how ``(l, u)`` are estimated over ``{|x' - x|_inf <= ε} ∩ clip``: 'naive' IA
    (the paper code's default, cheap), 'improved' IA (Appendix C; memory grows with
    batch x width², use small nets or ``chunk_size``), or 'crown-ibp' (auto_LiRPA).
    ``epsilon``: the radius of those boxes; the paper uses the final ε from the first step on,
    ``None`` uses the training loop's scheduled ε instead.

    Example: ``rs_term(1e-4, bounds="naive", epsilon=0.1)``.
    """
    if weight < 0:
        raise ConfigError(f"rs weight must be >= 0, got {weight}")
    if bounds not in RS_BOUNDS and bounds not in IA_METHODS:
        raise ConfigError(f"unknown RS bound method {bounds!r}; choose one of {', '.join(RS_BOUNDS)}")
    chains = _ChainCache()
    lirpa = CrownIbpBounds() if bounds == "crown-ibp" else None

    def term(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
        radius = float(eps if epsilon is None else epsilon)
        shape = tuple(int(d) for d in x.shape[1:])
        lo, hi = input_box(x, radius, clip)
        if lirpa is not None:
            pre = lirpa(model, lo, hi, shape)
        else:
            pre = pre_activation_bounds(chains.get(model, shape), lo, hi, bounds, chunk_size)
        return weight * rs_loss(pre, layer_weights, scale)
    return term


def model_pre_activation_bounds(model: nn.Module, x: torch.Tensor, epsilon: float, method: str = "naive",
                                clip: Optional[tuple[float, float]] = (0.0, 1.0),
                                chunk_size: Optional[int] = None) -> list[Bounds]:
    """Pre-activation bounds of every ReLU of ``model`` over the ε-boxes around ``x``
    ((B, ...) clean inputs), by 'naive', 'improved' or 'crown-ibp'."""
    shape = tuple(int(d) for d in x.shape[1:])
    lo, hi = input_box(x, epsilon, clip)
    if method == "crown-ibp":
        return CrownIbpBounds()(model, lo, hi, shape)
    return pre_activation_bounds(chain_from_sequential(model, shape), lo, hi, method, chunk_size)
