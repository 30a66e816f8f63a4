"""Shared test helpers. Nothing is built at import time; fixtures are seeded."""
from pathlib import Path

import numpy as np
import pytest

import torch

import vnnx  # noqa: F401  - compatibility patches before anything imports auto_LiRPA

# As the CLI does (vnnx.cli._set_threads): tiny tensors, so one thread is fastest.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture
def shared() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared is not available")
    return SHARED


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
