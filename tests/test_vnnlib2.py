"""VNN-LIB 2.0 (vnnx.io.vnnlib2): 2.0 twins of shared 1.0 specs give the same Spec and the same
verdicts, the shared two-network query parses into its Query form, malformed 2.0 input gets one
line naming the line, and `vnnx spec --format 2.0` writes files that read back to the 1.0 Spec."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from vnnx.cli import main
from vnnx.errors import ConfigError, InputFileError, ShapeMismatchError
from vnnx.io.vnnlib import Property, Spec, read_vnnlib, robustness_property, write_robustness_spec
from vnnx.io.vnnlib2 import MultiNetworkQueryError, parse_query, read_query, spec_to_vnnlib2

TWINS = Path(__file__).resolve().parent / "fixtures" / "vnnlib2"
BENCH = Path(__file__).resolve().parents[1].parent / "shared" / "benchmarks"
MONOTONIC = BENCH / "vnnlib2_monotonic_acasxu" / "vnnlib" / "instance_0.vnnlib"
needs_shared = pytest.mark.skipif(not BENCH.is_dir(), reason="../shared benchmarks absent")


def assert_same_spec(got: Spec, want: Spec) -> None:
    assert (got.n_inputs, got.n_outputs) == (want.n_inputs, want.n_outputs)
    assert len(got.properties) == len(want.properties)
    for p, q in zip(got.properties, want.properties):
        np.testing.assert_array_equal(p.x_lower, q.x_lower)
        np.testing.assert_array_equal(p.x_upper, q.x_upper)
        assert len(p.clauses) == len(q.clauses)
        for (a, b), (c, d) in zip(p.clauses, q.clauses):
            assert a.shape == c.shape
            np.testing.assert_array_equal(a, c)
            np.testing.assert_array_equal(b, d)


def _write(tmp_path: Path, text: str, name: str = "q.vnnlib") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# Single-network twins of shared 1.0 specs


@needs_shared
@pytest.mark.parametrize("twin, original, sizes", [
    ("test_prop.vnnlib", "test/test_prop.vnnlib", (5, 5)),
    ("acasxu_prop_1.vnnlib", "acasxu/prop_1.vnnlib", (5, 5)),
    ("acasxu_prop_6.vnnlib", "acasxu/prop_6.vnnlib", (5, 5)),
    ("mnistfc_prop_0_0.03.vnnlib.gz", "mnistfc/prop_0_0.03.vnnlib", (784, 10)),
])
def test_twin_parses_to_the_same_spec(twin, original, sizes):
    got = read_vnnlib(TWINS / twin, *sizes)
    assert_same_spec(got, read_vnnlib(BENCH / original, *sizes))
    assert got.path == str(TWINS / twin)
    with pytest.raises(ShapeMismatchError, match=f"{re.escape(twin)}.*declares {sizes[0]} inputs"):
        read_vnnlib(TWINS / twin, sizes[0] + 1, sizes[1])


@needs_shared
@pytest.mark.parametrize("onnx_name, twin, original, verdict", [
    ("test/test_sat.onnx", "test_prop.vnnlib", "test/test_prop.vnnlib", "sat"),
    ("test/test_unsat.onnx", "test_prop.vnnlib", "test/test_prop.vnnlib", "unsat"),
    ("acasxu/ACASXU_run2a_1_1_batch_2000.onnx", "acasxu_prop_1.vnnlib", "acasxu/prop_1.vnnlib",
     "unsat"),
])
def test_twin_gets_the_same_verdict(capsys, tmp_path, onnx_name, twin, original, verdict):
    answers = []
    for spec in (BENCH / original, TWINS / twin):
        result = tmp_path / f"{spec.name}.txt"
        code = main(["verify", "--onnx", str(BENCH / onnx_name), "--vnnlib", str(spec),
                     "--timeout", "60", "--result-file", str(result)])
        out = capsys.readouterr().out.strip()
        assert code == 0
        answers.append((out, result.read_text().splitlines()[0]))
    assert answers[0] == answers[1] == (verdict, verdict)


# --------------------------------------------------------------------------------------------
# The shared two-network query


@needs_shared
def test_monotonic_acasxu_query_form():
    q = read_query(MONOTONIC)
    assert q.version == "2.0"
    f, g = q.networks
    assert (f.name, f.equal_to, g.name, g.equal_to) == ("f", None, "g", "f")
    assert [(t.name, t.kind, t.shape, t.offset) for t in q.tensors] == [
        ("X_f", "input", (5,), 0), ("Y_f", "output", (5,), 5),
        ("X_g", "input", (5,), 10), ("Y_g", "output", (5,), 15)]
    assert q.n_columns == 20 and q.disjuncts == [[]]
    a, b, strict = q.dense(q.common)
    assert a.shape == (21, 20) and strict.tolist() == [False] * 20 + [True]
    rows = {(tuple(a[k]), b[k]) for k in range(21)}
    # X_f[0] <= X_g[0] <= 0.667245963, X_f[i] == X_g[i] as two rows each, Y_f[1] < Y_g[1].
    e = np.eye(20)
    assert (tuple(e[0] - e[10]), 0.0) in rows
    assert (tuple(e[10]), 0.667245963) in rows
    for i in range(1, 5):
        assert (tuple(e[i] - e[10 + i]), 0.0) in rows and (tuple(e[10 + i] - e[i]), 0.0) in rows
    assert (tuple(a[20]), b[20]) == (tuple(e[6] - e[16]), 0.0)
    assert (tuple(e[3]), 0.227272727) in rows and (tuple(-e[3]), -0.227272727) in rows
    assert q.common[-1].line == 30 and q.common[0].line == 18
    assert q.column_name(16) == "Y_g[1]"
    # Semantics on points: equal inputs in the box, then the output relation decides.
    v = np.zeros(20)
    v[:5] = [0.1, -0.1, 0.3, 0.227272727, 0.25]
    v[10:15] = v[:5]
    v[10] = 0.2                       # X_g[0] >= X_f[0]
    v[6], v[16] = 1.0, 2.0            # Y_f[1] < Y_g[1]
    assert q.holds(v)
    w = v.copy(); w[16] = 1.0         # Y_f[1] == Y_g[1] is not < ...
    assert not q.holds(w)
    w = v.copy(); w[10] = 0.05        # X_g[0] < X_f[0]
    assert not q.holds(w)
    w = v.copy(); w[11] = -0.2        # X_g[1] != X_f[1]
    assert not q.holds(w)


@needs_shared
def test_multi_network_query_is_refused_by_the_spec_form_and_goes_to_the_product(capsys):
    with pytest.raises(MultiNetworkQueryError, match=r"instance_0\.vnnlib: multi-network queries \(f, g\) do not fit"):
        read_vnnlib(MONOTONIC)
    onnx_path = BENCH / "vnnlib2_monotonic_acasxu" / "onnx" / "ACASXU_run2a_4_2_batch_2000.onnx"
    # One plain --onnx serves f and g (g is equal-to f): the product network loads.
    code = main(["verify", "--onnx", str(onnx_path), "--vnnlib", str(MONOTONIC), "--method", "check"])
    out = capsys.readouterr().out
    assert code == 0 and "ok: 2 networks" in out and "6 free inputs" in out


def test_multi_network_disjunction_scalars_and_onnx_names():
    text = """(vnnlib-version <2.0>)
    (declare-network a (declare-input x real [2] "in") (declare-output s float32 [] "out"))
    (declare-network b (isomorphic-to a) (declare-input u real [2]) (declare-output t float32 []))
    (assert (== x[0] u[0]))
    (assert (<= (+ x[1] (* -2 u[1])) 0.5))
    (assert (or (and (> s t) (>= s 1)) (< (- s t) -3)))
    (assert (or (<= x[0] 1) (>= x[1] 2)))
    """
    q = parse_query(text, "two.vnnlib")
    a, b = q.networks
    assert b.isomorphic_to == "a" and a.inputs[0].onnx_name == "in" and a.outputs[0].shape == ()
    assert [t.offset for t in q.tensors] == [0, 2, 3, 5] and q.n_columns == 6
    # x0 x1 s u0 u1 t
    A, bnd, strict = q.dense(q.common)
    np.testing.assert_array_equal(A, [[1, 0, 0, -1, 0, 0], [-1, 0, 0, 1, 0, 0], [0, 1, 0, 0, -2, 0]])
    np.testing.assert_array_equal(bnd, [0, 0, 0.5])
    assert not strict.any()
    # Two disjunctions multiply: the later one's rows come first in each disjunct.
    assert len(q.disjuncts) == 4
    shapes = [[(tuple(q.dense([r])[0][0]), r.bound, r.strict) for r in d] for d in q.disjuncts]
    assert shapes[0] == [((1, 0, 0, 0, 0, 0), 1.0, False), ((0, 0, -1, 0, 0, 1), 0.0, True),
                         ((0, 0, -1, 0, 0, 0), -1.0, False)]
    assert shapes[3] == [((0, -1, 0, 0, 0, 0), -2.0, False), ((0, 0, 1, 0, 0, -1), -3.0, True)]
    v = np.array([0.5, 1.0, 2.0, 0.5, 0.5, 1.0])       # x0 = u0, s > t, s >= 1, x0 <= 1
    assert q.holds(v)
    assert not q.holds(v + np.array([0, 0, 0, 0.1, 0, 0]))  # x0 != u0
    with pytest.raises(MultiNetworkQueryError, match="two.vnnlib: multi-network"):
        q.to_spec()


def test_single_network_checks_and_shapes(tmp_path):
    head = "(vnnlib-version <2.0>)\n(declare-network n (declare-input X real [2,2]) (declare-output Y real [3]))\n"
    box = "".join(f"(assert (<= X[{i},{j}] 1))(assert (>= X[{i},{j}] 0))\n" for i in range(2) for j in range(2))
    spec = read_vnnlib(_write(tmp_path, head + box + "(assert (<= (- Y[0] Y[2]) 0))\n"), 4, 3)
    ((a, b),) = spec.properties[0].clauses
    assert a.tolist() == [[1, 0, -1]] and b.tolist() == [0]
    with pytest.raises(InputFileError, match=r"line 4: a constraint couples inputs \(X\[0,0\], X\[1,1\]\)"):
        read_vnnlib(_write(tmp_path, head + "(assert (<= X[0,0] 1))\n(assert (<= X[0,0] X[1,1]))\n" + box))
    with pytest.raises(InputFileError, match=r"input X\[1,0\] has no finite"):
        read_vnnlib(_write(tmp_path, head + box.replace("(assert (>= X[1,0] 0))", "")))
    two_inputs = ("(vnnlib-version <2.0>)\n(declare-network n (declare-input X real [2]) "
                  "(declare-input Z real [2]) (declare-output Y real [1]))\n(assert (<= Y[0] 0))\n")
    with pytest.raises(MultiNetworkQueryError, match="declares 2 input and 1 output tensors"):
        read_vnnlib(_write(tmp_path, two_inputs))


# --------------------------------------------------------------------------------------------
# Malformed 2.0 input: one line, naming the file and the line


HEAD = "(vnnlib-version <2.0>)\n(declare-network f\n  (declare-input X real [3])\n  (declare-output Y real [2]))\n"


@pytest.mark.parametrize("text, line, pattern", [
    (HEAD + "(assert (<= X[3] 1))\n", 5, r"index 'X\[3\]' is out of range for X of shape \[3\]"),
    (HEAD + "\n(assert (<= X[0,1] 1))\n", 6, r"index 'X\[0,1\]' is out of range"),
    (HEAD + "(assert (<= Z[0] 1))\n", 5, "undeclared identifier 'Z'"),
    (HEAD + "(assert (<= X 1))\n", 5, r"X has shape \[3\]; index it as X\[i\]"),
    (HEAD + "(assert (!= X[0] 1))\n", 5, "unsupported operator '!='"),
    (HEAD + "(assert (<= (* X[0] Y[0]) 1))\n", 5, "nonlinear product"),
    (HEAD + "(assert (<= X[0] 1)\n(assert (<= X[1] 1))\n", 6, r"expected '\)', got '\('"),
    (HEAD + "(assert (<= X[0] 1)\n", 5, "unexpected end of file"),
    (HEAD + "(assert (<= X[0] 1)))\n", 5, r"unbalanced parentheses: '\)' without '\('"),
    (HEAD + "(assert (and (<= X[0] 1) (or (<= Y[0] 1) (<= Y[1] 1))))\n", 5, "'or' inside an 'and'"),
    (HEAD + "(declare-const X_0 Real)\n", 5, "declare-const is VNN-LIB 1.0"),
    (HEAD + "(declare-network g (equal-to h) (declare-input U real [3]) (declare-output V real [2]))\n",
     5, "equal-to 'h', which is not declared"),
    (HEAD + "(declare-network g (equal-to f) (declare-input U real [4]) (declare-output V real [2]))\n",
     5, "equal-to f but its tensor shapes differ"),
    (HEAD + "(declare-network g (declare-input X real [3]) (declare-output V real [2]))\n", 5,
     "'X' is declared twice"),
    (HEAD.replace("(declare-output Y real [2])", "(declare-hidden H real [2] \"h\")"), 4,
     "declare-hidden is not supported yet"),
    (HEAD.replace("[3]", "[3"), 3, r"expected \(declare-input NAME TYPE \[d1,...\]\)"),
    ("(declare-network f (declare-input X real [1]) (declare-output Y real [1]))\n"
     "(vnnlib-version <2.0>)\n", 1, r"starts with \(vnnlib-version <2.0>\)"),
    (HEAD + "(assert (<= X[0] 1))\n(check-sat)\n", 6, "unknown command 'check-sat'"),
    (HEAD + "(assert (<= X[0] 1 2))\n", 5, "'<=' takes two arguments"),
])
def test_malformed_2_0_one_line_naming_the_line(tmp_path, text, line, pattern):
    path = _write(tmp_path, text, "bad2.vnnlib")
    with pytest.raises(InputFileError) as info:
        read_query(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}, line {line}: "), message
    assert re.search(pattern, message), message


def test_versions_other_than_1_and_2_are_refused(tmp_path):
    with pytest.raises(InputFileError, match=r"v\.vnnlib: VNN-LIB 3\.0 is not supported"):
        read_vnnlib(_write(tmp_path, "(vnnlib-version <3.0>)\n", "v.vnnlib"))
    with pytest.raises(InputFileError, match="not a VNN-LIB 2.0 file"):
        read_query(_write(tmp_path, "(declare-const X_0 Real)", "v1.vnnlib"))


# --------------------------------------------------------------------------------------------
# Writing 2.0


def _random_spec(rng: np.random.Generator, n_in: int, n_out: int) -> Spec:
    """Specs of every shape: one or several boxes, clauses of 0, 1 or several rows."""
    props = []
    for _ in range(int(rng.integers(1, 4))):
        lo = rng.normal(size=n_in)
        hi = lo + rng.random(n_in)
        hi[0] = lo[0]  # a zero-width range
        clauses = []
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(0, 4))
            a = np.round(rng.normal(size=(k, n_out)), 3) * (rng.random((k, n_out)) < 0.7)
            clauses.append((a, rng.normal(size=k)))
        props.append(Property(lo, hi, clauses))
    return Spec("random", n_in, n_out, props)


@pytest.mark.parametrize("seed", range(6))
def test_spec_to_vnnlib2_round_trip(seed):
    rng = np.random.default_rng(seed)
    spec = _random_spec(rng, int(rng.integers(1, 6)), int(rng.integers(1, 5)))
    shape = (1, spec.n_inputs) if seed % 2 else None
    text = spec_to_vnnlib2(spec, input_shape=shape)
    assert_same_spec(parse_query(text, "rt.vnnlib").to_spec(), spec)


def test_spec_command_writes_2_0_that_reads_back_to_the_1_0_spec(tmp_path, capsys):
    from vnnx.data import save_npz

    rng = np.random.default_rng(3)
    x = rng.random((2, 1, 4, 4)).astype(np.float32)
    save_npz(tmp_path / "d.npz", x, np.array([1, 3]))
    for fmt in ("1.0", "2.0"):
        code = main(["spec", "--data", str(tmp_path / "d.npz"), "--epsilon", "0.05", "--count", "2",
                     "--all", "--out-dir", str(tmp_path / fmt)] + (["--format", "2.0"] if fmt == "2.0" else []))
        assert code == 0
    capsys.readouterr()
    names = sorted(p.name for p in (tmp_path / "1.0").glob("*.vnnlib"))
    assert names == sorted(p.name for p in (tmp_path / "2.0").glob("*.vnnlib")) and len(names) == 2
    for name, label in zip(names, (1, 3)):
        text = (tmp_path / "2.0" / name).read_text()
        assert "(vnnlib-version <2.0>)" in text and "declare-const" not in text
        assert "(declare-input X real [16])" in text and f"(>= Y[0] Y[{label}])" in text
        assert "declare-const" in (tmp_path / "1.0" / name).read_text()
        one, two = read_vnnlib(tmp_path / "1.0" / name, 16, 4), read_vnnlib(tmp_path / "2.0" / name, 16, 4)
        assert_same_spec(two, one)
    # And against the property itself.
    expected = robustness_property(x[0], 0.05, 1, 4)  # 4 classes: labels 1 and 3
    (prop,) = read_vnnlib(tmp_path / "2.0" / "prop_0_0.05.vnnlib").properties
    np.testing.assert_array_equal(prop.x_lower, expected.x_lower)
    np.testing.assert_array_equal(prop.x_upper, expected.x_upper)
    with pytest.raises(ConfigError, match="1.0 and 2.0"):
        write_robustness_spec(tmp_path / "v.vnnlib", x[0], 0.05, 1, 10, version="3.0")
