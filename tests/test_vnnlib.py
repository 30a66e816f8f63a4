"""VNN-LIB reading/writing and VNN-COMP instance lists (vnnx.io.vnnlib)."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest

from vnnx.errors import ConfigError, InputFileError, ShapeMismatchError
from vnnx.io.vnnlib import (
    Property,
    read_instances_csv,
    read_vnnlib,
    robustness_property,
    violates,
    write_instances_csv,
    write_robustness_spec,
)
from vnnx.io.vnnlib2 import MultiNetworkQueryError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BENCH = SHARED / "benchmarks"
needs_shared = pytest.mark.skipif(not BENCH.is_dir(), reason="../shared benchmarks absent")


def _onnx_sizes(path: Path) -> tuple[int, int]:
    """Flattened input/output sizes read straight from the ONNX graph (independent of vnnx)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]

    def size(value_info) -> int:
        return int(np.prod([d.dim_value for d in value_info.type.tensor_type.shape.dim]))

    return size(inputs[0]), size(model.graph.output[0])


def _write(tmp_path: Path, text: str, name: str = "p.vnnlib") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Every shared spec


@pytest.fixture(scope="module")
def shared_specs() -> dict[Path, object]:
    """Every spec in the shared benchmarks, parsed once, with the sizes of the network each is
    paired with in its instances csv (read straight from the ONNX graph, independent of vnnx).
    Parsing all 64 takes about 2 s."""
    if not BENCH.is_dir():
        pytest.skip("../shared benchmarks absent")
    sizes_of_spec: dict[Path, set[tuple[int, int]]] = {}
    onnx_cache: dict[Path, tuple[int, int]] = {}
    for csv in sorted(BENCH.glob("*/*_instances.csv")):
        for onnx_path, spec_path, timeout in read_instances_csv(csv):
            assert onnx_path.is_file() and spec_path.is_file(), (csv, onnx_path, spec_path)
            assert timeout > 0
            if onnx_path not in onnx_cache:
                onnx_cache[onnx_path] = _onnx_sizes(onnx_path)
            sizes_of_spec.setdefault(spec_path, set()).add(onnx_cache[onnx_path])
    specs = sorted(BENCH.rglob("*.vnnlib")) + sorted(BENCH.rglob("*.vnnlib.gz"))
    # The shared VNN-LIB 2.0 file is a two-network query: parsed (tests/test_vnnlib2.py), refused
    # by the single-network Spec form with one clear line, verified through vnnx.product.
    v2 = [p for p in specs if "vnnlib-version <2" in p.read_text(errors="replace")]
    assert v2
    for p in v2:
        with pytest.raises(MultiNetworkQueryError, match="multi-network queries .* do not fit a single-network Spec"):
            read_vnnlib(p)
    specs = [p for p in specs if p not in v2]
    assert len(specs) >= 60
    parsed = {}
    for spec_path in specs:
        sizes = sizes_of_spec.get(spec_path, set())
        assert len(sizes) <= 1, (spec_path, sizes)  # one network shape per spec
        n_in, n_out = next(iter(sizes), (None, None))
        parsed[spec_path] = read_vnnlib(spec_path, n_in, n_out)  # raises on a size mismatch
    # Every mnistfc / verivital spec is paired with a 784-in, 10-out network.
    assert all(sizes_of_spec.get(p) == {(784, 10)} for p in specs
               if "mnistfc" in p.parts or "verivital" in p.parts)
    return parsed


def test_every_shared_spec_parses(shared_specs):
    for spec_path, spec in shared_specs.items():
        assert spec.path == str(spec_path)
        assert spec.properties, spec_path
        for prop in spec.properties:
            assert prop.x_lower.shape == prop.x_upper.shape == (spec.n_inputs,)
            assert prop.x_lower.dtype == np.float64
            assert np.all(np.isfinite(prop.x_lower)) and np.all(prop.x_lower <= prop.x_upper)
            assert prop.clauses
            for a, b in prop.clauses:
                assert a.shape == (b.size, spec.n_outputs) and b.ndim == 1


def _mnist_label(path: Path) -> int:
    match = re.search(r"label: (\d+)", path.read_text().splitlines()[0])
    assert match, path
    return int(match.group(1))


@pytest.mark.parametrize("folder", ["mnistfc", "verivital"])
def test_mnist_robustness_semantics(shared_specs, folder):
    """Unsafe iff some other logit >= the true logit: clause j is y_label - y_j <= 0."""
    paths = [p for p in shared_specs if folder in p.parts]
    assert len(paths) >= 20
    for path in paths:
        label = _mnist_label(path)
        eps = float(re.search(r"_([0-9.]+)\.vnnlib$", path.name).group(1))
        (prop,) = shared_specs[path].properties
        assert len(prop.clauses) == 9
        others = []
        for a, b in prop.clauses:
            assert a.shape == (1, 10) and b.tolist() == [0.0]
            assert a[0, label] == 1.0 and a.sum() == 0.0 and np.count_nonzero(a) == 2
            others.append(int(np.flatnonzero(a[0] == -1.0)[0]))
        assert sorted(others) == [j for j in range(10) if j != label]
        # Box: width 2*eps (float32 arithmetic in the generator) unless clipped to [0, 1].
        width = prop.x_upper - prop.x_lower
        clipped = (prop.x_lower == 0.0) | (prop.x_upper == 1.0)
        assert np.allclose(width[~clipped], 2 * eps, atol=1e-6)
        assert np.all(width <= 2 * eps + 1e-6)
        assert prop.x_lower.min() >= 0.0 and prop.x_upper.max() <= 1.0
        x = (prop.x_lower + prop.x_upper) / 2
        y = np.zeros(10)
        y[label] = 1.0
        assert not violates(prop, x, y)
        y[(label + 3) % 10] = 1.0  # tie counts as a counterexample (>=)
        assert violates(prop, x, y)
        y[(label + 3) % 10] = 0.999
        assert not violates(prop, x, y)
        assert violates(prop, x, y, tol=0.01)


@needs_shared
def test_acasxu_semantics():
    (p1,) = read_vnnlib(BENCH / "acasxu" / "prop_1.vnnlib", 5, 5).properties
    np.testing.assert_array_equal(p1.x_lower, [0.6, -0.5, -0.5, 0.45, -0.5])
    np.testing.assert_array_equal(p1.x_upper, [0.679857769, 0.5, 0.5, 0.5, -0.45])
    ((a, b),) = p1.clauses  # (assert (>= Y_0 3.991125645861615)) as -y0 <= -3.99...
    np.testing.assert_array_equal(a, [[-1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(b, [-3.991125645861615])
    x = (p1.x_lower + p1.x_upper) / 2
    assert violates(p1, x, [4.0, 0, 0, 0, 0])
    assert violates(p1, x, [3.991125645861615, 9, 9, 9, 9])
    assert not violates(p1, x, [3.99, 0, 0, 0, 0])
    assert not violates(p1, p1.x_upper + 1e-9, [4.0, 0, 0, 0, 0])
    assert violates(p1, p1.x_upper + 1e-9, [4.0, 0, 0, 0, 0], tol=1e-8)

    # prop_2: top-level conjunction "Y_0 is maximal" -> one clause with 4 rows.
    (p2,) = read_vnnlib(BENCH / "acasxu" / "prop_2.vnnlib").properties
    ((a, b),) = p2.clauses
    np.testing.assert_array_equal(a, np.eye(5)[1:] - np.eye(5)[0])
    np.testing.assert_array_equal(b, np.zeros(4))
    x = (p2.x_lower + p2.x_upper) / 2
    assert violates(p2, x, [5, 1, 2, 3, 4]) and not violates(p2, x, [3, 1, 2, 5, 4])

    # prop_6: disjunction of two input boxes, each with "Y_0 is not minimal" (4 clauses).
    spec6 = read_vnnlib(BENCH / "acasxu" / "prop_6.vnnlib", 5, 5)
    assert len(spec6.properties) == 2
    first, second = spec6.properties
    np.testing.assert_array_equal(first.x_lower,
                                  [-0.129289109, 0.11140846, -0.499999896, -0.5, -0.5])
    np.testing.assert_array_equal(first.x_upper, [0.700434925, 0.499999896, -0.499204121, 0.5, 0.5])
    np.testing.assert_array_equal(second.x_lower[1], -0.499999896)
    np.testing.assert_array_equal(second.x_upper[1], -0.11140846)
    for prop in spec6.properties:
        rows = sorted(tuple(a[0]) for a, _ in prop.clauses)
        assert rows == sorted(tuple(np.eye(5)[j] - np.eye(5)[0]) for j in range(1, 5))
        assert all(b.tolist() == [0.0] for _, b in prop.clauses)
    x_gap = (first.x_lower + first.x_upper) / 2
    x_gap[1] = 0.0  # between the two boxes: in neither
    assert not any(violates(p, x_gap, [0, 1, 1, 1, 1]) for p in spec6.properties)

    # prop_7: two clauses of three rows each.
    (p7,) = read_vnnlib(BENCH / "acasxu" / "prop_7.vnnlib").properties
    assert [a.shape for a, _ in p7.clauses] == [(3, 5), (3, 5)]
    x = (p7.x_lower + p7.x_upper) / 2
    assert violates(p7, x, [1, 1, 1, 0, 5])       # Y_3 minimal among Y_0..Y_3
    assert not violates(p7, x, [0, 1, 1, 0.5, 0.5])


@needs_shared
def test_test_benchmark_specs():
    (p,) = read_vnnlib(BENCH / "test" / "test_nano.vnnlib", 1, 1).properties
    np.testing.assert_array_equal(p.x_lower, [-1.0])
    np.testing.assert_array_equal(p.x_upper, [1.0])
    assert violates(p, [0.0], [-1.0]) and not violates(p, [0.0], [-0.99])
    # Input bounds inside the (or (and ...)) of a single disjunct.
    (p,) = read_vnnlib(BENCH / "test" / "test_small.vnnlib", 1, 1).properties
    np.testing.assert_array_equal(p.x_lower, [-1.0])
    assert violates(p, [1.0], [100.0]) and not violates(p, [1.0], [99.0])
    assert not violates(p, [1.5], [100.0])


# --------------------------------------------------------------------------------------------
# Parsing details and errors


def test_gz_and_interleaved_assertions(tmp_path):
    """Top-level X and Y assertions in any order, and .vnnlib.gz."""
    text = """
        (declare-const X_0 Real) (declare-const X_1 Real)
        (declare-const Y_0 Real) (declare-const Y_1 Real) (declare-const Y_2 Real)
        (assert (<= Y_0 Y_1))
        (assert (>= X_0 -0.25))
        (assert (>= (+ Y_2 (* 2 Y_0)) 1.5))
        (assert (<= X_0 0.5))
        (assert (<= (* 2 X_1) 3))
        (assert (>= X_1 -1e-3))
    """
    path = tmp_path / "p.vnnlib.gz"
    path.write_bytes(gzip.compress(text.encode()))
    spec = read_vnnlib(path)
    assert (spec.n_inputs, spec.n_outputs) == (2, 3)
    (prop,) = spec.properties
    np.testing.assert_array_equal(prop.x_lower, [-0.25, -1e-3])
    np.testing.assert_array_equal(prop.x_upper, [0.5, 1.5])
    ((a, b),) = prop.clauses
    rows = {tuple(r) + (v,) for r, v in zip(a, b)}
    assert rows == {(1, -1, 0, 0.0), (-2, 0, -1, -1.5)}


def test_disjuncts_with_input_bounds_group_by_box(tmp_path):
    """(or (and X.. Y..) ...): disjuncts sharing a box become clauses of one property, and
    disjunct bounds intersect the top-level box."""
    path = _write(tmp_path, """
        (declare-const X_0 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
        (assert (>= X_0 0)) (assert (<= X_0 1))
        (assert (or (and (<= X_0 0.5) (>= Y_0 1))
                    (and (>= X_0 0.5) (>= Y_1 1))
                    (and (<= X_0 0.5) (<= Y_0 Y_1))))""")
    spec = read_vnnlib(path, 1, 2)
    boxes = {(p.x_lower[0], p.x_upper[0]): [(a.tolist(), b.tolist()) for a, b in p.clauses]
             for p in spec.properties}
    assert boxes == {
        (0.0, 0.5): [([[-1.0, 0.0]], [-1.0]), ([[1.0, -1.0]], [0.0])],
        (0.5, 1.0): [([[0.0, -1.0]], [-1.0])],
    }
    low, high = sorted(spec.properties, key=lambda p: p.x_lower[0])
    # A disjunct whose box is empty ([2, 1] after intersecting) is dropped, not an error.
    path = _write(tmp_path, """
        (declare-const X_0 Real) (declare-const Y_0 Real)
        (assert (>= X_0 0)) (assert (<= X_0 1))
        (assert (or (and (>= X_0 2) (>= Y_0 1)) (and (<= X_0 0.5) (>= Y_0 3))))""", "e.vnnlib")
    (prop,) = read_vnnlib(path).properties
    assert (prop.x_lower.tolist(), prop.x_upper.tolist()) == ([0.0], [0.5])
    assert [b.tolist() for _, b in prop.clauses] == [[-3.0]]
    assert violates(low, [0.25], [2.0, 0.0]) and not violates(high, [0.25], [2.0, 0.0])
    assert violates(high, [0.75], [0.0, 2.0]) and not violates(high, [0.75], [2.0, 0.0])


def test_undeclared_sizes_inferred_and_checked(tmp_path):
    path = _write(tmp_path, "(declare-const X_0 Real)(declare-const X_1 Real)"
                            "(declare-const Y_0 Real)"
                            "(assert (<= X_0 1))(assert (>= X_0 0))"
                            "(assert (<= X_1 1))(assert (>= X_1 0))(assert (<= Y_0 0))")
    assert read_vnnlib(path).n_inputs == 2
    with pytest.raises(ShapeMismatchError, match=r"p\.vnnlib.*declares 2 inputs, network has 3"):
        read_vnnlib(path, n_inputs=3, n_outputs=1)
    with pytest.raises(ShapeMismatchError, match=r"declares 1 outputs, network has 10"):
        read_vnnlib(path, n_inputs=2, n_outputs=10)


@needs_shared
def test_size_mismatch_against_real_spec():
    with pytest.raises(ShapeMismatchError, match=r"prop_1\.vnnlib.*5 inputs.*784"):
        read_vnnlib(BENCH / "acasxu" / "prop_1.vnnlib", 784, 10)


@pytest.mark.parametrize("text, pattern", [
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1)", "malformed"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1)))", "malformed"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_7 1))",
     r"line 1: malformed VNN-LIB: undeclared identifier 'X_7'"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(check-sat)", "unknown command 'check-sat'"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (distinct X_0 1))",
     "unsupported operator 'distinct'"),
    ("(declare-const X_0 Real)(declare-const X_1 Real)(declare-const Y_0 Real)"
     "(assert (<= X_0 X_1))(assert (>= X_0 0))(assert (>= X_1 0))(assert (<= X_1 1))",
     "couples inputs"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 Y_0))", "mixes X and Y"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 1))(assert (<= Y_0 1))",
     "X_0 has no finite"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)(assert (<= X_0 0))(assert (>= X_0 1))",
     r"X_0 has an empty range \[1\.0, 0\.0\]"),
    ("(declare-const Y_0 Real)(assert (<= Y_0 1))", "no input variables"),
    ("", "no input variables"),
    ("(declare-const X_0 Real)(declare-const Y_0 Real)"
     "(assert (or (and (<= X_0 1) (or (<= Y_0 1)))))",
     "malformed"),
])
def test_bad_files_raise_input_file_error(tmp_path, text, pattern):
    path = _write(tmp_path, text, "bad_prop.vnnlib")
    with pytest.raises(InputFileError) as info:
        read_vnnlib(path)
    message = str(info.value)
    assert "bad_prop.vnnlib" in message and "\n" not in message
    assert re.search(pattern, message), message


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(InputFileError, match="nope.vnnlib.*not found"):
        read_vnnlib(tmp_path / "nope.vnnlib")
    bad_gz = tmp_path / "x.vnnlib.gz"
    bad_gz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(InputFileError, match="x.vnnlib.gz"):
        read_vnnlib(bad_gz)


def test_violates_checks_shapes_and_non_finite():
    prop = Property(np.zeros(2), np.ones(2), [(np.array([[1.0, -1.0]]), np.array([0.0]))])
    assert violates(prop, [0.5, 0.5], [0.0, 1.0])
    assert not violates(prop, [0.5, 0.5], [np.nan, 1.0])
    assert not violates(prop, [0.5, np.inf], [0.0, 1.0])
    with pytest.raises(ShapeMismatchError):
        violates(prop, np.zeros(3), [0.0, 1.0])
    with pytest.raises(ShapeMismatchError):
        violates(prop, np.zeros(2), [0.0, 1.0, 2.0])
    # A clause with no rows holds everywhere in the box.
    always = Property(np.zeros(1), np.ones(1), [(np.zeros((0, 2)), np.zeros(0))])
    assert violates(always, [1.0], [3.0, 4.0]) and not violates(always, [2.0], [3.0, 4.0])


# --------------------------------------------------------------------------------------------
# Writing


def test_robustness_round_trip_exact(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 4, 4)).astype(np.float32)
    x[0, 0, 0, :2] = [0.0, 1.0]                       # clipped on both sides
    x[0, 1, 0, 0] = 1e-7                              # tiny values need positional notation
    for name, clip in (("r.vnnlib", (0.0, 1.0)), ("r.vnnlib.gz", (0.0, 1.0)), ("n.vnnlib", None)):
        path = tmp_path / name
        write_robustness_spec(path, x, 0.1, label=2, n_outputs=5, clip=clip)
        expected = robustness_property(x, 0.1, 2, 5, clip=clip)
        spec = read_vnnlib(path, n_inputs=48, n_outputs=5)
        (prop,) = spec.properties
        np.testing.assert_array_equal(prop.x_lower, expected.x_lower)
        np.testing.assert_array_equal(prop.x_upper, expected.x_upper)
        xf = x.ravel().astype(np.float64)
        lo, hi = xf - 0.1, xf + 0.1
        if clip is not None:
            lo, hi = np.maximum(lo, 0.0), np.minimum(hi, 1.0)
        np.testing.assert_array_equal(prop.x_lower, lo)
        np.testing.assert_array_equal(prop.x_upper, hi)
        assert len(prop.clauses) == len(expected.clauses) == 4
        for (a, b), (ea, eb) in zip(prop.clauses, expected.clauses):
            np.testing.assert_array_equal(a, ea)
            np.testing.assert_array_equal(b, eb)
        y = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
        assert not violates(prop, xf, y)
        y[4] = 1.0
        assert violates(prop, xf, y)
    text = (tmp_path / "r.vnnlib").read_text()
    assert not re.search(r"\d[eE][-+]?\d", text)  # no exponent notation
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write leaves nothing behind


@needs_shared
def test_written_spec_matches_mnistfc(tmp_path):
    """mnistfc prop_0_0.03 is test image 8661 (label 8) at eps 0.03; our spec for it has the
    same layout line by line and the same box up to the generator's float32 rounding."""
    from vnnx.data import load_mnist_idx

    mnist = SHARED / "data" / "mnist"
    x, y = load_mnist_idx(mnist / "t10k-images-idx3-ubyte.gz", mnist / "t10k-labels-idx1-ubyte.gz")
    assert y[8661] == 8
    ours = tmp_path / "prop.vnnlib"
    write_robustness_spec(ours, x[8661].ravel(), 0.03, 8, 10)
    theirs = BENCH / "mnistfc" / "prop_0_0.03.vnnlib"
    number = re.compile(r"-?\d+\.\d+")
    skeleton = [number.sub("NUM", line) for line in ours.read_text().rstrip("\n").split("\n")]
    reference = [number.sub("NUM", line) for line in theirs.read_text().rstrip("\n").split("\n")]
    assert skeleton[1:] == reference[1:]
    (p_ours,) = read_vnnlib(ours, 784, 10).properties
    (p_theirs,) = read_vnnlib(theirs, 784, 10).properties
    np.testing.assert_allclose(p_ours.x_lower, p_theirs.x_lower, rtol=0, atol=1e-7)
    np.testing.assert_allclose(p_ours.x_upper, p_theirs.x_upper, rtol=0, atol=1e-7)
    assert [(a.tolist(), b.tolist()) for a, b in p_ours.clauses] == \
        [(a.tolist(), b.tolist()) for a, b in p_theirs.clauses]


@pytest.mark.parametrize("kwargs, error", [
    (dict(epsilon=-0.1), ConfigError),
    (dict(epsilon=float("nan")), ConfigError),
    (dict(label=5), ConfigError),
    (dict(label=-1), ConfigError),
    (dict(n_outputs=1, label=0), ConfigError),
    (dict(clip=(0.0, 0.5)), ConfigError),          # x = 0.75 lies outside
])
def test_robustness_spec_rejects_bad_arguments(tmp_path, kwargs, error):
    args = dict(x=np.full(3, 0.75), epsilon=0.1, label=1, n_outputs=5, clip=(0.0, 1.0))
    args.update(kwargs)
    path = tmp_path / "bad.vnnlib"
    with pytest.raises(error):
        write_robustness_spec(path, **args)
    assert not path.exists() and not list(tmp_path.iterdir())


def test_instances_csv_round_trip(tmp_path):
    rows = [("net.onnx", "specs/p0.vnnlib", 60), ("../other/net.onnx", "p1.vnnlib.gz", 12.5)]
    csv = tmp_path / "bench" / "instances.csv"
    write_instances_csv(csv, rows)
    assert csv.read_text() == "net.onnx,specs/p0.vnnlib,60\n../other/net.onnx,p1.vnnlib.gz,12.5\n"
    assert read_instances_csv(csv) == [
        (tmp_path / "bench" / "net.onnx", tmp_path / "bench" / "specs" / "p0.vnnlib", 60.0),
        (tmp_path / "other" / "net.onnx", tmp_path / "bench" / "p1.vnnlib.gz", 12.5),
    ]
    with pytest.raises(ConfigError, match="timeout"):
        write_instances_csv(csv, [("a.onnx", "b.vnnlib", 0)])
    with pytest.raises(ConfigError, match="comma"):
        write_instances_csv(csv, [("a,b.onnx", "b.vnnlib", 5)])


def test_instances_csv_errors(tmp_path):
    with pytest.raises(InputFileError, match="not found"):
        read_instances_csv(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("a.onnx,b.vnnlib,10\n\nonnx,vnnlib\n")
    with pytest.raises(InputFileError, match=r"bad\.csv, line 3"):
        read_instances_csv(bad)
    bad.write_text("onnx,vnnlib,timeout\n")
    with pytest.raises(InputFileError, match=r"line 1: timeout 'timeout'"):
        read_instances_csv(bad)


@needs_shared
def test_verivital_relative_paths_resolve():
    rows = read_instances_csv(BENCH / "verivital" / "verivital_instances.csv")
    assert len(rows) == 20
    onnx_path, spec_path, timeout = rows[0]
    assert onnx_path == BENCH / "verivital" / "Convnet_maxpool.onnx"
    assert spec_path == BENCH / "verivital" / "specs" / "maxpool_specs" / "prop_0_0.004.vnnlib"
    assert timeout == 420.0


@pytest.mark.parametrize("literal, value", [("+3e-1", 0.3), (".1", 0.1), ("-.5", -0.5), ("+0.5", 0.5),
                                            ("1.", 1.0), ("2E-1", 0.2)])
def test_number_forms_vnncomp_files_use(tmp_path, literal, value):
    """``+3e-1`` and ``.1`` were rejected as undeclared identifiers."""
    path = _write(tmp_path, "(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
                            f"(assert (>= X_0 -1))\n(assert (<= X_0 {literal}))\n(assert (<= Y_0 {literal}))\n")
    prop = read_vnnlib(path).properties[0]
    assert prop.x_upper[0] == value and prop.clauses[0][1][0] == value


def test_strict_comparisons_and_equalities(tmp_path):
    path = _write(tmp_path, "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
                            "(declare-const Y_1 Real)\n(assert (= X_0 0.25)) ; a point\n(assert (> X_1 0))\n"
                            "(assert (< X_1 1))\n(assert (or (and (< Y_0 Y_1)) (and (== Y_0 (- 2)))))\n")
    prop = read_vnnlib(path).properties[0]
    assert prop.x_lower.tolist() == [0.25, 0.0] and prop.x_upper.tolist() == [0.25, 1.0]
    (a0, b0), (a1, b1) = prop.clauses
    assert a0.tolist() == [[1.0, -1.0]] and b0.tolist() == [0.0]
    assert a1.tolist() == [[1.0, 0.0], [-1.0, 0.0]] and b1.tolist() == [-2.0, 2.0]


def test_errors_name_the_line(tmp_path):
    head = "; comment (with a paren\n(declare-const X_0 Real)\n(declare-const Y_0 Real)\n"
    cases = [
        ("(assert (<= X_0 1))\n(assert (>= X_0 0))\n(assert (<= Y_0 Z))\n", 6, "undeclared identifier 'Z'"),
        ("(assert (<= X_0 1))\n\n(assert (<= (* X_0 X_0) 1))\n", 6, "nonlinear product"),
        ("(declare-const X_0 Real)\n", 4, "'X_0' is declared twice"),
        ("(declare-const B Bool)\n", 4, "unsupported sort 'Bool'"),
        ("(assert (<= X_0 1))\n(assert (=> X_0 1))\n", 5, "unsupported operator '=>'"),
        ("(assert (<= X_0 1))\n(assert (<= X_0 Y_0))\n", 5, "mixes X and Y"),
        ("(assert (<= X_0 1))\n(assert (or (<= Y_0 1) (and (<= X_0 0.5) (<= (- X_0 X_0) 1))))\n", 5,
         "constraint on X_0 has coefficient 0"),
        ("(assert (<= X_0 1))\n(assert X_0)\n", 5, "expected a comparison, 'and' or 'or', got 'X_0'"),
    ]
    for body, line, pattern in cases:
        path = _write(tmp_path, head + body, "lines.vnnlib")
        with pytest.raises(InputFileError) as info:
            read_vnnlib(path)
        message = str(info.value)
        assert message.startswith(f"{path}, line {line}: ") and "\n" not in message, (body, message)
        assert re.search(pattern, message), message


def test_version_header_and_common_plus_disjunct_output_rows(tmp_path):
    """A 1.0 header is accepted. Top-level output rows hold in every disjunct: each clause is the
    common rows then the disjunct's (vnnlib.compat overwrote the common rows instead)."""
    path = _write(tmp_path, """(vnnlib-version <1.0>)
        (declare-const X_0 Real) (declare-const Y_0 Real) (declare-const Y_1 Real)
        (assert (>= X_0 0)) (assert (<= X_0 1))
        (assert (<= Y_0 5))
        (assert (or (>= Y_1 1) (and (<= Y_1 -1) (>= Y_0 -2))))""")
    (prop,) = read_vnnlib(path, 1, 2).properties
    assert [(a.tolist(), b.tolist()) for a, b in prop.clauses] == [
        ([[1.0, 0.0], [0.0, -1.0]], [5.0, -1.0]),
        ([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], [5.0, -1.0, 2.0]),
    ]
    assert violates(prop, [0.5], [4.0, 2.0]) and not violates(prop, [0.5], [6.0, 2.0])
    assert violates(prop, [0.5], [-1.0, -3.0]) and not violates(prop, [0.5], [-3.0, -3.0])
