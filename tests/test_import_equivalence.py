"""The layer chain read from the bound graph is the one the former onnx2torch reader built.

``tests/fixtures/import_views.json`` holds, per network, the chain's fingerprint (accept/refuse,
layer types, shapes, attributes, weight statistics) written by
``tools/check_import_equivalence.py --write`` after the two readers were compared entrywise on
every network (see that tool's docstring: one deliberate difference, a float-to-float ``Cast`` no
longer becomes an identity Dense). This
test reads the networks again with :func:`vnnx.io.onnx.to_network` and compares: the test
generators' networks, and shared networks one per suite (all of them: the tool's ``--check``).
"""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from conftest import REPO

FINGERPRINTS = REPO / "tests" / "fixtures" / "import_views.json"
#: Shared networks read here (the ACAS Xu nets share one structure: two of them).
SHARED_SUBSET = ("acasxu/ACASXU_run2a_1_1", "acasxu/ACASXU_run2a_5_9", "capm_overlap_case/", "collins_rul_cnn_sample/",
                 "mnistfc/mnist-net_256x2", "test/", "verivital/", "eran-mnist/convSmall", "eran-mnist/mnist_relu_3_50",
                 "specs/")


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("check_import_equivalence",
                                                  REPO / "tools" / "check_import_equivalence.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["check_import_equivalence"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def stored():
    return json.loads(FINGERPRINTS.read_text())


@pytest.fixture(scope="module")
def generated(tool, tmp_path_factory):
    return tool.generated_files(tmp_path_factory.mktemp("import_views"))


def _check(tool, stored, key, path):
    new, _ = tool.view_of(path)
    diffs = tool.differences(stored[key], new)
    assert not diffs, f"{key}: " + "; ".join(diffs)
    return new


def test_generated_networks_read_as_recorded(tool, stored, generated):
    assert set(generated) == {k for k in stored if k.startswith("gen/")}
    decisions = {key: _check(tool, stored, key, path)["ok"] for key, path in sorted(generated.items())}
    # Both kinds of answer are exercised: chains accepted, DAGs / products / LeakyRelu refused.
    refused = {k for k, ok in decisions.items() if not ok}
    assert {"gen/resnet", "gen/refuse_residual", "gen/refuse_square", "gen/refuse_leaky"} <= refused
    assert len(refused) < len(decisions)


def test_shared_networks_read_as_recorded(tool, stored):
    files = {k: p for k, p in tool.shared_files().items() if any(s in k for s in SHARED_SUBSET)}
    if not files:
        pytest.skip("../shared and specs/ networks absent")
    for key, path in sorted(files.items()):
        assert key in stored, f"{key}: no recorded fingerprint (run tools/check_import_equivalence.py --write)"
        _check(tool, stored, key, path)


def test_the_check_can_fail(tool, stored):
    """A moved weight, a changed attribute and a flipped decision are all differences."""
    key = "gen/io_conv"
    view = json.loads(json.dumps(stored[key]))
    view["layers"][0]["weight"]["dot"] *= 1 + 1e-7
    assert any("weight.dot" in d for d in tool.differences(stored[key], view))
    view = json.loads(json.dumps(stored[key]))
    view["layers"][0]["padding"] = [0, 0, 0, 0]
    assert any("padding" in d for d in tool.differences(stored[key], view))
    assert tool.differences(stored[key], {"ok": False, "error": "x"})
    assert tool.differences({"ok": False, "error": "a\nb"}, {"ok": False, "error": "x"})
