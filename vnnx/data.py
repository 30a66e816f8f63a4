"""Datasets for training and evaluation: MNIST IDX files, ERAN CSV files and ``.npz`` files.

Every loader returns images in model-input space as the MNIST benchmarks use it: float32
pixels scaled to ``[0, 1]`` (``pixel / 255``), shape ``(N, 1, 28, 28)``, with int64 labels.
Networks that expect another layout take the batch through :func:`fit_to_input`.

Example::

    train, evaluation = mnist_split("/work/shared/data/mnist")
    x = fit_to_input(evaluation.x, 784)        # (1000, 784)
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vnnx.errors import ConfigError, InputFileError, ShapeMismatchError
from vnnx.util import atomic_path

__all__ = [
    "Dataset",
    "load_mnist_idx",
    "load_eran_csv",
    "load_npz",
    "save_npz",
    "mnist_split",
    "fit_to_input",
]

_IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions (N, rows, cols)
_IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension (N,)
_PIXEL_SCALE = np.float32(255.0)


@dataclass
class Dataset:
    """Inputs and labels of one data set.

    Attributes:
        x: ``(N, ...)`` float32 inputs in model-input space (MNIST: ``(N, 1, 28, 28)`` in [0, 1]).
        y: ``(N,)`` int64 labels.
        source: where the data came from, for messages and reports.
    """

    x: np.ndarray
    y: np.ndarray
    source: str = ""

    def __post_init__(self) -> None:
        self.x = np.asarray(self.x, dtype=np.float32)
        self.y = np.asarray(self.y).astype(np.int64, copy=False)
        if self.x.ndim < 1 or self.y.ndim != 1 or len(self.x) != len(self.y):
            raise ShapeMismatchError(
                f"dataset {self.source or '<unnamed>'}: x has shape {self.x.shape}, y has shape "
                f"{self.y.shape}; expected (N, ...) and (N,)"
            )

    def __len__(self) -> int:
        return int(len(self.y))

    def subset(self, start: int, stop: int) -> "Dataset":
        """Samples ``start .. stop-1`` (a view, not a copy).

        Raises:
            ConfigError: when the range is empty or reaches past the end, rather than silently
                returning fewer samples than asked for.
        """
        if not 0 <= start < stop <= len(self):
            raise ConfigError(
                f"dataset {self.source or '<unnamed>'}: range {start}..{stop} is not within "
                f"its {len(self)} samples"
            )
        return Dataset(self.x[start:stop], self.y[start:stop], f"{self.source}[{start}:{stop}]")


# --------------------------------------------------------------------------------------------
# File reading


def _read_bytes(path: Path, what: str) -> bytes:
    """File contents, gunzipped when the file starts with the gzip magic bytes."""
    if not path.is_file():
        raise InputFileError(f"{path}: {what} not found")
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:
        raise InputFileError(f"{path}: cannot read {what}: {exc}") from exc
    return raw


def _read_idx(path: Path, magic: int, what: str) -> np.ndarray:
    """An IDX array of unsigned bytes (the MNIST format: big-endian magic, dims, data)."""
    raw = _read_bytes(path, what)
    if len(raw) < 4:
        raise InputFileError(f"{path}: truncated {what} ({len(raw)} bytes, no IDX header)")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise InputFileError(
            f"{path}: bad magic number 0x{found:08x} for {what}, expected 0x{magic:08x}"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InputFileError(f"{path}: truncated {what} (IDX header cut short)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims, dtype=np.int64))
    got = len(raw) - header
    if got != expected:
        state = "truncated" if got < expected else "corrupt"
        raise InputFileError(
            f"{path}: {state} {what}: header gives shape {dims} ({expected} bytes of data), "
            f"file has {got}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist_idx(images_path: str | os.PathLike,
                   labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST-format IDX files (gzip-compressed or not).

    Returns:
        ``x``: ``(N, 1, rows, cols)`` float32 in [0, 1] (``pixel / 255``); ``y``: ``(N,)`` int64.

    Raises:
        InputFileError: missing file, bad magic number, truncated data, or a different number
            of images and labels.
    """
    images_path, labels_path = Path(images_path), Path(labels_path)
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC, "IDX image file")
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, "IDX label file")
    if len(images) != len(labels):
        raise InputFileError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    x = images.astype(np.float32)[:, None, :, :] / _PIXEL_SCALE
    return x, labels.astype(np.int64)


def load_eran_csv(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Load an ERAN MNIST csv: one image per line, ``label,p0,...,p783`` with pixels 0..255.

    Returns:
        ``x``: ``(N, 1, 28, 28)`` float32 in [0, 1] (``pixel / 255``, the same values as
        :func:`load_mnist_idx`); ``y``: ``(N,)`` int64.

    Raises:
        InputFileError: missing file, or a line with the wrong number of values, a value that
            is not an integer, or a pixel outside 0..255 (the message names the line).
    """
    path = Path(path)
    text = _read_bytes(path, "ERAN csv").decode("utf-8", errors="replace")
    labels, pixels = [], []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != 785:
            raise InputFileError(
                f"{path}, line {n}: {len(fields)} values, expected 785 (label + 28*28 pixels)"
            )
        try:
            values = np.array([float(f) for f in fields])
        except ValueError as exc:
            raise InputFileError(f"{path}, line {n}: {exc}") from exc
        if not np.all(values == np.round(values)):
            raise InputFileError(f"{path}, line {n}: values must be integers")
        if values[1:].min() < 0 or values[1:].max() > 255:
            raise InputFileError(f"{path}, line {n}: pixel values must lie in 0..255")
        labels.append(int(values[0]))
        pixels.append(values[1:])
    if not labels:
        raise InputFileError(f"{path}: no images in ERAN csv")
    x = np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 28, 28) / _PIXEL_SCALE
    return x, np.asarray(labels, dtype=np.int64)


def load_npz(path: str | os.PathLike) -> Dataset:
    """Load a dataset saved by :func:`save_npz` (keys ``x``: float inputs in model-input
    space, ``y``: integer labels).

    Raises:
        InputFileError: missing or unreadable file, missing keys, non-integer labels, or a
            different number of inputs and labels.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: npz file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x", "y") if k not in data.files]
            if missing:
                raise InputFileError(
                    f"{path}: npz lacks key(s) {', '.join(missing)} (has: "
                    f"{', '.join(data.files) or 'none'})"
                )
            x, y = data["x"], data["y"]
    except InputFileError:
        raise
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        raise InputFileError(f"{path}: cannot read npz: {exc}") from exc
    if not np.issubdtype(x.dtype, np.number):
        raise InputFileError(f"{path}: inputs 'x' are not numbers (dtype {x.dtype})")
    if not (np.issubdtype(y.dtype, np.integer)
            or (np.issubdtype(y.dtype, np.floating) and np.array_equal(y, np.round(y)))):
        raise InputFileError(f"{path}: labels 'y' are not integers (dtype {y.dtype})")
    if x.ndim < 1 or y.ndim != 1 or len(x) != len(y):
        raise InputFileError(
            f"{path}: x has shape {x.shape}, y has shape {y.shape}; expected (N, ...) and (N,)"
        )
    return Dataset(x.astype(np.float32), y.astype(np.int64), str(path))


def save_npz(path: str | os.PathLike, x: np.ndarray, y: np.ndarray) -> None:
    """Save inputs ``x`` (``(N, ...)``, stored float32, model-input space) and labels ``y``
    (``(N,)``, stored int64) as a compressed ``.npz``, atomically.
    """
    path = Path(path)
    data = Dataset(x, y, str(path))  # validates shapes
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        # A file object, not a name: np.savez would append ".npz" to the temporary name.
        with open(tmp, "wb") as f:
            np.savez_compressed(f, x=data.x, y=data.y)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600


# --------------------------------------------------------------------------------------------
# Splits and shapes


def _find(data_dir: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def mnist_split(data_dir: str | os.PathLike, n_eval: int = 1000) -> tuple[Dataset, Dataset]:
    """The MNIST training and evaluation sets found in ``data_dir``.

    Evaluation is always the first ``n_eval`` official test images (0..999 by default, which
    include the 100 ERAN images and the images VNN-COMP specs are built from). Training is the
    official training set when ``train-images-idx3-ubyte(.gz)`` and ``train-labels-idx1-ubyte(.gz)``
    are present, and otherwise the rest of the test set (images 1000..9999), so that training
    never sees an evaluation image.

    Returns:
        ``(train, evaluation)`` datasets, ``x: (N, 1, 28, 28)`` float32 in [0, 1].

    Raises:
        InputFileError: when the test files (``t10k-images-idx3-ubyte(.gz)``,
            ``t10k-labels-idx1-ubyte(.gz)``) are missing or unreadable.
    """
    data_dir = Path(data_dir)
    test_images = _find(data_dir, "t10k-images-idx3-ubyte")
    test_labels = _find(data_dir, "t10k-labels-idx1-ubyte")
    if test_images is None or test_labels is None:
        raise InputFileError(
            f"{data_dir}: MNIST test set not found (need t10k-images-idx3-ubyte[.gz] and "
            "t10k-labels-idx1-ubyte[.gz])"
        )
    test = Dataset(*load_mnist_idx(test_images, test_labels), source=str(test_images))
    evaluation = test.subset(0, n_eval)
    train_images = _find(data_dir, "train-images-idx3-ubyte")
    train_labels = _find(data_dir, "train-labels-idx1-ubyte")
    if train_images is not None and train_labels is not None:
        train = Dataset(*load_mnist_idx(train_images, train_labels), source=str(train_images))
    else:
        train = test.subset(n_eval, len(test))
    return train, evaluation


def fit_to_input(x, n_inputs: int):
    """Reshape a batch to ``(N, n_inputs)`` (C order), the flattened layout networks take.

    Args:
        x: ``(N, ...)`` array or tensor; the first axis is the batch.
        n_inputs: the network's flattened input size.

    Raises:
        ShapeMismatchError: "data has D values per sample, network expects K".
    """
    shape = tuple(x.shape)
    if len(shape) < 1:
        raise ShapeMismatchError("data has no batch axis (a scalar was given)")
    per_sample = int(np.prod(shape[1:], dtype=np.int64))
    if per_sample != int(n_inputs):
        raise ShapeMismatchError(
            f"data has {per_sample} values per sample, network expects {int(n_inputs)}"
        )
    return x.reshape(shape[0], int(n_inputs))
