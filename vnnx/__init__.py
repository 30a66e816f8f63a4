"""vnnx: verification-friendly neural networks, and their verification.

Importing vnnx applies the compatibility patches in :mod:`vnnx._compat` (the one allowed side
effect) so that auto_LiRPA 0.3 and onnx2torch load on torch 2.13 / numpy 2.
"""
from vnnx import _compat

_compat.apply()

from vnnx.errors import VnnxError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["VnnxError", "__version__"]
