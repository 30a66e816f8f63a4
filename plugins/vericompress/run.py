"""One ``vnnx compress`` run: backbone -> random sub-network of K parameters -> CROWN-IBP training
with the (T, s, l) ε schedule and periodic L2 deactivation, in :func:`vnnx.training.train` ->
compaction -> checked ONNX -> report. Also the prune-after-training baseline."""
from __future__ import annotations

import copy
import dataclasses
import os
import tempfile
import time
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from vnnx.architectures import conv_small, mlp
from vnnx.data import Dataset
from vnnx.errors import ConfigError
from vnnx.training import TrainHistory, accuracy, train

from .budget import unit_counts
from .compact import count_parameters, layer_widths
from .config import CompressConfig, validate
from .deactivation import AuxiliaryNetwork
from .losses import BoundedCache, crown_ibp_term, kappa, margin_lower_bounds
from .schedule import epsilon_schedule, lr_decay
from .sparsity import DynamicSparsity
from .structure import analyse


def cnn7(channels: tuple[int, int] = (32, 64), hidden: int = 256, n_classes: int = 10,
         in_channels: int = 1) -> nn.Sequential:
    """A 7-layer CNN in the style of CROWN-IBP's (without batch norm): conv c 3x3 -> conv c 3x3 ->
    conv 2c 3x3 stride 2 -> conv 2c 3x3 -> conv 2c 3x3 stride 2 -> FC hidden -> FC classes."""
    a, b = channels
    return nn.Sequential(
        nn.Conv2d(in_channels, a, 3, padding=1), nn.ReLU(), nn.Conv2d(a, a, 3, padding=1), nn.ReLU(),
        nn.Conv2d(a, b, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(b, b, 3, padding=1), nn.ReLU(),
        nn.Conv2d(b, b, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(b * 7 * 7, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def cnn4(filters: tuple[int, int] = (16, 32), hidden: int = 100, n_classes: int = 10) -> nn.Sequential:
    """The 4-layer CNN (ERAN convSmall): conv 16 4x4 s2 -> conv 32 4x4 s2 -> FC 100 -> FC 10."""
    return conv_small(filters=filters, hidden=hidden, n_classes=n_classes)


def fc(hidden: tuple[int, ...] = (256, 256, 256), n_classes: int = 10) -> nn.Sequential:
    """A fully connected ReLU net on flattened 28x28 inputs."""
    return mlp(hidden=hidden, n_classes=n_classes)


BACKBONES: dict[str, Callable[..., nn.Sequential]] = {"cnn4": cnn4, "cnn7": cnn7, "fc": fc}


def build_backbone(name: str, **kwargs) -> nn.Sequential:
    """A randomly initialised backbone by name (a table, not an if/elif chain)."""
    import inspect

    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")
    params = inspect.signature(BACKBONES[name]).parameters
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        raise ConfigError(f"backbone {name!r} takes no argument(s) {', '.join(unknown)}; it takes {', '.join(params)}")
    return BACKBONES[name](**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


def load_data(cfg: CompressConfig) -> tuple[Dataset, Dataset]:
    from vnnx.data import mnist_split

    train_set, eval_set = mnist_split(cfg.data_dir)
    n_train = len(train_set) if cfg.n_train is None else min(cfg.n_train, len(train_set))
    return train_set.subset(0, n_train), eval_set.subset(0, min(cfg.n_eval, len(eval_set)))


def resolve_budget(cfg: CompressConfig, model: nn.Sequential, input_shape) -> int:
    s = analyse(model, input_shape)
    return int(cfg.budget) if cfg.budget is not None else int(cfg.budget_fraction * s.n_params)


def _train(cfg: CompressConfig, model: nn.Module, data: Dataset, epochs: int, step_hooks=(), epoch_hooks=(),
           seed_offset: int = 0) -> TrainHistory:
    clean = None
    if cfg.kappa_end is not None:
        eps_max, kappa_end = cfg.epsilon, cfg.kappa_end
        clean = lambda eps: kappa(eps, eps_max, kappa_end)  # noqa: E731
    return train(model, data.x, data.y, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                 seed=cfg.seed + seed_offset, clean_weight=clean, grad_clip=cfg.grad_clip,
                 loss_terms=[crown_ibp_term(cfg.robust_weight, cfg.epsilon, clip=tuple(cfg.input_range),
                                            kappa_end=cfg.kappa_end)],
                 epsilon=epsilon_schedule(cfg.epsilon, epochs, min(cfg.eps_start, epochs),
                                          min(cfg.eps_length, max(0, epochs - cfg.eps_start))),
                 lr_schedule=lr_decay(cfg.eps_start, cfg.eps_length, cfg.lr_gamma),
                 on_step_end=list(step_hooks), on_epoch_end=list(epoch_hooks),
                 progress=cfg.progress, time_limit=cfg.time_limit)


def compress(cfg: CompressConfig, train_data: Dataset) -> tuple[AuxiliaryNetwork, TrainHistory]:
    """Train a random K-parameter sub-network of the backbone with VeriCompress (the paper's
    Algorithm 1, :class:`AuxiliaryNetwork`); the returned auxiliary network is finalised: every
    entry outside the kept sub-network is zero. Each epoch record of the history that ended with
    a deactivation gains its log (non-zero parameters before it, units that entered the kept set
    per layer)."""
    validate(cfg, "config")
    shape = tuple(train_data.x.shape[1:])
    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg.backbone, **cfg.arch)
    budget = resolve_budget(cfg, model, shape)
    aux = AuxiliaryNetwork(model, shape, budget, seed=cfg.seed, counts=cfg.unit_counts)
    hook = aux.hook(cfg.epochs, cfg.frozen_epochs(), cfg.explore_every)
    history = _train(cfg, model, train_data, cfg.epochs, [aux.after_step], [hook])
    aux.finalize()
    by_epoch = {entry["epoch"]: entry for entry in aux.log}
    for record in history.epochs:
        if record["epoch"] in by_epoch:
            record["deactivation"] = by_epoch[record["epoch"]]
    return aux, history


def train_dense(cfg: CompressConfig, train_data: Dataset) -> tuple[nn.Module, TrainHistory]:
    """The dense CROWN-IBP reference: the backbone trained for all ``T`` epochs, no budget."""
    validate(cfg, "config")
    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg.backbone, **cfg.arch)
    history = _train(cfg, model, train_data, cfg.epochs)
    return model.eval(), history


def prune_after_training(cfg: CompressConfig, train_data: Dataset, finetune_epochs: Optional[int] = None
                         ) -> tuple[DynamicSparsity, nn.Module]:
    """The baseline at equal epochs: CROWN-IBP-train the dense backbone for ``T - F`` epochs, keep
    the units of largest L2 norm (same unit counts as VeriCompress), fine-tune the fixed sub-network
    for ``F`` epochs (default ``max(1, T // 3)``) at ε_max. Returns the sparsity and the dense model."""
    shape = tuple(train_data.x.shape[1:])
    torch.manual_seed(cfg.seed)
    model = build_backbone(cfg.backbone, **cfg.arch)
    budget = resolve_budget(cfg, model, shape)
    structure = analyse(model, shape)
    counts = unit_counts(structure, budget)            # budget errors before any training
    if cfg.unit_counts is not None:
        counts = list(cfg.unit_counts)
        if structure.param_count(counts) > budget:
            raise ConfigError(f"unit counts {counts} need {structure.param_count(counts)} parameters, more than "
                              f"the budget {budget}")
    f = max(1, cfg.epochs // 3) if finetune_epochs is None else finetune_epochs
    if not 1 <= f < cfg.epochs:
        raise ConfigError(f"fine-tune epochs must lie in [1, {cfg.epochs - 1}], got {f}")
    _train(cfg, model, train_data, cfg.epochs - f)
    dense_copy = copy.deepcopy(model)
    sparsity = DynamicSparsity(model, shape, budget, start="magnitude", explore=False, counts=counts)
    ft = dataclasses.replace(cfg, eps_start=0, eps_length=0)   # fine-tune at eps_max throughout
    _train(ft, model, train_data, f, [sparsity.after_step], seed_offset=1)
    sparsity.finalize()
    return sparsity, dense_copy


# ----------------------------------------------------------------------------- evaluation
@torch.no_grad()
def verified_accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, epsilon: float, method: str,
                      clip=(0.0, 1.0), batch_size: int = 100) -> float:
    """Fraction of samples whose every margin ``z_y - z_j`` has a positive lower bound over the ε-box
    (``method``: 'IBP' or 'CROWN'); such a sample is also correctly classified."""
    if len(x) == 0:
        return float("nan")
    bounded = BoundedCache().get(model, tuple(x.shape[1:]))
    bounded.eval()
    ok = 0
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i:i + batch_size], dtype=torch.float32)
        yb = torch.as_tensor(y[i:i + batch_size], dtype=torch.int64)
        lower = margin_lower_bounds(bounded, xb, yb, epsilon, method, clip)
        ok += int((lower > 0).all(dim=1).sum())
    return ok / len(x)


#: Batch size of the throughput measurement (``cpu_seconds_per_sample_batched``).
THROUGHPUT_BATCH = 256


def _timing_session(onnx_path: str, batch: int):
    """A one-thread onnxruntime session; for ``batch > 1`` the graph's leading (batch) dimension
    is made symbolic in memory (the exported files have batch 1; the compact and dense models
    flatten with Flatten, so nothing else in the graph depends on it)."""
    import onnx
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    model = onnx.load(onnx_path)
    if batch > 1:
        for value in list(model.graph.input) + list(model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_param = "batch"
    return ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])


def time_models(onnx_paths: Sequence[str], input_shape, runs: int = 200, batch: int = 1,
                rounds: int = 3) -> list[float]:
    """Seconds per sample of each model, one onnxruntime thread, ``batch`` samples per call.

    The models are timed round-robin (``rounds`` rounds of ``runs`` calls each, fewer calls
    for large batches) so that load on a shared machine hits them alike; each model's result
    is the smallest per-round median.
    """
    sessions = [_timing_session(p, batch) for p in onnx_paths]
    x = np.random.default_rng(0).random((batch,) + tuple(input_shape), dtype=np.float32)
    calls = max(5, runs // batch) if batch > 1 else runs
    best = [float("inf")] * len(sessions)
    for sess in sessions:  # warm-up
        name = sess.get_inputs()[0].name
        for _ in range(10 if batch == 1 else 2):
            sess.run(None, {name: x})
    for _ in range(rounds):
        for k, sess in enumerate(sessions):
            name = sess.get_inputs()[0].name
            times = []
            for _ in range(calls):
                t = time.perf_counter()
                sess.run(None, {name: x})
                times.append(time.perf_counter() - t)
            best[k] = min(best[k], float(np.median(times)) / batch)
    return best


def cpu_time_per_sample(onnx_path: str, input_shape, runs: int = 200, batch: int = 1) -> float:
    """Seconds per sample of ``onnx_path`` in onnxruntime (one thread): the latency of a
    single-sample call for ``batch=1``, the throughput per sample of ``batch``-sample calls else."""
    return time_models([onnx_path], input_shape, runs, batch)[0]


def _timings(onnx_path: str, shape, runs: int) -> dict:
    return {"cpu_seconds_per_sample": cpu_time_per_sample(onnx_path, shape, runs),
            "cpu_seconds_per_sample_batched": cpu_time_per_sample(onnx_path, shape, 8 * THROUGHPUT_BATCH,
                                                                  THROUGHPUT_BATCH),
            "throughput_batch": THROUGHPUT_BATCH}


def model_report(model: nn.Module, onnx_path: str, eval_data: Dataset, cfg: CompressConfig) -> dict:
    """Parameters, ONNX size, CPU time per sample, standard accuracy, IBP and CROWN verified accuracy."""
    shape = tuple(eval_data.x.shape[1:])
    nv = min(cfg.n_verify, len(eval_data.x))
    xv, yv = eval_data.x[:nv], eval_data.y[:nv]
    return {"params": count_parameters(model), "widths": layer_widths(model),
            "onnx_bytes": os.path.getsize(onnx_path),
            **_timings(onnx_path, shape, cfg.timing_runs),
            "standard_acc": accuracy(model, eval_data.x, eval_data.y),
            "ibp_verified_acc": verified_accuracy(model, xv, yv, cfg.epsilon, "IBP", tuple(cfg.input_range)),
            "crown_verified_acc": verified_accuracy(model, xv, yv, cfg.epsilon, "CROWN", tuple(cfg.input_range)),
            "n_verify": nv, "epsilon": cfg.epsilon}


def backbone_report(cfg: CompressConfig, backbone: nn.Module, eval_data: Dataset) -> dict:
    """Size and CPU time of the (dense) backbone; accuracies only mean something if it was trained."""
    from vnnx.io.onnx import export_onnx

    shape = tuple(eval_data.x.shape[1:])
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "backbone.onnx")
        export_onnx(backbone, (1,) + shape, path)
        return {"params": count_parameters(backbone), "widths": layer_widths(backbone),
                "onnx_bytes": os.path.getsize(path),
                **_timings(path, shape, cfg.timing_runs)}
