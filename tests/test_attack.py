"""vnnx.attack.pgd_spec: its starts include points on the box's faces, where violations often sit
and PGD from inside stalls (ACAS Xu 1_9 prop_7)."""
import numpy as np
import pytest
import torch

import vnnx.attack as attack
from vnnx.attack import pgd_spec, spec_margin


class FaceTrap(torch.nn.Module):
    """y = 1 - 200 relu(x0 - 0.995) on x in [-1, 1]^3: flat (zero gradient) everywhere but in
    the sliver x0 > 0.9975 next to the face x0 = 1, where y drops below 0.5."""

    def forward(self, x):
        return (1 - 200 * torch.relu(x[:, :1] - 0.995)).reshape(-1, 1)


CLAUSES = [(np.array([[1.0]]), np.array([0.5]))]      # unsafe: y <= 0.5
LO, HI = -np.ones(3), np.ones(3)


@pytest.mark.parametrize("seed", range(5))
def test_starts_on_faces_find_a_violation_next_to_a_face(seed):
    res = pgd_spec(FaceTrap(), LO, HI, CLAUSES, restarts=10, steps=20, seed=seed)
    assert res.margin <= 0 and res.x[0] > 0.995
    y = FaceTrap()(torch.as_tensor(res.x[None], dtype=torch.float32))
    assert spec_margin(y.double(), CLAUSES).item() <= 0


def test_without_the_pool_pgd_stalls_there(monkeypatch):
    """The control: the same search from the centre and 9 uniform starts (what pgd_spec did
    before) finds nothing: the gradient is zero wherever it starts."""
    def inside(module, lo, hi, clauses, shape, restarts, gen, time_limit=None):
        x0 = lo + (hi - lo) * torch.rand((restarts, lo.numel()), generator=gen)
        x0[0] = (lo + hi) / 2
        return x0

    monkeypatch.setattr(attack, "_starts", inside)
    found = [pgd_spec(FaceTrap(), LO, HI, CLAUSES, restarts=10, steps=20, seed=s).margin <= 0 for s in range(5)]
    assert not any(found)


def test_pool_respects_memory_cap(monkeypatch):
    monkeypatch.setattr(attack, "PGD_POOL_ENTRIES", 30)      # 10 points of 3 entries: the restarts only
    calls = []

    class Counting(FaceTrap):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    pgd_spec(Counting(), LO, HI, CLAUSES, restarts=10, steps=1, seed=0)
    assert max(calls) == 10
