"""VeriCompress: "A Tool to Streamline the Synthesis of Verified Robust Compressed Neural Networks
from Scratch" (Kaur, Xiao, Salekin, AAAI 2024).

* :class:`AuxiliaryNetwork`: the paper's algorithm (Alg. 1): a random ERK start within K, unmasked
  training between deactivations, per-layer own-weight L2 ranking, dormant units zeroed, a frozen
  mask for the last epochs; ``vnnx compress`` runs it;
* :class:`DynamicSparsity`: explicit masks over nodes/filters, a random start with the budget's
  unit counts (:func:`unit_counts`, ERK shares :func:`erk_budgets`), L2-norm deactivation, and
  exploration (dormant units keep receiving gradients) through the training loop's hooks: the
  earlier vnnx variant (measured worse than the paper's algorithm, docs/vericompress.md), now the
  masks of the baseline's fine-tuning;
* :func:`crown_ibp_term` and :func:`epsilon_schedule` (T, s, l), :func:`lr_decay`;
* :func:`compact` / :func:`export_compact`: a physically smaller dense network, checked;
* :func:`prune_after_training`: the magnitude prune-and-fine-tune baseline;
* ``vnnx compress --config CFG.yaml --budget K --epsilon E --out SMALL.onnx``.
"""
from vnnx.registry import Plugin

from .budget import budget_from_fraction, check_budget, erk_budgets, unit_counts
from .cli import add_commands
from .deactivation import AuxiliaryNetwork
from .compact import compact, count_parameters, export_compact, masked_network
from .config import CompressConfig, config_from_dict, load_config
from .losses import crown_ibp_term, margin_lower_bounds
from .run import BACKBONES, build_backbone, compress, prune_after_training, verified_accuracy
from .schedule import epsilon_schedule, lr_decay
from .sparsity import DynamicSparsity
from .structure import Structure, analyse

def _demo(**kwargs):
    from .demo import demo

    return demo(**kwargs)


PLUGIN = Plugin(
    name="vericompress",
    kind="pass",
    summary="VeriCompress (Kaur et al. 2024): budgeted dynamic-sparse CROWN-IBP training from scratch and "
            "compaction to a dense network of <= K parameters; command compress",
    add_commands=add_commands,
    extras={"demo": _demo},
)

__all__ = [
    "AuxiliaryNetwork", "BACKBONES", "CompressConfig", "DynamicSparsity", "PLUGIN", "Structure", "analyse", "budget_from_fraction",
    "build_backbone", "check_budget", "compact", "compress", "config_from_dict", "count_parameters",
    "crown_ibp_term", "epsilon_schedule", "erk_budgets", "export_compact", "load_config", "lr_decay",
    "margin_lower_bounds", "masked_network", "prune_after_training", "unit_counts", "verified_accuracy",
]
