"""VNN: post-training LP sparsification with hard guarantees on a validation set.

Paper: Baninajjar, Rezine, Aminifar, "VNN: Verification-Friendly Neural Networks with Hard
Robustness Guarantees", ICML 2024. Each affine layer's weights are re-solved by an LP that
minimises ‖W̃‖₁ + ‖b̃‖₁ while every validation sample keeps its activation pattern (this layer
and all later ones), its argmax (optionally with a logit margin) and, for the target layer,
outputs within ε of the original. ONNX in, ONNX out; see docs/vnn_lp.md.

Example::

    from vnnx_plugins.vnn_lp import SparsifyOptions, sparsify
    sparse, report = sparsify(network, x_val, y_val, SparsifyOptions(epsilon=0.1))
"""
from vnnx.registry import Plugin

from .options import SparsifyOptions
from .prune import prune_magnitude
from .report import LayerReport, SparsifyReport
from .sparsify import sparsify


def _add_commands(subparsers) -> None:
    from .cli import add_commands

    add_commands(subparsers)


def _demo(**kwargs):
    from .cli import demo

    return demo(**kwargs)


PLUGIN = Plugin(
    name="vnn-lp",
    kind="pass",
    summary="VNN LP sparsification with guarantees on a validation set (sparsify), and the "
            "magnitude-pruning baseline (prune-magnitude)",
    add_commands=_add_commands,
    extras={"demo": _demo},
)

__all__ = ["PLUGIN", "LayerReport", "SparsifyOptions", "SparsifyReport", "prune_magnitude", "sparsify"]
