"""Named regression tests for every wrong verdict found so far (issue 16), each pinned where it
happened: witness confirmation, the ReLU branch and bound's domain pruning, the clause that holds
on the whole box, and properties without output constraints."""
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from nets import random_cnn, random_mlp
from vnnx.attack import spec_margin
from vnnx.bab import intersect_interval, infeasible
from vnnx.engine import GraphEngine
from vnnx.graph_bab import GraphBab
from vnnx.io.onnx import load_onnx, network_to_onnx, run_onnxruntime
from vnnx.io.vnnlib import Property, Spec, read_vnnlib, violates
from vnnx.verify import METHODS, WITNESS_TOL, Verifier, check_counterexample

REPO = Path(__file__).resolve().parents[1]
COLLINS = [("NN_rul_full_window_20.onnx", "robustness_8perturbations_delta10_epsilon10_w20.vnnlib"),
           ("NN_rul_small_window_20.onnx", "robustness_2perturbations_delta40_epsilon10_w20.vnnlib")]


def _model(tmp_path, net):
    path = tmp_path / "net.onnx"
    network_to_onnx(net, path)
    return load_onnx(path)


def _not_float32(rng, n):
    """Values float32 cannot hold exactly (as VNN-COMP's collins_rul_cnn boxes have)."""
    v = np.round(rng.uniform(-1, 1, n), 12) + 1e-13
    assert np.all(v.astype(np.float32).astype(np.float64) != v)
    return v


# ------------------------------------------------------------------ witness semantics
def test_witness_on_a_zero_width_range_float32_cannot_hold(tmp_path, rng):
    """Root cause 1: the float32 point was tested for exact float64 membership, so a single-point
    range at a non-float32 value rejected every witness. VNN-COMP accepts 1e-4 on inputs."""
    net = random_mlp(rng, (3, 6, 2))
    model = _model(tmp_path, net)
    point = _not_float32(rng, 3)
    y = run_onnxruntime(model, point.astype(np.float32)[None])[0].astype(np.float64)
    # The clause y_0 <= y_0(point) + 1e-3 holds at the point.
    prop = Property(point, point, [(np.eye(2)[:1], np.array([y[0] + 1e-3]))])
    cex = check_counterexample(model, prop, point)
    assert cex is not None and cex.x.dtype == np.float32
    assert np.all(np.abs(cex.x - point) <= WITNESS_TOL)
    assert check_counterexample(model, prop, point, tol=0.0) is None          # the strict mode
    # Outputs within the tolerance count; outputs beyond it do not.
    near = Property(point, point, [(np.eye(2)[:1], np.array([y[0] - 0.5 * WITNESS_TOL]))])
    far = Property(point, point, [(np.eye(2)[:1], np.array([y[0] - 10 * WITNESS_TOL]))])
    assert check_counterexample(model, near, point) is not None
    assert check_counterexample(model, far, point) is None
    # A point outside the box is clipped into it first, never accepted outside it.
    cex = check_counterexample(model, prop, point + 1.0)
    assert cex is not None and np.all(np.abs(cex.x - point) <= WITNESS_TOL)


def test_witness_tolerance_is_validated(tmp_path, rng):
    model = _model(tmp_path, random_mlp(rng, (2, 4, 2)))
    for bad in (-1e-4, float("nan"), float("inf")):
        with pytest.raises(Exception, match="witness tolerance"):
            Verifier(model, witness_tol=bad)


# --------------------------------------------------------- the ReLU branch and bound
def test_intersection_of_sound_intervals_never_crosses():
    lo1, up1 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, -2.0])
    lo2, up2 = torch.tensor([0.5, 1.0 + 1e-15, -2.0 + 1e-15]), torch.tensor([2.0, 2.0, -2.0 + 2e-15])
    lo, up = intersect_interval(lo1, up1, lo2, up2)
    assert torch.all(lo <= up)
    assert lo[0] == 0.5 and up[0] == 1.0
    # Round-off crossings are not infeasibility; a real contradiction is.
    assert not infeasible(torch.tensor([[1.0 + 1e-14]]), torch.tensor([[1.0]])).item()
    assert infeasible(torch.tensor([[0.0]]), torch.tensor([[-0.01]])).item()


@pytest.mark.parametrize("seed", range(4))
def test_relu_bab_never_refutes_a_clause_that_holds_on_a_degenerate_box(seed):
    """Root cause 2: intersecting CROWN's pre-activation bounds with the branch and bound's own
    made bounds of neurons with a fixed value (zero-width input ranges) cross by ~1e-14; children
    with a crossed neuron were dropped as infeasible, and the empty tree read as 'unsat'
    (collins_rul_cnn, 9 domains)."""
    rng = np.random.default_rng(seed)
    net = random_mlp(rng, (6, 12, 12, 1))
    # Local receptive fields, as in a CNN: half of each hidden layer never sees the two perturbed
    # inputs, so those neurons have one fixed value on the box.
    net.layers[0].weight[:6, :2] = 0.0
    net.layers[2].weight[:6, 6:] = 0.0
    graph = net.to_graph()
    x_lo = _not_float32(rng, 6)
    x_hi = x_lo.copy()
    x_hi[:2] += 0.3                       # two perturbed inputs, the rest fixed
    # Sound layer bounds that touch the true value of the fixed neurons from both sides, offset
    # by round-off: exactly what two float64 bound computations produce for a single point.
    xs = np.concatenate([rng.uniform(x_lo, x_hi, (4000, 6)), [x_lo, x_hi]])
    acts = net.forward(xs, return_all=True)
    layer_bounds = {}
    for k in (0, 2):                      # the Dense layers the ReLUs read
        z = acts[k]
        lo, hi = z.min(0), z.max(0)
        fixed = np.isclose(lo, hi, rtol=0, atol=1e-12)
        lo = np.where(fixed, lo + 1e-14, lo - 10.0)   # cross where fixed, wide elsewhere
        hi = np.where(fixed, hi - 1e-14, hi + 10.0)
        layer_bounds[graph.layer_nodes[k]] = (lo, hi)
    y = net.forward(xs)[:, 0]
    # The clause  y >= min - 1  and  y <= max + 1  holds on the whole box: the answer is sat.
    A, b = np.array([[-1.0], [1.0]]), np.array([-(y.min() - 1.0), y.max() + 1.0])
    bab = GraphBab(GraphEngine(graph), x_lo, x_hi, A, b, check=lambda x: False, max_domains=2000)
    res = bab.run(layer_bounds, deadline=None)
    assert res.status != "unsat"


@pytest.mark.parametrize("onnx_name, spec_name", COLLINS)
def test_collins_rul_cnn_sample_is_sat_with_a_confirmed_witness(shared, onnx_name, spec_name):
    """Both shared VNN-COMP 2022 instances have counterexamples; vnnx said 'unsat' on both."""
    d = shared / "benchmarks" / "collins_rul_cnn_sample"
    model = load_onnx(d / onnx_name)
    spec = read_vnnlib(d / spec_name, model.n_inputs, model.n_outputs)
    verifier = Verifier(model)
    for method in ("auto", "bab", "crown"):
        res = verifier.verify(spec, method=method, timeout=60)
        assert res.verdict == "sat", (method, res.stages)
        x = res.counterexample.x
        y = run_onnxruntime(model, x[None])[0]
        assert violates(spec.properties[0], x, y, tol=WITNESS_TOL)
    # The confirmed counterexample shipped with the sample passes the same check.
    if onnx_name.startswith("NN_rul_full"):
        text = (d / f"{Path(onnx_name).stem}.{Path(spec_name).stem}.counterexample.txt").read_text()
        xs = [float(t.split()[1].rstrip(")")) for t in text.replace("(", " (").split(" (") if t.startswith("X_")]
        assert check_counterexample(model, spec.properties[0], np.array(xs)) is not None


def test_collins_sample_through_run_instance_sh(shared, tmp_path):
    d = shared / "benchmarks" / "collins_rul_cnn_sample"
    onnx_name, spec_name = COLLINS[1]
    out = tmp_path / "result.txt"
    script = REPO / "tools" / "vnncomp" / "run_instance.sh"
    subprocess.run(["bash", str(script), "v1", "collins_rul_cnn", str(d / onnx_name), str(d / spec_name),
                    str(out), "60"], check=True, capture_output=True, timeout=120)
    text = out.read_text()
    assert text.startswith("sat\n")
    xs = np.array([float(line.split()[1].rstrip(")")) for line in text.replace("(", "\n(").splitlines()
                   if line.startswith("(X_")], dtype=np.float32)
    model = load_onnx(d / onnx_name)
    spec = read_vnnlib(d / spec_name, model.n_inputs, model.n_outputs)
    y = run_onnxruntime(model, xs[None])[0]
    assert violates(spec.properties[0], xs, y, tol=WITNESS_TOL)


# ----------------------------------------------------- clauses that hold everywhere
@pytest.mark.parametrize("method", ["ibp", "crown", "alpha-crown"])
def test_clause_holding_on_the_whole_box_is_sat_by_its_upper_bounds(tmp_path, rng, method):
    net = random_cnn(rng, maxpool=False)
    model = _model(tmp_path, net)
    lo = rng.uniform(0, 0.5, net.n_inputs)
    hi = lo + 0.01
    ys = net.forward(rng.uniform(lo, hi, (200, net.n_inputs)))
    A = np.vstack([np.eye(net.n_outputs)[0], -np.eye(net.n_outputs)[0]])
    b = np.array([ys[:, 0].max() + 50.0, -(ys[:, 0].min() - 50.0)])
    spec = Spec("<interval>", net.n_inputs, net.n_outputs, [Property(lo, hi, [(A, b)])])
    res = Verifier(model).verify(spec, method=method, timeout=60)
    assert res.verdict == "sat" and res.decided_by == f"{method}-upper", res.stages
    y = run_onnxruntime(model, res.counterexample.x[None])[0]
    assert violates(spec.properties[0], res.counterexample.x, y, tol=WITNESS_TOL)


# ------------------------------------------------- properties without output rows
def test_spec_without_output_constraint_is_sat(tmp_path, rng):
    """It crashed with IndexError in attack.spec_margin (exit 3; it aborted vnnx bench)."""
    net = random_mlp(rng, (3, 5, 2))
    model = _model(tmp_path, net)
    path = tmp_path / "no_y.vnnlib"
    path.write_text("(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const X_2 Real)\n"
                    "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
                    + "".join(f"(assert (>= X_{i} 0.1))\n(assert (<= X_{i} 0.2))\n" for i in range(3)))
    spec = read_vnnlib(path, 3, 2)
    for method in METHODS:
        res = Verifier(model).verify(spec, method=method, timeout=30)
        assert res.verdict == "sat", method
    margin = spec_margin(torch.zeros(2, 2), spec.properties[0].clauses)
    assert torch.all(margin == -torch.inf)


def test_every_method_runs_alone(tmp_path, rng):
    """Each stage that can decide alone is reachable (the soundness harness runs each)."""
    net = random_mlp(rng, (2, 6, 6, 2))
    model = _model(tmp_path, net)
    lo, hi = np.zeros(2), np.full(2, 0.2)
    ys = net.forward(rng.uniform(lo, hi, (2000, 2)))
    c = np.array([[1.0, -1.0]])
    unsat = Spec("<u>", 2, 2, [Property(lo, hi, [(-c, np.array([-((ys @ c.T).max() + 1.0)]))])])
    verifier = Verifier(model)
    for method in METHODS:
        res = verifier.verify(unsat, method=method, timeout=30)
        expected = {"pgd": "unknown"}.get(method, "unsat")
        assert res.verdict == expected, (method, res.stages)
    split = [s for s in verifier.verify(unsat, method="input-split", timeout=30).stages if s["stage"] == "input-split"]
    assert split or verifier.verify(unsat, "crown", 30).verdict == "unsat"


def test_bench_row_that_crashes_is_an_error_row_and_the_run_goes_on(shared, tmp_path, monkeypatch):
    """Any exception in one row becomes that row's 'error' with its message (it used to abort
    the whole run)."""
    import csv

    from vnnx import bench
    from vnnx.verify import Verifier as V

    d = shared / "benchmarks" / "test"
    inst = tmp_path / "instances.csv"
    inst.write_text(f"{d / 'test_sat.onnx'},{d / 'test_prop.vnnlib'},30\n"
                    f"{d / 'test_unsat.onnx'},{d / 'test_prop.vnnlib'},30\n")
    real = V.verify

    def flaky(self, spec, method="auto", timeout=None):
        if "test_sat" in str(self.model.path):
            raise IndexError("injected failure")
        return real(self, spec, method, timeout)

    monkeypatch.setattr(V, "verify", flaky)
    bench._VERIFIERS.clear()
    summary = bench.run_benchmark(str(inst), out_csv=str(tmp_path / "r.csv"), progress=False)
    bench._VERIFIERS.clear()
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [r["verdict"] for r in rows] == ["error", "unsat"]
    assert "IndexError: injected failure" in rows[0]["decided_by"]
    assert summary.counts()["error"] == 1


def test_witness_on_a_face_is_rounded_into_the_box(shared):
    """A witness on a face of the box (PGD's face starts, input splitting's face samples) whose
    nearest float32 lies just outside: the counterexample reported is the float32 point stepped
    back inside, which still violates, so it holds strictly (tolerance 0) too."""
    model = load_onnx(shared / "benchmarks" / "test" / "test_sat.onnx")
    spec = read_vnnlib(shared / "benchmarks" / "test" / "test_prop.vnnlib", model.n_inputs, model.n_outputs)
    prop = spec.properties[0]
    x = np.array([prop.x_upper[0], -0.0095493, 0.4942022, 0.4874494, 0.3003969])
    assert np.float32(prop.x_upper[0]) > prop.x_upper[0]      # the nearest float32 is outside
    for tol in (WITNESS_TOL, 0.0):
        cex = check_counterexample(model, prop, x, tol=tol)
        assert cex is not None
        assert np.all(cex.x.astype(np.float64) >= prop.x_lower) and np.all(cex.x.astype(np.float64) <= prop.x_upper)
        assert violates(prop, cex.x.astype(np.float64), cex.y.astype(np.float64))
