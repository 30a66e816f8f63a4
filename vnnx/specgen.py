"""Generate L∞ local-robustness VNN-LIB specs (and an instances.csv) from labelled samples."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from tqdm.auto import tqdm

from vnnx.errors import InputFileError, VnnxError


def load_samples(path: str | os.PathLike):
    """Load labelled samples from ``.npz`` (keys x, y) or an ERAN ``.csv``. Returns (x, y)."""
    from vnnx import data

    p = Path(path)
    if p.suffix == ".npz":
        ds = data.load_npz(p)
        return ds.x, ds.y
    if p.suffix == ".csv":
        return data.load_eran_csv(p)
    raise InputFileError(f"{p}: unsupported data file (expected .npz with keys x, y, or an ERAN .csv)")


def generate_robustness_specs(data_path, out_dir, epsilons: Sequence[float], count: int = 10, start: int = 0,
                              onnx: Optional[str] = None, timeout: float = 60.0,
                              clip: tuple[float, float] = (0.0, 1.0), only_correct: bool = True,
                              progress: bool = True, version: str = "1.0") -> list[tuple[str, str, float]]:
    """Write ``prop_{index}_{eps}.vnnlib`` for ``count`` samples from ``start`` at each ε, as
    VNN-LIB ``version`` ("1.0" or "2.0").

    With ``onnx``, samples the network misclassifies are skipped (unless ``only_correct`` is
    False) and an ``instances.csv`` naming the network (relative path) is written. Returns the
    instance rows (onnx, vnnlib, timeout), paths relative to ``out_dir``.
    """
    from vnnx.data import fit_to_input
    from vnnx.io.vnnlib import write_instances_csv, write_robustness_spec

    if count < 1:
        raise VnnxError("--count must be at least 1")
    if any(e < 0 for e in epsilons):
        raise VnnxError("epsilon must be non-negative")
    x, y = load_samples(data_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = None
    if onnx is not None:
        from vnnx.io.onnx import load_onnx, run_onnxruntime

        model = load_onnx(onnx)
        n_inputs, n_outputs = model.n_inputs, model.n_outputs
    else:
        n_inputs, n_outputs = int(np.prod(x.shape[1:])), int(np.max(y)) + 1
    flat = fit_to_input(x, n_inputs)
    if start < 0 or start >= len(flat):
        raise VnnxError(f"--start {start} is outside the data (it has {len(flat)} samples)")
    rows: list[tuple[str, str, float]] = []
    chosen = 0
    bar = tqdm(total=count, desc="specs", disable=not progress, leave=False)
    for i in range(start, len(flat)):
        if chosen >= count:
            break
        label = int(y[i])
        if model is not None and only_correct:
            pred = int(np.argmax(run_onnxruntime(model, flat[i:i + 1])[0]))
            if pred != label:
                continue
        for eps in epsilons:
            name = f"prop_{i}_{eps:g}.vnnlib"
            write_robustness_spec(out / name, flat[i], eps, label, n_outputs, clip=clip,
                                  version=version)
            if model is not None:
                rows.append((os.path.relpath(Path(onnx).resolve(), out.resolve()), name, float(timeout)))
        chosen += 1
        bar.update(1)
    bar.close()
    if model is not None:
        write_instances_csv(out / "instances.csv", rows)
    return rows
