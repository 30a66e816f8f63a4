"""Options of the VNN LP pass; the CLI flags mirror these fields one to one."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional, Union

from vnnx.errors import ConfigError

FORMULATIONS = ("auto", "coupled", "paper")
EPSILON_MODES = ("relative", "absolute")
SOLVERS = ("highs", "gurobi", "auto")


@dataclass
class SparsifyOptions:
    """How :func:`~vnnx_plugins.vnn_lp.sparsify` works.

    epsilon: half-width of the ε-neighbourhood the target layer's outputs must stay in
        (0: they are kept exactly and the LP splits per neuron).
    epsilon_mode: 'relative' (|z̃ − z| <= ε|z|, the paper's [(1−ε)z, (1+ε)z]) or 'absolute'
        (|z̃ − z| <= ε, in the layer's output units).
    margin: logit margin M: every validation sample's target logit must beat every other one
        by min(M, its original margin) (0: the argmax alone is kept).
    layers: 'all', or k to sparsify the first k affine layers only.
    solver: LP back end, 'highs' | 'gurobi' | 'auto' (see :mod:`vnnx.solvers`).
    time_limit: seconds per LP (None: no limit). A layer whose LP runs out keeps its weights.
    slack: how far (network units) the LP keeps each strict side from 0 (active pre-activations,
        argmax differences), capped by the original's own distance; absorbs LP tolerances
        (HiGHS: 1e-7) and float32 rounding.
    formulation: 'auto' (per-neuron LPs whenever nothing couples the neurons, else one LP with
        only the non-redundant coupling rows), 'coupled' (always one LP per layer, all rows) or
        'paper' (the paper's LP with variables for every later layer; a timing baseline).
    workers: processes solving per-neuron LPs in parallel (1: in this process).
    scheduler, local_cluster: solve them on a Dask cluster instead (:mod:`vnnx.executor`).
    zero_tol: weights with |w| <= zero_tol after the LP are set to 0 if the check still passes.
    margin_tol: float32 allowance on the margin check (network units).
    check_onnx: run the final check in onnxruntime on the exported file (else numpy float32 only).
    progress: show tqdm progress bars.
    """

    epsilon: float = 0.0
    epsilon_mode: str = "relative"
    margin: float = 0.0
    layers: Union[str, int] = "all"
    solver: str = "highs"
    time_limit: Optional[float] = None
    slack: float = 1e-4
    formulation: str = "auto"
    workers: int = 1
    scheduler: Optional[str] = None
    local_cluster: Optional[int] = None
    zero_tol: float = 1e-9
    margin_tol: float = 1e-5
    check_onnx: bool = True
    progress: bool = True

    def validate(self) -> "SparsifyOptions":
        """Raise :class:`ConfigError` naming the first bad field; return self."""
        if not (self.epsilon >= 0):
            raise ConfigError(f"vnn-lp: epsilon must be >= 0, got {self.epsilon}")
        if self.epsilon_mode not in EPSILON_MODES:
            raise ConfigError(f"vnn-lp: epsilon_mode {self.epsilon_mode!r} is not one of {', '.join(EPSILON_MODES)}")
        if self.epsilon_mode == "relative" and self.epsilon >= 1:
            raise ConfigError(f"vnn-lp: a relative epsilon must be < 1 (it would allow sign flips), got {self.epsilon}")
        if not (self.margin >= 0):
            raise ConfigError(f"vnn-lp: margin must be >= 0, got {self.margin}")
        if isinstance(self.layers, str):
            if self.layers != "all":
                try:
                    self.layers = int(self.layers)
                except ValueError:
                    raise ConfigError(f"vnn-lp: layers must be 'all' or a positive integer, got {self.layers!r}") from None
        if not isinstance(self.layers, str) and int(self.layers) < 1:
            raise ConfigError(f"vnn-lp: layers must be 'all' or a positive integer, got {self.layers}")
        if self.solver not in SOLVERS:
            raise ConfigError(f"vnn-lp: solver {self.solver!r} is not one of {', '.join(SOLVERS)}")
        if self.time_limit is not None and not self.time_limit > 0:
            raise ConfigError(f"vnn-lp: time_limit must be > 0 seconds, got {self.time_limit}")
        if not (0 <= self.slack < 1):
            raise ConfigError(f"vnn-lp: slack must be in [0, 1), got {self.slack}")
        if self.formulation not in FORMULATIONS:
            raise ConfigError(f"vnn-lp: formulation {self.formulation!r} is not one of {', '.join(FORMULATIONS)}")
        if int(self.workers) < 1:
            raise ConfigError(f"vnn-lp: workers must be >= 1, got {self.workers}")
        if self.zero_tol < 0 or self.margin_tol < 0:
            raise ConfigError("vnn-lp: zero_tol and margin_tol must be >= 0")
        return self

    def as_dict(self) -> dict:
        return asdict(self)
