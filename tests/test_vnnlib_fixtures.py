"""vnnx's own VNN-LIB reader against the parse of the reader it replaced (PyPI vnnlib
0.0.1.post1's compat), saved by tools/make_vnnlib_fixtures.py for every 1.0 spec in
../shared/benchmarks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vnnx.io.vnnlib import read_vnnlib

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vnnlib_parse"
BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
FOLDERS = sorted(p.stem for p in FIXTURES.glob("*.npz"))


def test_fixtures_cover_the_shared_benchmarks():
    assert {"acasxu", "mnistfc", "verivital", "test", "collins_rul_cnn_sample",
            "capm_overlap_case"} <= set(FOLDERS)
    total = sum(len(np.load(FIXTURES / f"{f}.npz")["paths"]) for f in FOLDERS)
    assert total >= 60
    assert sum(p.stat().st_size for p in FIXTURES.glob("*.npz")) < 3 * 2**20


@pytest.mark.skipif(not BENCH.is_dir(), reason="../shared benchmarks absent")
@pytest.mark.parametrize("folder", FOLDERS)
def test_same_spec_as_the_old_reader(folder):
    data = np.load(FIXTURES / f"{folder}.npz")
    for j, rel in enumerate(data["paths"]):
        n_in, n_out, declared_in, declared_out = (int(v) for v in data["sizes"][j])
        spec = read_vnnlib(BENCH / str(rel), None if n_in < 0 else n_in,
                           None if n_out < 0 else n_out)
        assert (spec.n_inputs, spec.n_outputs) == (declared_in, declared_out), rel
        assert len(spec.properties) == int(data["n_props"][j]), rel
        for p, prop in enumerate(spec.properties):
            key = f"s{j}_p{p}"
            # Bit for bit: equal values and the same dtype, no tolerance.
            np.testing.assert_array_equal(prop.x_lower, data[f"{key}_lower"], err_msg=str(rel))
            np.testing.assert_array_equal(prop.x_upper, data[f"{key}_upper"], err_msg=str(rel))
            assert len(prop.clauses) == int(data[f"{key}_nclauses"]), rel
            for c, (a, b) in enumerate(prop.clauses):
                want_a, want_b = data[f"{key}_c{c}_A"], data[f"{key}_c{c}_b"]
                assert a.shape == want_a.shape and b.shape == want_b.shape, rel
                np.testing.assert_array_equal(a, want_a, err_msg=str(rel))
                np.testing.assert_array_equal(b, want_b, err_msg=str(rel))
