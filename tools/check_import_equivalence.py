"""Is the layer chain read from each network still the recorded one? Fingerprints of
:func:`vnnx.io.onnx.to_network`.

Collects every ONNX file under ``../shared/benchmarks`` and ``../shared/networks/eran-mnist``, the
``specs/**`` networks and the networks the tests generate (``tests/test_onnx_io.py``'s builders,
``tests/nets.py`` nets written with ``network_to_onnx``, ``tests/graph_nets.py``'s DAGs), and
for each one writes the layer chain's fingerprint: accept/refuse, every layer's type, shapes and
attributes, and per weight array its shape, sum, sum of absolute values and dot product with a
seeded random vector (enough to catch any entry that moved or changed beyond rounding).

    python tools/check_import_equivalence.py --write tests/fixtures/import_views.json
    python tools/check_import_equivalence.py --check tests/fixtures/import_views.json

``--check`` compares the current reader with a stored fingerprint file: same decision, same
layers and attributes, weight statistics equal to ``RTOL`` relative (of the array's scale);
refusals must be one-line errors. Prints one line per file and a summary; exit 1 on a difference.
The test ``tests/test_import_equivalence.py`` runs the same check on a subset.

History: the stored file was written by the graph-based reader after a ``--compare`` mode (at
commit 7ae74b1, since removed with the reader it called) ran the former onnx2torch fx reader and
the graph-based one on the same 96 networks: same decisions, same layers and attributes, every
weight and bias entry equal to 1e-9 relative of the array's largest entry, except one deliberate
change: a float-to-float ``Cast`` before the first ReLU (``tests/test_onnx_io.py``'s
``torch_flatten``) was an identity Dense and is now no layer (the graph drops such Casts).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RTOL = 1e-9
_SEED = 12345


def shared_files() -> dict[str, Path]:
    """``{key: path}`` of the shared benchmark networks and the spec networks (key: relative path);
    a file with the same bytes as one already listed (the VNN-LIB 2 suite's copies of ACAS Xu) is
    left out."""
    import hashlib

    out: dict[str, Path] = {}
    seen: set[str] = set()
    roots = [(SHARED / "benchmarks", "shared/benchmarks"), (SHARED / "networks" / "eran-mnist", "shared/eran-mnist"),
             (ROOT / "specs", "specs")]
    for root, tag in roots:
        if not root.is_dir():
            continue
        for p in sorted(root.rglob("*")):
            if p.is_file() and (p.name.endswith(".onnx") or p.name.endswith(".onnx.gz")):
                digest = hashlib.sha256(p.read_bytes()).hexdigest()
                if digest not in seen:
                    seen.add(digest)
                    out[f"{tag}/{p.relative_to(root)}"] = p
    return out


def generated_files(tmp: Path) -> dict[str, Path]:
    """The networks the tests build, written to ``tmp`` (seeded: the same files every run)."""
    import onnx

    sys.path.insert(0, str(ROOT / "tests"))
    import graph_nets
    import nets
    import test_onnx_io as tio

    from vnnx.io.onnx import network_to_onnx

    out: dict[str, Path] = {}
    for name, build in sorted(tio.BUILDERS.items()):
        p = tmp / f"io_{name}.onnx"
        onnx.save(build(tio._Builder(seed=3)), str(p))
        out[f"gen/io_{name}"] = p
    pools = [(7, 3, 2, [0, 0, 0, 0], 0), (7, 3, 2, [1, 1, 1, 1], 1), (7, 3, 2, [0, 1, 2, 0], 0),
             (7, 3, 2, [1, 0, 0, 1], 1), (6, 2, 2, [0, 0, 1, 1], 1), (5, 3, 3, [1, 1, 2, 2], 1)]
    for i, (h, k, s, pads, ceil) in enumerate(pools):
        b = tio._Builder(seed=4)
        y = b.node("MaxPool", ["x"], "y", kernel_shape=[k, k], strides=[s, s], pads=pads, ceil_mode=ceil)
        p = tmp / f"io_pool{i}.onnx"
        onnx.save(b.model([1, 2, h, h + 1], y), str(p))
        out[f"gen/io_pool{i}"] = p
    rng = np.random.default_rng(0)
    plain = {"mlp": nets.random_mlp(rng), "mlp_relu": nets.random_mlp(rng, final_relu=True),
             "cnn": nets.random_cnn(rng), "cnn_nopool": nets.random_cnn(rng, maxpool=False),
             "cnn_overlap": nets.random_cnn(rng, pool_kernel=(3, 3), pool_stride=(1, 1), pool_padding=(1, 1, 1, 1)),
             "cnn_pad": nets.random_cnn(rng, pool_kernel=(2, 2), pool_stride=(2, 2), pool_padding=(0, 0, 1, 1))}
    for name, net in plain.items():
        p = tmp / f"nets_{name}.onnx"
        try:
            network_to_onnx(net, p)
        except Exception:       # not expressible (network_to_onnx refuses cleanly): nothing to read
            continue
        out[f"gen/nets_{name}"] = p
    out["gen/resnet"] = graph_nets.resnet_file(tmp / "resnet.onnx")
    out["gen/zoo"] = graph_nets.zoo_file(tmp / "zoo.onnx")
    out["gen/residual_mlp"] = graph_nets.residual_mlp_file(tmp / "residual_mlp.onnx")
    out.update(_refusals(tio, tmp))
    return out


def _refusals(tio, tmp: Path) -> dict[str, Path]:
    """Small chains and DAGs the layer view refuses (test_onnx_io's error cases, LeakyRelu)."""
    import onnx

    models = {}
    b = tio._Builder()
    h = b.node("Gemm", ["x", b.rand("w", 4, 4), b.rand("bw", 4)], "g", transB=1)
    h = b.node("Relu", [h], "r")
    models["residual"] = b.model([1, 4], b.node("Add", [h, "x"], "y"))
    b = tio._Builder()
    models["square"] = b.model([1, 4], b.node("Mul", ["x", "x"], "y"))
    b = tio._Builder()
    models["double"] = b.model([1, 4], b.node("Add", ["x", "x"], "y"))
    b = tio._Builder()
    h = b.node("Gemm", ["x", b.rand("w", 4, 4), b.rand("bw", 4)], "g", transB=1)
    models["leaky"] = b.model([1, 4], b.node("LeakyRelu", [h], "y", alpha=0.1))
    out = {}
    for name, model in models.items():
        p = tmp / f"refuse_{name}.onnx"
        onnx.save(model, str(p))
        out[f"gen/refuse_{name}"] = p
    return out


def _array_stats(a: np.ndarray) -> dict[str, Any]:
    a = np.asarray(a, dtype=np.float64)
    r = np.random.default_rng(_SEED).uniform(-1.0, 1.0, a.size)
    return {"shape": list(a.shape), "sum": float(a.sum()), "abs": float(np.abs(a).sum()),
            "dot": float(a.reshape(-1) @ r), "max": float(np.abs(a).max()) if a.size else 0.0}


def fingerprint(network) -> list[dict[str, Any]]:
    """Every layer as a JSON-able dict: type, shapes, attributes, weight statistics."""
    out = []
    for layer in network.layers:
        d: dict[str, Any] = {"type": type(layer).__name__}
        for key in ("in_shape", "out_shape", "shape", "kernel", "stride", "padding", "dilation", "groups",
                    "ceil_mode"):
            if hasattr(layer, key):
                v = getattr(layer, key)
                d[key] = list(v) if isinstance(v, tuple) else v
        for key in ("weight", "bias"):
            if hasattr(layer, key):
                d[key] = _array_stats(getattr(layer, key))
        out.append(d)
    return out


def view_of(path: Path) -> tuple[dict[str, Any], Any]:
    """``({"ok": True, "input_shape", "output_shape", "layers"}, network)`` or
    ``({"ok": False, "error"}, None)``."""
    from vnnx.errors import VnnxError
    from vnnx.io.onnx import load_onnx, to_network

    try:
        model = load_onnx(path)
        net = to_network(model)
    except VnnxError as exc:
        # The file's folder is left out: generated files live in a temporary one.
        return {"ok": False, "error": str(exc).replace(str(path), path.name)}, None
    return {"ok": True, "input_shape": list(net.input_shape), "output_shape": list(net.output_shape),
            "layers": fingerprint(net)}, net


def _close(a: float, b: float, scale: float) -> bool:
    return abs(a - b) <= RTOL * max(abs(a), abs(b), scale, 1e-300)


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two views of one file (empty: equivalent)."""
    for v in (old, new):
        if not v["ok"] and "\n" in v["error"]:
            return [f"multi-line error: {v['error']!r}"]
    if old["ok"] != new["ok"]:
        return [f"decision: {'accept' if old['ok'] else 'refuse'} -> {'accept' if new['ok'] else 'refuse'} "
                f"({old.get('error') or new.get('error')})"]
    if not old["ok"]:
        return []
    diffs = []
    for key in ("input_shape", "output_shape"):
        if old[key] != new[key]:
            diffs.append(f"{key} {old[key]} -> {new[key]}")
    if len(old["layers"]) != len(new["layers"]):
        return diffs + [f"{len(old['layers'])} layers -> {len(new['layers'])}: "
                        f"{[x['type'] for x in old['layers']]} -> {[x['type'] for x in new['layers']]}"]
    for i, (a, b) in enumerate(zip(old["layers"], new["layers"])):
        if set(a) != set(b):
            diffs.append(f"layer {i}: fields {sorted(a)} -> {sorted(b)}")
            continue
        for key in a:
            if isinstance(a[key], dict):
                sa, sb = a[key], b[key]
                if sa["shape"] != sb["shape"]:
                    diffs.append(f"layer {i} {key}: shape {sa['shape']} -> {sb['shape']}")
                    continue
                scale = sa["abs"]
                for stat in ("sum", "abs", "dot", "max"):
                    if not _close(sa[stat], sb[stat], scale):
                        diffs.append(f"layer {i} {key}.{stat}: {sa[stat]!r} -> {sb[stat]!r}")
            elif a[key] != b[key]:
                diffs.append(f"layer {i} {a['type']}.{key}: {a[key]} -> {b[key]}")
    return diffs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", help="write the current reader's fingerprints to this JSON file")
    mode.add_argument("--check", help="compare the current reader with this fingerprint file")
    ap.add_argument("--only", default="", help="substring filter on the file keys")
    args = ap.parse_args(argv)

    import vnnx  # noqa: F401  (compat patches before onnx2torch)
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp:
        files = {**shared_files(), **generated_files(Path(tmp))}
        files = {k: p for k, p in files.items() if args.only in k}
        stored = json.loads(Path(args.check).read_text()) if args.check else None
        views, bad = {}, 0
        for key, path in tqdm(sorted(files.items()), desc="networks", file=sys.stderr):
            new, _ = view_of(path)
            views[key] = new
            if args.write:
                continue
            if key not in stored:
                print(f"NEW   {key}: not in {args.check}")
                continue
            old = stored[key]
            diffs = differences(old, new)
            bad += bool(diffs)
            status = "DIFF " if diffs else "same "
            kind = "accept" if new["ok"] else "refuse"
            layers = "".join(x["type"][0] for x in new.get("layers", []))
            print(f"{status} {key}: {kind} {layers}" + "".join(f"\n      {d}" for d in diffs))
            if not old["ok"] or not new["ok"]:
                print(f"      recorded: {old.get('error', 'accept')}\n      now:      {new.get('error', 'accept')}")
    if args.write:
        Path(args.write).parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True, separators=(',', ':'))}"
                 for k, v in sorted(views.items())]
        Path(args.write).write_text("{\n" + ",\n".join(lines) + "\n}\n")
        print(f"wrote {len(views)} fingerprints to {args.write}")
        return 0
    print(f"{len(files)} networks, {bad} with differences")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
