"""Each compatibility patch is needed: without it, auto_LiRPA / onnx2torch break on this stack.

Every case runs in a fresh interpreter that loads ``vnnx/_compat.py`` on its own (not through
``import vnnx``, which applies everything), applies all patches but one, and exercises the code
path the missing patch protects.
"""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

COMPAT = Path(__file__).resolve().parents[1] / "vnnx" / "_compat.py"

EXERCISE = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("compat_under_test", {path!r})
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    skip = {skip!r}
    compat._PATCHES.pop(skip, None)
    compat._POST_IMPORT_PATCHES.pop(skip, None)
    compat.apply()
    import onnx2torch
    lirpa = compat.import_auto_lirpa()
    import torch
    # Conv -> Flatten -> ReLU with every neuron unstable (huge eps): CROWN's intermediate
    # bound at the ReLU input (a Flatten, not a Linear) builds an identity C through
    # BoundedModule.parameters().
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.ReLU(),
                              torch.nn.Linear(2 * 4 * 4, 3))
    x = torch.zeros(1, 1, 6, 6)
    bm = lirpa.BoundedModule(net, (x,), bound_opts={{"conv_mode": "matrix"}})
    ptb = lirpa.PerturbationLpNorm(norm=float("inf"), eps=10.0)
    lb, ub = bm.compute_bounds(x=(lirpa.BoundedTensor(x, ptb),), method="CROWN")
    assert bool((lb <= ub).all())
    print("EXERCISE-OK")
""")


def _run(skip: str) -> subprocess.CompletedProcess:
    code = EXERCISE.format(path=str(COMPAT), skip=skip)
    return subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)


def test_all_patches_applied_stack_works():
    res = _run(skip="")
    assert "EXERCISE-OK" in res.stdout, res.stderr[-2000:]


@pytest.mark.parametrize("patch, symptom", [
    ("numpy.lib.arraysetops", "arraysetops"),
    ("symbolic_helper._set_opset_version", "_set_opset_version"),
    ("torch._C.Node.__getitem__", "not subscriptable"),
    ("BoundedModule._named_members(remove_duplicate=)", "remove_duplicate"),
    ("onnx2torch without torchvision", "torchvision"),
])
def test_each_patch_is_needed(patch, symptom):
    res = _run(skip=patch)
    assert "EXERCISE-OK" not in res.stdout, f"{patch} is not needed any more: remove it from vnnx/_compat.py"
    assert symptom in res.stderr, res.stderr[-2000:]


def test_apply_is_idempotent():
    import vnnx
    from vnnx import _compat

    assert _compat.apply() == []  # already applied by `import vnnx`
    _compat.import_auto_lirpa()
    _compat.import_auto_lirpa()
    import torch
    assert hasattr(torch._C.Node, "__getitem__")


RESHAPE_EXERCISE = textwrap.dedent("""
    import importlib.util
    spec = importlib.util.spec_from_file_location("compat_under_test", {path!r})
    compat = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compat)
    compat._POST_IMPORT_PATCHES.pop({skip!r}, None)
    compat.apply()
    lirpa = compat.import_auto_lirpa()
    import torch
    passes = []
    backward = lirpa.BoundedModule.backward_general
    def counting(self, C=None, node=None, *a, **k):
        passes.append(type(node).__name__)
        return backward(self, C, node, *a, **k)
    lirpa.BoundedModule.backward_general = counting
    class Reshape(torch.nn.Module):
        def forward(self, x):
            return x.reshape(1, 2, 4, 4)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), Reshape(), torch.nn.MaxPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(8, 3))
    x = torch.zeros(1, 1, 6, 6)
    bm = lirpa.BoundedModule(net, (x,), bound_opts={{"conv_mode": "matrix"}})
    bm.compute_bounds(x=(lirpa.BoundedTensor(x, lirpa.PerturbationLpNorm(norm=float("inf"), eps=1.0)),),
                      method="CROWN")
    print("PASSES", ",".join(passes))
""")


@pytest.mark.parametrize("skip, expected", [
    ("", "BoundLinear"),
    ("BoundedModule.check_IBP_intermediate(root interval, reshapes)", "BoundReshape,BoundLinear"),
])
def test_ibp_intermediate_patch_looks_through_reshape(skip, expected):
    """Without the patch, the bounds of ReLU -> Reshape in front of a MaxPool cost a CROWN pass
    with one spec row per neuron (4.4 GB on the verivital net); with it, IBP gives them."""
    code = RESHAPE_EXERCISE.format(path=str(COMPAT), skip=skip)
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=300)
    assert f"PASSES {expected}\n" in res.stdout, res.stderr[-2000:]
