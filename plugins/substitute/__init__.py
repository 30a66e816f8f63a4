"""Local substitute networks: fast robustness-radius estimates from per-anchor pruned substitutes.

Paper: "Robustness Evaluation Using Local Substitute Networks". At an anchor x0, PGD gives
d_adv; the ReLUs with the narrowest CROWN bounds at ε = d_adv are replaced (Algorithm 1) by a
constant (``con``), the line through x0 and x_adv (``lin``) or their activation state at x0
(``act``), and folded into the affine layers. The distance to the decision boundary d_bnd is a
binary search over ε with exact MILPs (``vnnx radius``), on the network or on a substitute.
See docs/substitute.md.

Example::

    from vnnx_plugins.substitute import boundary_distance, make_substitute
    sub = make_substitute(network, x0, "lin", gamma=0.9)
    print(boundary_distance(sub.network, x0, label=sub.label).d_bnd)
"""
from vnnx.registry import Plugin

from .core import (KINDS, AdvResult, RadiusResult, SubstituteResult, boundary_distance, find_adversarial,
                   make_substitute)
from .fold import FoldInfo, Replacement, build_substitute, candidate_layers


def _add_commands(subparsers) -> None:
    from .cli import add_commands

    add_commands(subparsers)


def _demo(**kwargs):
    from .demo import demo

    return demo(**kwargs)


PLUGIN = Plugin(
    name="substitute",
    kind="analysis",
    summary="distance to the decision boundary by MILP binary search (radius), and local substitute "
            "networks with con/lin/act ReLU replacement folded into the affine layers (substitute)",
    add_commands=_add_commands,
    extras={"demo": _demo},
)

__all__ = ["KINDS", "PLUGIN", "AdvResult", "FoldInfo", "RadiusResult", "Replacement", "SubstituteResult",
           "boundary_distance", "build_substitute", "candidate_layers", "find_adversarial", "make_substitute"]
