"""File formats: ONNX (:mod:`vnnx.io.onnx`) and VNN-LIB (:mod:`vnnx.io.vnnlib`)."""
