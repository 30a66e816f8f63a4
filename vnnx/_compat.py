"""Compatibility patches that let auto-LiRPA 0.3 and onnx2torch run on torch 2.13 / numpy 2.

This is the one module in vnnx allowed to have import-time side effects. Every patch is
idempotent, guarded (applied only when the thing it replaces is missing) and tested in
``tests/test_compat.py``: each test shows the failure the patch exists to prevent.

Call :func:`apply` before the first ``import auto_LiRPA`` or ``import onnx2torch``;
``vnnx/__init__.py`` does so.
"""
from __future__ import annotations

import importlib.util
import sys
import types
import warnings

_APPLIED: set[str] = set()


def _patch_numpy_arraysetops() -> None:
    # numpy 2 removed the private module ``numpy.lib.arraysetops``; auto_LiRPA 0.3
    # (operators/base.py) does ``from numpy.lib.arraysetops import isin``. ``isin`` is public.
    if "numpy.lib.arraysetops" in sys.modules:
        return
    import numpy as np

    try:
        importlib.import_module("numpy.lib.arraysetops")
        return
    except ImportError:
        pass
    shim = types.ModuleType("numpy.lib.arraysetops")
    shim.isin = np.isin  # type: ignore[attr-defined]
    shim.__doc__ = "vnnx shim: numpy<2 private module, only what auto_LiRPA 0.3 imports."
    sys.modules["numpy.lib.arraysetops"] = shim


def _patch_set_opset_version() -> None:
    # torch 2.x dropped ``torch.onnx.symbolic_helper._set_opset_version``; auto_LiRPA 0.3
    # (parse_graph.py) imports it and calls it with 12 before ``_optimize_graph``. The state
    # it set now lives in the TorchScript exporter's GLOBALS object.
    # Import by dotted path: ``from torch.onnx import symbolic_helper`` returns a different
    # (internal) module object than the ``torch.onnx.symbolic_helper`` that auto_LiRPA imports.
    symbolic_helper = importlib.import_module("torch.onnx.symbolic_helper")
    if hasattr(symbolic_helper, "_set_opset_version"):
        return
    from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

    def _set_opset_version(opset_version: int) -> None:
        GLOBALS.export_onnx_opset_version = opset_version

    symbolic_helper._set_opset_version = _set_opset_version  # type: ignore[attr-defined]


def _patch_node_getitem() -> None:
    # torch 2.x removed ``torch._C.Node.__getitem__`` (attribute access by name);
    # auto_LiRPA 0.3 (parse_graph.py) reads attributes as ``n[k]``. ``kindOf(k)`` names the
    # typed getter ('i', 'f', 's', 't', 'is', 'fs', 'ss', 'ts', 'g', 'gs', ...).
    import torch

    if hasattr(torch._C.Node, "__getitem__"):
        return

    def __getitem__(node, key):  # noqa: N807 - dunder installed on a foreign class
        return getattr(node, node.kindOf(key))(key)

    torch._C.Node.__getitem__ = __getitem__  # type: ignore[attr-defined]


def _torchvision_loads() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        importlib.import_module("torchvision.ops")
        return True
    except Exception:  # a torchvision built for another torch fails at import time
        return False


def _patch_onnx2torch_torchvision() -> None:
    # onnx2torch imports torchvision at package import, but only its NonMaxSuppression and
    # RoiAlign converters use it, and there is no CPU torchvision build that loads against
    # torch 2.13 here. Replace exactly those two converter modules with empty ones, so the
    # ops become "unsupported" (a clear error at load time) instead of breaking every import.
    if "onnx2torch" in sys.modules or _torchvision_loads():
        return
    for name in ("onnx2torch.node_converters.nms", "onnx2torch.node_converters.roialign"):
        if name not in sys.modules:
            stub = types.ModuleType(name)
            stub.__doc__ = "vnnx stub: this converter needs torchvision, which is not installed."
            stub.__all__ = []  # type: ignore[attr-defined]
            sys.modules[name] = stub


def _patch_bounded_module_named_members() -> None:
    # torch 2.x calls ``Module._named_members(..., remove_duplicate=...)`` from
    # ``parameters()``; auto_LiRPA 0.3 overrides ``_named_members`` without that keyword, so
    # ``BoundedModule.parameters()`` (used by CROWN's sparse-C path) raises TypeError. Its
    # override already de-duplicates (a memo set), which is what remove_duplicate=True asks.
    from auto_LiRPA.bound_general import BoundedModule

    original = BoundedModule._named_members
    if getattr(original, "_vnnx_patched", False):
        return

    def _named_members(self, get_members_fn, prefix="", recurse=True, remove_duplicate=True):
        return original(self, get_members_fn, prefix=prefix, recurse=recurse)

    _named_members._vnnx_patched = True  # type: ignore[attr-defined]
    BoundedModule._named_members = _named_members


_PATCHES = {
    "numpy.lib.arraysetops": _patch_numpy_arraysetops,
    "symbolic_helper._set_opset_version": _patch_set_opset_version,
    "torch._C.Node.__getitem__": _patch_node_getitem,
    "onnx2torch without torchvision": _patch_onnx2torch_torchvision,
}


# Patches to auto_LiRPA's own classes; they need auto_LiRPA imported, which is slow, so they
# run on first use through :func:`import_auto_lirpa`, not at ``import vnnx``.
def _patch_check_ibp_intermediate() -> None:
    # auto_LiRPA 0.3's ``check_IBP_intermediate`` (1) assigns each IBP result to the *root*
    # node's ``interval`` (``node.interval = IBP_general(n)``), overwriting the root's CROWN
    # bounds with those of a later node: a later IBP reading the root is then unsound; and
    # (2) stops at a Reshape, so the bounds of ``reshape(ReLU(conv))`` in front of a MaxPool
    # fall back to a CROWN pass with an identity spec over every neuron (23,328^2 float64
    # = 4.4 GB for the VNN-COMP verivital net, an OOM). IBP through ReLU and reshapes from a
    # node that already has bounds is exact elementwise, so never looser than that CROWN pass.
    from auto_LiRPA import BoundedModule
    from auto_LiRPA.operators.shape import BoundFlatten, BoundReshape

    shape_ops = (BoundReshape, BoundFlatten)

    def check_IBP_intermediate(self, node):  # noqa: N802 - auto_LiRPA's name
        chain = []
        while not hasattr(node, "lower") or not hasattr(node, "upper"):
            if type(node) not in self.ibp_intermediate and type(node) not in shape_ops:
                return False
            chain.append(node)
            node = node.inputs[0]
        for n in reversed(chain):
            self.IBP_general(n)   # sets n.interval, n.lower, n.upper
        return True

    BoundedModule.check_IBP_intermediate = check_IBP_intermediate


_POST_IMPORT_PATCHES = {
    "BoundedModule._named_members(remove_duplicate=)": _patch_bounded_module_named_members,
    "BoundedModule.check_IBP_intermediate(root interval, reshapes)": _patch_check_ibp_intermediate,
}


def import_auto_lirpa():
    """Import auto_LiRPA with every patch applied; use this instead of ``import auto_LiRPA``."""
    apply()
    # record=True swallows what the import warns (torch.jit.script deprecation): auto_LiRPA
    # calls simplefilter("once") while importing, which would override an "ignore" filter.
    with warnings.catch_warnings(record=True):
        import auto_LiRPA

    for name, patch in _POST_IMPORT_PATCHES.items():
        if name not in _APPLIED:
            patch()
            _APPLIED.add(name)
    return auto_LiRPA


def apply() -> list[str]:
    """Apply every patch once; return the names of the patches applied by this call."""
    done = []
    for name, patch in _PATCHES.items():
        if name in _APPLIED:
            continue
        with warnings.catch_warnings():
            # Importing torch.onnx warns that torch.jit.script is deprecated: not ours to fix.
            warnings.simplefilter("ignore", DeprecationWarning)
            patch()
        _APPLIED.add(name)
        done.append(name)
    return done
