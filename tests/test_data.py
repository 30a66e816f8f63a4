"""Data loading (vnnx.data): MNIST IDX, ERAN csv, npz, splits and input shapes."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from vnnx.data import (
    Dataset,
    fit_to_input,
    load_eran_csv,
    load_mnist_idx,
    load_npz,
    mnist_split,
    save_npz,
)
from vnnx.errors import ConfigError, InputFileError, ShapeMismatchError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MNIST = SHARED / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason="../shared MNIST absent")


def _idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array (magic 0x0000 08 ndim, big-endian dims, data)."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _fake_mnist(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def _write_idx_pair(directory: Path, prefix: str, images, labels, gz: bool) -> tuple[Path, Path]:
    suffix = ".gz" if gz else ""
    img = directory / f"{prefix}-images-idx3-ubyte{suffix}"
    lab = directory / f"{prefix}-labels-idx1-ubyte{suffix}"
    for path, array in ((img, images), (lab, labels)):
        data = _idx_bytes(array)
        path.write_bytes(gzip.compress(data) if gz else data)
    return img, lab


# --------------------------------------------------------------------------------------------
# Real MNIST


@pytest.fixture(scope="module")
def mnist_test():
    return load_mnist_idx(MNIST / "t10k-images-idx3-ubyte.gz", MNIST / "t10k-labels-idx1-ubyte.gz")


@needs_mnist
def test_mnist_test_set(mnist_test):
    x, y = mnist_test
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.float32
    assert y.shape == (10000,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]  # the well-known first labels
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # Values are exactly k/255 in float32.
    k = np.round(x * 255)
    assert np.array_equal(x, k.astype(np.float32) / np.float32(255))


@needs_mnist
def test_eran_csv_equals_first_100_idx_images(mnist_test):
    x, y = mnist_test
    xe, ye = load_eran_csv(MNIST / "eran_mnist_test_first100.csv")
    assert xe.shape == (100, 1, 28, 28) and xe.dtype == np.float32 and ye.dtype == np.int64
    np.testing.assert_array_equal(ye, y[:100])
    np.testing.assert_array_equal(xe, x[:100])


@needs_mnist
def test_mnist_split_on_test_set_only(mnist_test):
    x, y = mnist_test
    train, evaluation = mnist_split(MNIST)
    assert len(train) == 9000 and len(evaluation) == 1000
    np.testing.assert_array_equal(evaluation.x, x[:1000])
    np.testing.assert_array_equal(evaluation.y, y[:1000])
    np.testing.assert_array_equal(train.x, x[1000:])
    np.testing.assert_array_equal(train.y, y[1000:])
    assert "t10k" in train.source and "1000:10000" in train.source


# --------------------------------------------------------------------------------------------
# Synthetic IDX files


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip_and_real_train_set(tmp_path, gz):
    rng = np.random.default_rng(1)
    test_img, test_lab = _fake_mnist(rng, 12)
    train_img, train_lab = _fake_mnist(rng, 7)
    _write_idx_pair(tmp_path, "t10k", test_img, test_lab, gz)
    x, y = load_mnist_idx(*_write_idx_pair(tmp_path, "t10k", test_img, test_lab, gz))
    np.testing.assert_array_equal(x[:, 0], test_img.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y, test_lab)
    # Without a training set the rest of the test set trains ...
    train, evaluation = mnist_split(tmp_path, n_eval=5)
    np.testing.assert_array_equal(train.y, test_lab[5:])
    np.testing.assert_array_equal(evaluation.y, test_lab[:5])
    # ... with one, the real training set does, and evaluation is unchanged.
    _write_idx_pair(tmp_path, "train", train_img, train_lab, gz)
    train, evaluation = mnist_split(tmp_path, n_eval=5)
    np.testing.assert_array_equal(train.x[:, 0] * 255, train_img.astype(np.float32))
    np.testing.assert_array_equal(train.y, train_lab)
    np.testing.assert_array_equal(evaluation.y, test_lab[:5])


def test_idx_errors(tmp_path):
    rng = np.random.default_rng(2)
    images, labels = _fake_mnist(rng, 4)
    img, lab = _write_idx_pair(tmp_path, "t10k", images, labels, gz=False)
    with pytest.raises(InputFileError, match="missing-images.*not found"):
        load_mnist_idx(tmp_path / "missing-images", lab)
    # Images and labels swapped: each has the other's magic number.
    with pytest.raises(InputFileError, match=r"bad magic number 0x00000801.*expected 0x00000803"):
        load_mnist_idx(lab, img)
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x12\x34\x56\x78" + img.read_bytes()[4:])
    with pytest.raises(InputFileError, match="bad.*bad magic number 0x12345678"):
        load_mnist_idx(bad, lab)
    bad.write_bytes(img.read_bytes()[:-10])
    with pytest.raises(InputFileError, match=r"truncated IDX image file.*\(4, 28, 28\)"):
        load_mnist_idx(bad, lab)
    bad.write_bytes(img.read_bytes()[:10])
    with pytest.raises(InputFileError, match="truncated"):
        load_mnist_idx(bad, lab)
    bad.write_bytes(img.read_bytes() + b"\x00")
    with pytest.raises(InputFileError, match="corrupt"):
        load_mnist_idx(bad, lab)
    bad.write_bytes(gzip.compress(img.read_bytes())[:-20])
    with pytest.raises(InputFileError, match="cannot read"):
        load_mnist_idx(bad, lab)
    short_labels = tmp_path / "short-labels"
    short_labels.write_bytes(_idx_bytes(labels[:3]))
    with pytest.raises(InputFileError, match="has 4 images but .*short-labels has 3 labels"):
        load_mnist_idx(img, short_labels)
    with pytest.raises(InputFileError, match="MNIST test set not found"):
        mnist_split(tmp_path / "nowhere")


# --------------------------------------------------------------------------------------------
# ERAN csv


def test_eran_csv_errors(tmp_path):
    path = tmp_path / "e.csv"
    row = "3," + ",".join(["0"] * 784)
    path.write_text(row + "\n" + "4," + ",".join(["255"] * 784) + "\n")
    x, y = load_eran_csv(path)
    assert y.tolist() == [3, 4] and x[0].max() == 0.0 and x[1].min() == 1.0
    path.write_text(row + "\n" + "4," + ",".join(["0"] * 783) + "\n")
    with pytest.raises(InputFileError, match=r"e\.csv, line 2: 784 values, expected 785"):
        load_eran_csv(path)
    path.write_text("3," + ",".join(["256"] * 784))
    with pytest.raises(InputFileError, match="line 1: pixel values must lie in 0..255"):
        load_eran_csv(path)
    path.write_text("3," + ",".join(["x"] * 784))
    with pytest.raises(InputFileError, match="line 1"):
        load_eran_csv(path)
    path.write_text("")
    with pytest.raises(InputFileError, match="no images"):
        load_eran_csv(path)
    with pytest.raises(InputFileError, match="not found"):
        load_eran_csv(tmp_path / "missing.csv")


# --------------------------------------------------------------------------------------------
# npz and Dataset


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.random((6, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    path = tmp_path / "sub" / "data.npz"
    save_npz(path, x, y)
    assert sorted(p.name for p in path.parent.iterdir()) == ["data.npz"]  # no temp file left
    data = load_npz(path)
    assert data.x.dtype == np.float32 and data.y.dtype == np.int64
    np.testing.assert_array_equal(data.x, x)
    np.testing.assert_array_equal(data.y, y)
    assert data.source == str(path) and len(data) == 6
    part = data.subset(2, 5)
    np.testing.assert_array_equal(part.x, x[2:5])
    np.testing.assert_array_equal(part.y, y[2:5])
    with pytest.raises(ConfigError, match="range 4..7"):
        data.subset(4, 7)
    with pytest.raises(ConfigError):
        data.subset(3, 3)


def test_npz_errors(tmp_path):
    path = tmp_path / "d.npz"
    with pytest.raises(InputFileError, match="not found"):
        load_npz(path)
    np.savez(path, x=np.zeros((2, 3), np.float32), labels=np.zeros(2))
    with pytest.raises(InputFileError, match=r"d\.npz: npz lacks key\(s\) y \(has: x, labels\)"):
        load_npz(path)
    np.savez(path, x=np.zeros((2, 3), np.float32), y=np.zeros(3, np.int64))
    with pytest.raises(InputFileError, match=r"x has shape \(2, 3\), y has shape \(3,\)"):
        load_npz(path)
    np.savez(path, x=np.zeros((2, 3), np.float32), y=np.array([0.5, 1.0]))
    with pytest.raises(InputFileError, match="not integers"):
        load_npz(path)
    np.savez(path, x=np.zeros((2, 3), np.float32), y=np.array(["a", "b"]))
    with pytest.raises(InputFileError, match="not integers"):
        load_npz(path)
    np.savez(path, x=np.array(["a", "b"]), y=np.zeros(2, np.int64))
    with pytest.raises(InputFileError, match="not numbers"):
        load_npz(path)
    path.write_bytes(b"not a zip file")
    with pytest.raises(InputFileError, match="cannot read npz"):
        load_npz(path)
    with pytest.raises(ShapeMismatchError):
        save_npz(tmp_path / "e.npz", np.zeros((2, 3)), np.zeros(3))
    assert not (tmp_path / "e.npz").exists()
    with pytest.raises(ShapeMismatchError):
        Dataset(np.zeros((2, 3)), np.zeros((2, 1)))


def test_fit_to_input():
    x = np.arange(2 * 784, dtype=np.float32).reshape(2, 1, 28, 28)
    flat = fit_to_input(x, 784)
    assert flat.shape == (2, 784)
    np.testing.assert_array_equal(flat[1], x[1].ravel())
    with pytest.raises(ShapeMismatchError,
                       match="data has 784 values per sample, network expects 5"):
        fit_to_input(x, 5)
    assert fit_to_input(np.zeros(3), 1).shape == (3, 1)
    import torch

    t = fit_to_input(torch.zeros(4, 2, 3), 6)
    assert isinstance(t, torch.Tensor) and tuple(t.shape) == (4, 6)
