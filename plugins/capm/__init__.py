"""CAPM: a MaxPool relaxation (the max as a chain of ReLUs) for vnnx's graph engine and auto_LiRPA.

Paper: "Fast and Robust Verification on Maxpool-based CNN via Dual Network". Each window's max
is ``z_{j+1} = z_j + ReLU(x_{j+1} − z_j)``; every inner ReLU gets the CROWN relaxation, with
α-optimisable slopes. Any kernel, stride, −∞ padding (also asymmetric) and ``ceil_mode``.

Use::

    from vnnx_plugins import capm
    ChainBounds(network, relaxations={"MaxPool": capm.CapmMaxPool()})   # vnnx's graph engine
    BoundedModule(model, x, custom_ops=capm.custom_ops())    # auto_LiRPA; or: with capm.use_capm(): ...

``reluify_maxpool(network)`` rewrites every MaxPool of a plain network into Conv/ReLU layers
that compute the same max exactly (a cross-check, and a MaxPool-free net for the MILP).
"""
from vnnx.registry import Plugin

from .geometry import PoolSpec
from .graph_relaxation import CapmMaxPool
from .install import custom_ops, install, is_installed, uninstall, use_capm
from .operator import BoundCapmMaxPool
from .relaxation import WindowRelaxation, relax_windows
from .reluify import reluify_maxpool
from .torch_pool import PaddedMaxPool2d

def _demo(**kwargs):
    from .demo import demo

    return demo(**kwargs)


PLUGIN = Plugin(
    name="capm",
    kind="bound-operator",
    summary="MaxPool relaxation (max as a chain of ReLUs; any kernel/stride/padding/ceil_mode) for "
            "the graph engine, the same as an auto_LiRPA bound operator (IBP, CROWN, α-CROWN), and a "
            "MaxPool→Conv/ReLU rewrite",
    extras={"custom_ops": custom_ops(), "relaxations": {"MaxPool": CapmMaxPool()}, "demo": _demo},
)

__all__ = [
    "PLUGIN", "BoundCapmMaxPool", "CapmMaxPool", "PaddedMaxPool2d", "PoolSpec", "WindowRelaxation",
    "custom_ops", "install", "is_installed", "relax_windows", "reluify_maxpool", "uninstall",
    "use_capm",
]
