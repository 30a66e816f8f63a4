"""Window geometry of a 2-D max pool with ONNX semantics (−∞ padding, ``ceil_mode``).

One source of truth: the windows are those of :class:`vnnx.network.MaxPool`, the plain view
that the MILP, the passes and the forward evaluation use, and that onnxruntime agrees with.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Mapping

import torch

from vnnx.errors import UnsupportedOpError
from vnnx.network import MaxPool


@dataclass(frozen=True)
class PoolSpec:
    """Kernel ``(kh, kw)``, stride ``(sh, sw)``, pads ``(top, left, bottom, right)``, ceil_mode."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    ceil_mode: bool = False

    @classmethod
    def from_onnx_attrs(cls, attr: Mapping, node: str = "MaxPool") -> "PoolSpec":
        """Read the attributes of an ONNX ``MaxPool`` node (as auto_LiRPA's parser hands them).

        ONNX orders ``pads`` as ``[top, left, bottom, right]``. Raises
        :class:`UnsupportedOpError` naming ``node`` for dilation, ``auto_pad`` or non-2-D pools.
        """
        kernel = tuple(int(k) for k in attr["kernel_shape"])
        if len(kernel) != 2:
            raise UnsupportedOpError(f"{node}: only 2-D MaxPool is supported, kernel_shape={kernel}")
        stride = tuple(int(s) for s in attr.get("strides", (1, 1)))
        pads = tuple(int(p) for p in attr.get("pads", (0, 0, 0, 0)))
        if any(int(d) != 1 for d in attr.get("dilations", (1, 1))):
            raise UnsupportedOpError(f"{node}: MaxPool dilation {attr['dilations']} is not supported")
        auto_pad = attr.get("auto_pad", "NOTSET")
        if isinstance(auto_pad, bytes):
            auto_pad = auto_pad.decode()
        if auto_pad not in ("NOTSET", ""):
            raise UnsupportedOpError(f"{node}: MaxPool auto_pad={auto_pad!r} is not supported")
        if int(attr.get("storage_order", 0)) != 0:
            raise UnsupportedOpError(f"{node}: MaxPool storage_order=1 is not supported")
        return cls(kernel, stride, pads, bool(attr.get("ceil_mode", 0)))  # type: ignore[arg-type]

    def plain(self, channels: int, height: int, width: int) -> MaxPool:
        """The :class:`vnnx.network.MaxPool` layer with this geometry on a (C, H, W) input."""
        return MaxPool((channels, height, width), self.kernel, self.stride, self.pads, self.ceil_mode)

    def out_hw(self, height: int, width: int) -> tuple[int, int]:
        return self.plain(1, height, width).out_shape[1:]  # type: ignore[return-value]

    def windows(self, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Window cells of one channel: ``index`` (P, K) int64 into the flattened (H·W) plane and
        ``valid`` (P, K) bool, with P = OH·OW outputs and K = kh·kw slots. Slots that fall in the
        padding are invalid (their index is 0 and must be ignored): −∞ never wins a max.
        """
        return _windows(self, height, width)


@lru_cache(maxsize=64)
def _windows(spec: PoolSpec, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        index, valid = spec.plain(1, height, width).window_table()
    except UnsupportedOpError:
        raise UnsupportedOpError(
            f"MaxPool {spec} on a {height}x{width} input has a window made of padding only") from None
    return torch.from_numpy(index), torch.from_numpy(valid)


def gather_windows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x``: (..., C, H, W) -> (..., C, P, K) values of each window slot (invalid slots hold
    the value of cell 0; mask them with ``valid``)."""
    flat = x.flatten(-2)
    idx = index.to(x.device).reshape(-1).expand(*flat.shape[:-1], -1)
    return torch.gather(flat, -1, idx).reshape(*flat.shape[:-1], *index.shape)


def max_over_windows(x: torch.Tensor, spec: PoolSpec) -> torch.Tensor:
    """Exact max pool with −∞ padding: (B, C, H, W) -> (B, C, OH, OW)."""
    height, width = x.shape[-2:]
    index, valid = spec.windows(height, width)
    vals = gather_windows(x, index).masked_fill(~valid.to(x.device), float("-inf"))
    return vals.amax(-1).reshape(*x.shape[:-2], *spec.out_hw(height, width))
