#!/usr/bin/env bash
# VNN-COMP (2022+) prepare script:  prepare_instance.sh v1 BENCHMARK ONNX VNNLIB
# ONNX: one path, or the 2026 instances.csv first column (a list of (name, path) pairs).
# Checks that vnnx is installed and that the network and spec load together. It kills no
# processes: vnnx leaves none behind (each run is one process that exits on its deadline).
set -u
if [ "$#" -ne 4 ] || [ "$1" != "v1" ]; then
    echo "usage: $0 v1 BENCHMARK ONNX VNNLIB" >&2
    exit 1
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
vnnx="${VNNX_BIN:-$root/.venv/bin/vnnx}"
[ -x "$vnnx" ] || { echo "vnnx is not installed at $vnnx (run tools/install.sh)" >&2; exit 1; }
# A quick structural check (load + spec sizes) so a broken instance fails here, not at run time.
exec "$vnnx" verify --onnx "$3" --vnnlib "$4" --benchmark "$2" --method check
