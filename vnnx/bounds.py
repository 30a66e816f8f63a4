"""One facade over auto_LiRPA for IBP, CROWN and α-CROWN bounds.

auto_LiRPA runs on the canonical torch module of the plain view (:meth:`Network.to_torch`), so
that every network vnnx can load, whatever its ONNX spelling, reaches the bound engine in the
same small vocabulary (Linear, Conv2d, ReLU, MaxPool2d, Sigmoid, Tanh, Flatten, Unflatten).

Returned are bounds on ``C @ y`` (the spec's output constraint rows, through auto_LiRPA's C
matrix) and the pre-activation bounds of every activation layer, which the plugins need.
Bound operators from plugins (e.g. CAPM for MaxPool) arrive through ``custom_ops``.
"""
from __future__ import annotations

import contextlib
import io
import time
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
import torch

from vnnx._compat import import_auto_lirpa
from vnnx.errors import VnnxError
from vnnx.network import MaxPool, Network, Relu, Sigmoid, Tanh

METHODS = {"ibp": "IBP", "crown": "CROWN", "alpha-crown": "CROWN-Optimized"}
_ACTIVATIONS = (Relu, Sigmoid, Tanh, MaxPool)


@dataclass
class BoundsResult:
    """``lower``/``upper``: (rows,) bounds on ``C @ y`` (C = identity when not given).

    ``pre_activation[k]``: (lower, upper), each (n,), bounds on the output of
    ``network.layers[k]`` for every k whose next layer is an activation (ReLU, Sigmoid, Tanh,
    MaxPool). All in the network's flattened output/feature order.
    """

    lower: np.ndarray
    upper: np.ndarray
    pre_activation: dict[int, tuple[np.ndarray, np.ndarray]]
    method: str
    seconds: float
    #: The graph engine's bounds of every node, (lo, hi) tensors of (1, *shape); None elsewhere.
    node_bounds: Optional[list] = None


@contextlib.contextmanager
def _float64():
    # auto_LiRPA creates some tensors (identity C matrices, ...) with the default dtype.
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class BoundComputer:
    """A bounded version of one network, built once and queried for many boxes and specs.

    ``custom_ops`` maps ONNX op names (as auto_LiRPA sees them, e.g. ``"onnx::MaxPool"``) to
    auto_LiRPA ``Bound`` subclasses. ``alpha_iterations``/``alpha_lr`` tune α-CROWN.
    """

    def __init__(self, network: Network, custom_ops: Optional[Mapping[str, type]] = None,
                 alpha_iterations: int = 20, alpha_lr: float = 0.1) -> None:
        BoundedModule = import_auto_lirpa().BoundedModule

        self.network = network
        self.alpha_iterations = alpha_iterations
        # float64 throughout: the bounds decide "unsat", so float32 rounding inside the bound
        # computation must not be able to flip a verdict.
        self.module = network.to_torch(torch.float64).eval()
        dummy = torch.zeros(1, network.n_inputs, dtype=torch.float64)
        # Sparse α (auto_LiRPA 0.3's default) fails on torch 2 when a layer has all but a few
        # neurons unstable ("shape mismatch ... [3, 1, 16] ... [3, 1, 15]"); dense α is exact
        # the same relaxation, only less memory-frugal.
        opts = {"optimize_bound_args": {"iteration": alpha_iterations, "lr_alpha": alpha_lr},
                "conv_mode": "matrix", "verbosity": 0,
                "sparse_features_alpha": False, "sparse_spec_alpha": False}
        try:
            with _float64():
                    self.bounded = BoundedModule(self.module, (dummy,), bound_opts=opts, device="cpu",
                                             custom_ops=dict(custom_ops or {}))
        except VnnxError:
            raise
        except Exception as exc:
            raise VnnxError(f"auto_LiRPA could not build a bounded module: {type(exc).__name__}: {exc}") from exc
        # The activation layers of the network, in order; auto_LiRPA's activation nodes come
        # in the same order because the canonical module is a chain.
        self._act_layers = [k for k, layer in enumerate(network.layers) if isinstance(layer, _ACTIVATIONS)]

    def _activation_nodes(self) -> list:
        """auto_LiRPA's activation nodes in data-flow order (its ``_modules`` order is not).

        Walks back from the output along each node's first input, which for every op of the
        canonical module (Linear, Conv, ReLU, reshape, pooling, ...) is the data input.
        """
        from auto_LiRPA.bound_ops import BoundRelu, BoundSigmoid, BoundTanh

        act_types = (BoundRelu, BoundSigmoid, BoundTanh)
        nodes = []
        node = self.bounded.final_node()
        while node is not None and getattr(node, "inputs", None):
            if isinstance(node, act_types) or type(node).__name__.endswith("MaxPool"):
                nodes.append(node)
            node = node.inputs[0]
        return nodes[::-1]

    def lower_bounds_batch(self, x_lower: np.ndarray, x_upper: np.ndarray, C: np.ndarray,
                           method: str = "crown") -> np.ndarray:
        """Lower bounds of ``C @ y`` over each of B boxes at once: ``x_lower``/``x_upper`` (B,
        n_inputs), ``C`` (rows, n_outputs); returns (B, rows). ``method``: 'ibp' | 'crown'."""
        lirpa = import_auto_lirpa()
        if method not in ("ibp", "crown"):
            raise VnnxError(f"batched bounds support ibp and crown, not {method!r}")
        lo = torch.as_tensor(np.asarray(x_lower, dtype=np.float64))
        hi = torch.as_tensor(np.asarray(x_upper, dtype=np.float64))
        if lo.ndim != 2 or lo.shape[1] != self.network.n_inputs or hi.shape != lo.shape:
            raise VnnxError(f"boxes must be (B, {self.network.n_inputs}), got {tuple(lo.shape)} / {tuple(hi.shape)}")
        if bool((lo > hi).any()):
            raise VnnxError("an input box is empty (some lower bound exceeds its upper bound)")
        c = torch.as_tensor(np.asarray(C, dtype=np.float64)).reshape(1, -1, self.network.n_outputs)
        c = c.expand(lo.shape[0], -1, -1).contiguous()
        x = lirpa.BoundedTensor((lo + hi) / 2, lirpa.PerturbationLpNorm(norm=np.inf, x_L=lo, x_U=hi))
        try:
            with _float64(), torch.no_grad():
                lb, _ = self.bounded.compute_bounds(x=(x,), C=c, method=METHODS[method], bound_upper=False)
        except Exception as exc:
            raise VnnxError(f"batched {method} bound computation failed: {type(exc).__name__}: {exc}") from exc
        return lb.detach().reshape(lo.shape[0], -1).double().numpy()

    def compute(self, x_lower: np.ndarray, x_upper: np.ndarray, method: str = "crown",
                C: Optional[np.ndarray] = None, deadline: Optional[float] = None) -> BoundsResult:
        """Bounds over the box ``x_lower <= x <= x_upper`` (each (n_inputs,), model-input space).

        ``C``: (rows, n_outputs) or None. ``method``: 'ibp' | 'crown' | 'alpha-crown'.
        ``deadline``: a ``time.monotonic()`` instant after which α-CROWN stops optimising (it
        returns the best bounds so far, which are sound for any α; the overrun is at most one
        optimisation step).
        """
        lirpa = import_auto_lirpa()
        BoundedTensor, PerturbationLpNorm = lirpa.BoundedTensor, lirpa.PerturbationLpNorm

        if method not in METHODS:
            raise VnnxError(f"unknown bound method {method!r}; choose one of {', '.join(METHODS)}")
        lo = torch.as_tensor(np.asarray(x_lower, dtype=np.float64).reshape(1, -1))
        hi = torch.as_tensor(np.asarray(x_upper, dtype=np.float64).reshape(1, -1))
        if lo.shape[1] != self.network.n_inputs or hi.shape != lo.shape:
            raise VnnxError(f"input box has {lo.shape[1]} entries, network expects {self.network.n_inputs}")
        if bool((lo > hi).any()):
            raise VnnxError("input box is empty (some lower bound exceeds its upper bound)")
        c = None
        if C is not None:
            c = torch.as_tensor(np.asarray(C, dtype=np.float64)).reshape(1, -1, self.network.n_outputs)
        x = BoundedTensor((lo + hi) / 2, PerturbationLpNorm(norm=np.inf, x_L=lo, x_U=hi))
        start = time.monotonic()
        opt_args = self.bounded.bound_opts["optimize_bound_args"]
        saved_stop = opt_args.get("stop_criterion_func")
        if deadline is not None and method == "alpha-crown":
            # auto_LiRPA ends the α loop (keeping its best bounds) once this returns all-True.
            opt_args["stop_criterion_func"] = lambda bound: torch.full(
                bound.shape, time.monotonic() >= deadline, dtype=torch.bool)
        try:
            # auto_LiRPA prints "all verified at ..th iter" when the stop criterion fires.
            # A stop at the first step also makes torch warn that the scheduler stepped first.
            with _float64(), torch.no_grad() if method != "alpha-crown" else torch.enable_grad(), \
                    contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step", category=UserWarning)
                lb, ub = self.bounded.compute_bounds(x=(x,), C=c, method=METHODS[method])
        except Exception as exc:
            raise VnnxError(f"{method} bound computation failed: {type(exc).__name__}: {exc}") from exc
        finally:
            opt_args["stop_criterion_func"] = saved_stop
        seconds = time.monotonic() - start
        pre = {}
        nodes = self._activation_nodes()
        if len(nodes) == len(self._act_layers):
            for k, node in zip(self._act_layers, nodes):
                inp = node.inputs[0]
                if getattr(inp, "lower", None) is not None and getattr(inp, "upper", None) is not None:
                    pre[k - 1] = (inp.lower.detach().reshape(-1).double().numpy(),
                                  inp.upper.detach().reshape(-1).double().numpy())
        return BoundsResult(lb.detach().reshape(-1).double().numpy(), ub.detach().reshape(-1).double().numpy(),
                            pre, method, seconds)


def compute_bounds(network: Network, x_lower: np.ndarray, x_upper: np.ndarray, method: str = "crown",
                   C: Optional[np.ndarray] = None,
                   custom_ops: Optional[Mapping[str, type]] = None) -> BoundsResult:
    """One-shot :meth:`BoundComputer.compute`. Build a :class:`BoundComputer` to reuse it."""
    return BoundComputer(network, custom_ops).compute(x_lower, x_upper, method, C)


def tied_bounded_module(model: torch.nn.Module, input_shape: tuple[int, ...]):
    """An auto_LiRPA BoundedModule over ``model`` (input ``(1, *input_shape)``) whose parameters
    ARE the model's own parameter objects: bounds follow in-place weight updates (sparsity
    masks), and gradients of the bounds reach the model (CROWN-IBP and RS losses in training).

    Built from a copy, because building writes the state dict into the module it is given,
    which would invalidate an autograd graph the caller is in the middle of."""
    import copy

    lirpa = import_auto_lirpa()
    ref = next(iter(model.parameters()))
    try:
        bounded = lirpa.BoundedModule(copy.deepcopy(model), (torch.zeros((1,) + tuple(input_shape), dtype=ref.dtype),),
                                      bound_opts={"conv_mode": "matrix", "verbosity": 0}, device="cpu")
    except Exception as exc:
        raise VnnxError(f"auto_LiRPA could not bound the model: {type(exc).__name__}: {exc}") from exc
    params = dict(model.named_parameters())
    for node in bounded._modules.values():
        if type(node).__name__ == "BoundParams" and node.ori_name in params:
            node._parameters["param"] = params[node.ori_name]
    return bounded
