"""Compaction: the masked backbone as a physically smaller dense network.

Dead FC nodes lose their row and bias and the matching input column of the next layer; dead conv
filters lose their output channel and bias and the matching input channel of the next conv (or,
after a Flatten, their block of H*W columns of the next Linear). The result has exactly
:meth:`.sparsity.DynamicSparsity.active_parameters` parameters and the same outputs as the
masked network (checked in onnxruntime by :func:`export_compact`).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from torch import nn

from vnnx.errors import VnnxError

from .sparsity import DynamicSparsity


def count_parameters(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def compact(sparsity: DynamicSparsity) -> nn.Sequential:
    """A new dense ``nn.Sequential`` holding only the live units of ``sparsity`` (the model is not changed).

    Uses the active values (``dense * masks``), i.e. the network :meth:`DynamicSparsity.finalize`
    leaves. Example: ``small = compact(sparsity); assert count_parameters(small) <= budget``.
    """
    model = sparsity.model
    structure = sparsity.structure
    masks = sparsity.masks()
    new = copy.deepcopy(model)
    prev_keep = torch.arange(structure.layers[0].n_in)
    for i, layer in enumerate(structure.layers):
        keep = (torch.nonzero(sparsity.live[i]).flatten() if i < len(sparsity.live)
                else torch.arange(layer.n_units))
        cols = (prev_keep[:, None] * layer.spatial + torch.arange(layer.spatial)[None, :]).flatten()
        w = sparsity.dense[f"{layer.index}.weight"] * masks[f"{layer.index}.weight"]
        w = w.index_select(0, keep).index_select(1, cols).contiguous()
        old = layer.module
        if isinstance(old, nn.Conv2d):
            m = nn.Conv2d(len(cols), len(keep), old.kernel_size, stride=old.stride, padding=old.padding,
                          dilation=old.dilation, bias=old.bias is not None, padding_mode=old.padding_mode)
        else:
            m = nn.Linear(len(cols), len(keep), bias=old.bias is not None)
        m.weight.copy_(w)
        if old.bias is not None:
            b = sparsity.dense[f"{layer.index}.bias"] * masks[f"{layer.index}.bias"]
            m.bias.copy_(b.index_select(0, keep))
        new[layer.index] = m.to(old.weight.dtype)
        prev_keep = keep
    return new.eval()


@torch.no_grad()
def masked_network(sparsity: DynamicSparsity) -> nn.Sequential:
    """A copy of the backbone with every inactive entry zeroed (the reference for the check)."""
    new = copy.deepcopy(sparsity.model)
    masks = sparsity.masks()
    for name, p in new.named_parameters():
        if name in masks:
            p.copy_(sparsity.dense[name] * masks[name])
    return new.eval()


def export_compact(sparsity: DynamicSparsity, path: Union[str, Path]) -> nn.Sequential:
    """Compact, check, write. The ONNX file of the compact network must agree in onnxruntime
    with the masked network on seeded random inputs (:func:`vnnx.io.onnx.export_onnx`), else
    :class:`VnnxError` and no file. Returns the compact module."""
    from vnnx.io.onnx import export_onnx

    small = compact(sparsity)
    n = count_parameters(small)
    if n != sparsity.active_parameters() or n > sparsity.budget:
        raise VnnxError(f"{path}: compact network has {n} parameters, active {sparsity.active_parameters()}, "
                        f"budget {sparsity.budget}")
    reference = masked_network(sparsity)
    shape = (1,) + tuple(sparsity.structure.input_shape)

    def ref(x: np.ndarray) -> np.ndarray:
        xt = torch.as_tensor(np.asarray(x, dtype=np.float32)).reshape((len(x),) + shape[1:])
        with torch.no_grad():
            return reference(xt).numpy()

    export_onnx(small, shape, path, reference=ref)
    return small


def outputs_agree(a: nn.Module, b: nn.Module, x: torch.Tensor, atol: float = 1e-5) -> bool:
    """Whether two modules give the same outputs on ``x`` (a float tolerance, for tests)."""
    with torch.no_grad():
        return bool(torch.allclose(a(x), b(x), atol=atol, rtol=1e-5))


def layer_widths(model: nn.Module) -> list[int]:
    """Output units of each Linear/Conv2d, in order (for reports)."""
    return [m.out_features if isinstance(m, nn.Linear) else m.out_channels
            for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


__all__: Sequence[str] = ("compact", "count_parameters", "export_compact", "layer_widths", "masked_network",
                          "outputs_agree")
