"""ReLU stability: "Training for Faster Adversarial Robustness Verification via Inducing ReLU
Stability" (Xiao, Tjeng, Shafiullah, Madry, ICLR 2019).

* loss terms for :func:`vnnx.training.train`: :func:`l1_term` (conv weights weighted by reuse)
  and :func:`rs_term` (RS loss ``−tanh(1 + l·u)`` with naive IA, improved IA or CROWN-IBP
  bounds);
* passes on a plain :class:`vnnx.network.Network`: :func:`prune_small_weights` and
  :func:`prune_relus`, each returning ``(network, report)``;
* :func:`friendliness_report`: unstable ReLUs per layer, bound widths, MILP binaries, sparsity;
* ``vnnx train --config CFG.yaml --out M.onnx``, ``vnnx report``, ``vnnx rs-prune``.

Use::

    from vnnx_plugins.relu_stability import l1_term, rs_term
    train(model, x, y, loss_terms=[l1_term(2e-5), rs_term(1e-4, bounds="naive", epsilon=0.1)])
"""
from vnnx.registry import Plugin

from .bounds import improved_ia, input_box, naive_ia, pre_activation_bounds, unstable_mask
from .chain import Chain, chain_from_network, chain_from_sequential, sequential_to_network
from .cli import add_commands
from .config import TrainConfig, config_from_dict, load_config
from .losses import RS_BOUNDS, l1_penalty, l1_term, model_pre_activation_bounds, rs_loss, rs_term
from .passes import PassReport, activation_frequency, prune_relus, prune_small_weights, prune_small_weights_torch
from .report import REPORT_METHODS, format_report_table, friendliness_report
from .run import apply_passes, evaluate, train_from_config

def _demo(**kwargs):
    from .demo import demo

    return demo(**kwargs)


PLUGIN = Plugin(
    name="relu-stability",
    kind="regularizer",
    summary="ReLU-stability training (Xiao et al. 2019): RS loss, L1, PGD training, small-weight and "
            "ReLU pruning; commands train, report, rs-prune",
    add_commands=add_commands,
    extras={"demo": _demo},
)

__all__ = [
    "PLUGIN", "Chain", "PassReport", "RS_BOUNDS", "REPORT_METHODS", "TrainConfig",
    "activation_frequency", "apply_passes", "chain_from_network", "chain_from_sequential",
    "config_from_dict", "evaluate", "format_report_table", "friendliness_report", "improved_ia",
    "input_box", "l1_penalty", "l1_term", "load_config", "model_pre_activation_bounds", "naive_ia",
    "pre_activation_bounds", "prune_relus", "prune_small_weights", "prune_small_weights_torch",
    "rs_loss", "rs_term", "sequential_to_network", "train_from_config", "unstable_mask",
]
