"""What a sparsification run reports: per-layer numbers, the guarantee check and (when asked)
accuracy and verified robustness before/after. JSON for machines, a table for people."""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from typing import Optional, Union

import numpy as np

from vnnx.network import Conv, Dense, Network


def nonzeros(layer) -> int:
    """Non-zero weights and biases of an affine layer (a Conv kernel weight counts once)."""
    return int(np.count_nonzero(layer.weight) + np.count_nonzero(layer.bias))


def l1_norm(layer) -> float:
    """``‖W‖₁ + ‖b‖₁`` of an affine layer: the LP's objective."""
    return float(np.abs(layer.weight).sum() + np.abs(layer.bias).sum())


@dataclass
class LayerReport:
    """One affine layer. ``status``: 'sparsified', 'fallback' (original weights kept, see
    ``message``), 'partial' (some neurons kept theirs) or 'skipped' (not selected by --layers).
    LP size (``lp_rows``, ``lp_cols``, ``lp_nnz``) sums over the ``n_lps`` LPs solved;
    ``later_rows_total``/``later_rows_kept``: coupling rows from later layers before and after
    dropping redundant ones; ``lp_seconds``: solver time; ``seconds``: the whole step."""

    index: int
    kind: str
    shape: list
    params: int
    nnz_before: int
    nnz_after: int
    l1_before: float
    l1_after: float
    status: str = "skipped"
    formulation: str = "-"
    n_lps: int = 0
    lp_rows: int = 0
    lp_cols: int = 0
    lp_nnz: int = 0
    later_rows_total: int = 0
    later_rows_kept: int = 0
    groups_kept_original: int = 0
    lp_seconds: float = 0.0
    seconds: float = 0.0
    message: str = ""


@dataclass
class SparsifyReport:
    """The whole run; ``evaluation`` is filled by :func:`~vnnx_plugins.vnn_lp.evaluate.evaluate`."""

    options: dict
    n_validation: int
    n_kept: int
    n_degenerate: int
    degenerate_reasons: dict
    n_argmax_exempt: int
    layers: list[LayerReport]
    guarantee: dict = field(default_factory=dict)
    seconds: float = 0.0
    evaluation: dict = field(default_factory=dict)

    @property
    def nnz_before(self) -> int:
        return sum(layer.nnz_before for layer in self.layers)

    @property
    def nnz_after(self) -> int:
        return sum(layer.nnz_after for layer in self.layers)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["nnz_before"] = self.nnz_before
        d["nnz_after"] = self.nnz_after
        return d

    def to_json(self, path: Union[str, os.PathLike]) -> None:
        """Write the report as JSON, atomically."""
        from vnnx.util import write_text_atomic

        write_text_atomic(path, json.dumps(_plain(self.as_dict()), indent=2) + "\n")

    def table(self) -> str:
        """The per-layer table, the guarantee line and (if present) the evaluation summary."""
        head = f"{'layer':>5} {'kind':<6} {'shape':<16} {'nnz before':>10} {'nnz after':>10} {'kept %':>7} " \
               f"{'LPs':>5} {'rows':>8} {'cols':>8} {'status':<10} {'sec':>7}"
        lines = [head, "-" * len(head)]
        for r in self.layers:
            kept = 100.0 * r.nnz_after / max(r.nnz_before, 1)
            lines.append(f"{r.index:>5} {r.kind:<6} {'x'.join(map(str, r.shape)):<16} {r.nnz_before:>10} "
                         f"{r.nnz_after:>10} {kept:>6.1f}% {r.n_lps:>5} {r.lp_rows:>8} {r.lp_cols:>8} "
                         f"{r.status:<10} {r.seconds:>7.2f}")
        lines.append(f"{'total':>5} {'':<6} {'':<16} {self.nnz_before:>10} {self.nnz_after:>10} "
                     f"{100.0 * self.nnz_after / max(self.nnz_before, 1):>6.1f}%{'':>36}{self.seconds:>7.2f}")
        g = self.guarantee
        if g:
            verdict = "PASSED" if g.get("passed") else f"FAILED {g.get('violations')}"
            lines.append(f"guarantee ({g.get('engine')}, {g.get('samples')} validation samples, "
                         f"{self.n_degenerate} degenerate left out): {verdict}")
        for r in self.layers:
            if r.message:
                lines.append(f"  layer {r.index}: {r.message}")
        ev = self.evaluation
        if ev.get("accuracy"):
            acc = ev["accuracy"]
            lines.append("test accuracy: " + ", ".join(f"{k} {v:.4f}" for k, v in acc.items()))
        if ev.get("robustness"):
            lines.append(robustness_table(ev["robustness"]))
        return "\n".join(lines)


def robustness_table(rob: dict) -> str:
    """``rob``: {network name: {method: {delta: {'verified': fraction, 'seconds': mean}}}}."""
    lines = [f"{'network':<10} {'method':<12} {'delta':>6} {'verified %':>11} {'avg sec':>8}"]
    for name, by_method in rob.items():
        for method, by_delta in by_method.items():
            for delta, r in by_delta.items():
                lines.append(f"{name:<10} {method:<12} {float(delta):>6.3f} {100 * r['verified']:>10.1f}% "
                             f"{r['seconds']:>8.3f}")
    return "\n".join(lines)


def layer_report(index: int, before, after: Optional[object] = None) -> LayerReport:
    """A fresh :class:`LayerReport` for an affine layer (``after`` defaults to ``before``)."""
    after = before if after is None else after
    kind = "Dense" if isinstance(before, Dense) else "Conv" if isinstance(before, Conv) else type(before).__name__
    return LayerReport(index, kind, list(before.weight.shape), int(before.weight.size + before.bias.size),
                       nonzeros(before), nonzeros(after), l1_norm(before), l1_norm(after))


def recount(original: Network, result: Network, report: SparsifyReport) -> list[tuple[int, int, int]]:
    """``(index, nnz_before, nnz_after)`` counted afresh from the two networks, in the report's
    layer order (what a test compares the report with)."""
    return [(r.index, nonzeros(original.layers[r.index]), nonzeros(result.layers[r.index])) for r in report.layers]


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj
