"""The README's promises: its Python example runs, and the shipped demo model and specs (the
main job's default) are present, consistent and give answers."""
import json
import re
from pathlib import Path

import numpy as np

from vnnx.bench import run_benchmark
from vnnx.io.onnx import load_onnx, run_onnxruntime
from vnnx.io.vnnlib import read_instances_csv

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "specs" / "mnist_demo"


def test_readme_python_example_runs(monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    monkeypatch.chdir(REPO)
    for code in blocks:
        exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.split()[-1] in ("sat", "unsat")


def test_shipped_demo_is_consistent():
    meta = json.loads((DEMO / "training.json").read_text())
    data = np.load(DEMO / "mnist_eval400.npz")
    x, y = data["x"], data["y"]
    assert x.shape == (400, 1, 28, 28) and x.dtype == np.float32 and y.shape == (400,)
    logits = run_onnxruntime(load_onnx(DEMO / "mnist_2x50.onnx"), x.reshape(400, -1))
    acc = float((logits.argmax(1) == y).mean())
    # training.json reports accuracy on images 0-999; the first 400 must be close to it.
    assert abs(acc - meta["eval_accuracy_0_999"]) < 0.05, (acc, meta["eval_accuracy_0_999"])
    rows = read_instances_csv(DEMO / "specs" / "instances.csv")
    assert len(rows) >= 8 and all(o.is_file() and s.is_file() for o, s, _ in rows)


def test_demo_instances_get_answers_in_parallel(tmp_path):
    """Two worker processes (``--jobs 2``); the easy shipped instances (smallest ε) are all answered."""
    rows = [r for r in read_instances_csv(DEMO / "specs" / "instances.csv") if "_0.02." in r[1].name][:4]
    sub = tmp_path / "easy.csv"
    sub.write_text("".join(f"{o},{s},{t}\n" for o, s, t in rows))
    summary = run_benchmark(str(sub), out_csv=str(tmp_path / "res.csv"), progress=False, jobs=2,
                            max_timeout=60)
    assert [r["vnnlib"] for r in summary.rows] == [str(s) for _, s, _ in rows]   # file order kept
    assert all(r["verdict"] in ("sat", "unsat") for r in summary.rows), summary.table()


def test_quick_demo_has_every_section_and_keeps_the_vnn_promise(tmp_path):
    """README command 1 in ``--quick`` mode: the sections, the JSON, and the VNN section's promise
    on the shipped normally trained 3x50 (50 test images, δ 0.02 and 0.03, validation 200: VNN
    verifies at least as many samples as the original at every δ > 0.01 and strictly more at the
    largest, with the guarantee passed). A retrained model that breaks this fails here."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "vnnx.cli", "demo", "--quick", "--out-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    for name in ("core", "capm", "relu-stability", "substitute", "vericompress", "vnn-lp"):
        assert f"[demo] section {name}" in run.stderr, run.stderr[-2000:]
    doc = json.loads((tmp_path / "demo.json").read_text())
    sections = {s["section"]: s for s in doc["sections"]}
    assert {"core", "VNN LP", "CAPM", "local substitutes", "ReLU stability", "VeriCompress"} <= set(sections)
    capm = sections["CAPM"]["numbers"]["methods"]
    assert set(capm) == {"IBP", "CROWN + CAPM", "CROWN + vnnx MaxPool"}
    for s in doc["sections"]:
        assert {"promise", "measured", "met", "seconds", "numbers"} <= set(s), s
    assert "| method | promise | measured here | met | seconds |" in run.stdout
    vnn = sections["VNN LP"]["numbers"]
    v = vnn["verified_crown"]
    assert vnn["guarantee"] and vnn["deltas"] == [0.02, 0.03] and vnn["n_test"] == 50
    assert all(v["vnn"][d] >= v["original"][d] for d in ("0.02", "0.03")), v
    assert v["vnn"]["0.03"] > v["original"]["0.03"], v
    assert sections["VNN LP"]["met"]
    assert (tmp_path / "vnn_lp" / "robustness.png").stat().st_size > 0
    # The trade-off shipped by tools/make_demo.py: more validation data keeps more accuracy.
    rows = vnn["tradeoff"]["rows"]
    assert rows["1000"]["accuracy"]["vnn"] >= rows["200"]["accuracy"]["vnn"]


def test_shipped_files_stay_small():
    """specs/ (models, data, specs of the main job) stays under 5 MB."""
    total = sum(p.stat().st_size for p in (REPO / "specs").rglob("*") if p.is_file())
    assert total < 5 * 2 ** 20, f"specs/ holds {total / 2 ** 20:.1f} MiB"
