"""Train the VeriCompress pair the main job ships (see tools/make_demo.py, part ``vericompress``)."""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build(config: Path, out: Path) -> None:
    import torch

    import vnnx  # noqa: F401  (auto_LiRPA patches)
    from vnnx.io.onnx import export_onnx
    from vnnx_plugins.vericompress.compact import export_compact
    from vnnx_plugins.vericompress.config import load_config
    from vnnx_plugins.vericompress.run import compress, load_data, train_dense

    torch.set_num_threads(1)
    cfg = load_config(config, {"progress": False})
    train_data, _ = load_data(cfg)
    shape = (1,) + tuple(train_data.x.shape[1:])
    out.mkdir(parents=True, exist_ok=True)
    dense, _ = train_dense(cfg, train_data)
    export_onnx(dense, shape, out / "vc_backbone.onnx")
    print(f"wrote {out / 'vc_backbone.onnx'}", flush=True)
    sparsity, _ = compress(cfg, train_data)
    export_compact(sparsity, str(out / "vc_compact.onnx"))
    print(f"wrote {out / 'vc_compact.onnx'}", flush=True)


if __name__ == "__main__":
    build(ROOT / "specs" / "configs" / "vericompress_mnist.yaml", ROOT / "specs" / "mnist_demo")
