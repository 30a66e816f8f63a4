"""BatchNormalization (inference): ``y = scale (x - mean) / sqrt(var + eps) + B`` per channel
(axis 1 of the ONNX tensor). The graph builder folds it into a preceding Conv or Linear whose
output nothing else reads; otherwise it stays this per-channel affine operator."""
from __future__ import annotations

import numpy as np
import torch

from vnnx.errors import UnsupportedOpError
from vnnx.ops import Var, onnx_builder
from vnnx.ops.base import LinearOperator


class ChannelAffine(LinearOperator):
    """``y = x * scale + shift`` with ``scale``/``shift`` broadcast over the per-sample shape."""

    kind = "BatchNormalization"

    def __init__(self, scale: np.ndarray, shift: np.ndarray) -> None:
        self.scale = torch.as_tensor(np.asarray(scale, dtype=np.float64))
        self.shift = torch.as_tensor(np.asarray(shift, dtype=np.float64))

    def forward(self, x):
        return x * self.scale.to(x) + self.shift.to(x)

    def linear_part(self, x):
        return x * self.scale.to(x)

    def abs_linear_part(self, r):
        return r * self.scale.abs().to(r)

    def transpose(self, A):
        return [A * self.scale.to(A)]

    def constant(self, like):
        return torch.broadcast_to(self.shift.to(like), tuple(self.out_shape)).unsqueeze(0)

    def sparse_matrices(self):
        import scipy.sparse as sp

        scale = torch.broadcast_to(self.scale, tuple(self.out_shape)).reshape(-1).numpy()
        shift = torch.broadcast_to(self.shift, tuple(self.out_shape)).reshape(-1).numpy()
        return [sp.diags(scale, format="csr")], shift.copy()


def batchnorm_scale_shift(attrs, args, rank: int):
    """The per-channel (scale, shift) of a BatchNormalization node, shaped (C, 1, ..., 1) to
    broadcast over a per-sample tensor of ``rank`` dims whose axis 1 is the channel."""
    gamma, beta, mean, var = (np.asarray(a, dtype=np.float64) for a in args[1:5])
    scale = gamma / np.sqrt(var + float(attrs.get("epsilon", 1e-5)))
    shift = beta - mean * scale
    tail = (1,) * (rank - 2)
    return scale.reshape((-1,) + tail), shift.reshape((-1,) + tail)


@onnx_builder("BatchNormalization")
def _batchnorm(node, attrs, args, label):
    x = args[0]
    if not isinstance(x, Var) or any(isinstance(a, Var) for a in args[1:5]) or len(args) < 5:
        raise UnsupportedOpError(f"{label}: BatchNormalization node '{node.name}' needs constant statistics")
    if attrs.get("training_mode", 0) or len(node.output) > 1:
        raise UnsupportedOpError(f"{label}: BatchNormalization node '{node.name}' in training mode")
    if len(x.shape) < 2:
        raise UnsupportedOpError(f"{label}: BatchNormalization node '{node.name}' on a rank-{len(x.shape)} tensor")
    scale, shift = batchnorm_scale_shift(attrs, args, len(x.shape))
    return ChannelAffine(scale, shift), [x]
