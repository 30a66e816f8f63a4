"""File formats: ONNX (:mod:`vnnx.io.onnx`) and VNN-LIB 1.0 / 2.0 (:mod:`vnnx.io.vnnlib`,
:mod:`vnnx.io.vnnlib2`; docs/vnnlib.md)."""
