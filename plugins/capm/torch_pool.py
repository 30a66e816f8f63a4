"""The single-node ONNX max pool lives in the core (:mod:`vnnx.torch_pool`); re-exported here."""
from vnnx.torch_pool import PaddedMaxPool2d, floor_mode_pads, padded_max_pool2d

__all__ = ["PaddedMaxPool2d", "floor_mode_pads", "padded_max_pool2d"]
