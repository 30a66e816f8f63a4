#!/usr/bin/env bash
# The GPU check of issue 20, as one prepared script for a lent GPU machine (about 15 minutes of
# device time per task, start-up included; this run is sized for under 5 minutes):
#   the 30 mnistfc 256x2 instances and ACAS Xu network 1_1 properties 1-4, `vnnx bench --device
#   cuda`, plus the CUDA tests (tests/test_graph.py -k cuda); absolute times and the GPU's name.
#
#   bash tools/gpu_check.sh prepare     # here: copies the instances and fetches the wheels the
#                                       # device image lacks into .gpu/ (git-ignored locally)
#   # then, through the device tool:  run(command="bash tools/gpu_check.sh run", carry=[".gpu"],
#   #                                      timeout_s=420)
#   bash tools/gpu_check.sh run         # there (or here, on the CPU, to try the script: --device auto)
#
# The device image has python3 (3.12) with torch, onnx, onnxruntime, scipy and numpy; it lacks
# onnx2torch, highspy, auto_LiRPA, dask and friends, which travel as wheels. Timeouts are scaled
# by SCALE (default 0.5: mnistfc 60 s, ACAS Xu 58 s at most per instance) so that a stalled
# instance cannot take the run past its limit. Untested on a real GPU so far (no task of this
# project has been lent one yet): results go to docs/benchmarks.md when one is.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-}
SHARED=${SHARED:-../shared/benchmarks}
SCALE=${SCALE:-0.5}
PY=${PY:-python3}          # a local trial: PY=.venv/bin/python SKIP_INSTALL=1 bash tools/gpu_check.sh run

prepare() {
    mkdir -p .gpu/bench/mnistfc .gpu/bench/acasxu .gpu/whl
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    : > .gpu/bench/mnistfc.csv
    grep 256x2 "$SHARED/mnistfc/mnistfc_instances.csv" | while IFS=, read -r onnx spec t; do
        cp -n "$SHARED/mnistfc/$onnx" "$SHARED/mnistfc/$spec" .gpu/bench/mnistfc/ 2>/dev/null || true
        echo "mnistfc/$(basename "$onnx"),mnistfc/$(basename "$spec"),$t" >> .gpu/bench/mnistfc.csv
    done
    : > .gpu/bench/acasxu.csv
    for p in 1 2 3 4; do
        line=$(grep "ACASXU_run2a_1_1_batch_2000.onnx,.*prop_$p.vnnlib" "$SHARED/acasxu/acasxu_instances.csv" | head -1)
        IFS=, read -r onnx spec t <<< "$line"
        cp -n "$SHARED/acasxu/$onnx" "$SHARED/acasxu/$spec" .gpu/bench/acasxu/
        echo "acasxu/$(basename "$onnx"),acasxu/$(basename "$spec"),$t" >> .gpu/bench/acasxu.csv
    done
    local pyv=(--python-version 3.12 --implementation cp --only-binary=:all:
               --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    python3 -m pip download -q --no-deps "${pyv[@]}" -d .gpu/whl highspy onnx2torch \
        dask distributed dask-jobqueue cloudpickle partd locket toolz fsspec tblib zict sortedcontainers \
        msgpack tornado appdirs
    python3 -m pip wheel -q --no-deps -w .gpu/whl auto_LiRPA==0.3
    du -sh .gpu
}

run() {
    export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
    if [ -z "${SKIP_INSTALL:-}" ]; then
        $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl
        $PY -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --target /tmp/site .
        export PYTHONPATH=/tmp/site
    fi
    mkdir -p "${OUT:-out/gpu_check}"
    out=$(cd "${OUT:-out/gpu_check}" && pwd)
    $PY - <<'EOF'
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU (CPU run)"
print(f"machine: {platform.node()}, {gpu}, torch {torch.__version__}, Python {platform.python_version()}")
EOF
    timeout 120 $PY -m pytest -q -p no:cacheprovider tests/test_graph.py -k cuda || true
    PYABS=$(command -v "$PY" || true); PYABS=${PYABS:-$PY}; case "$PYABS" in /*) ;; *) PYABS=$PWD/$PYABS ;; esac
    for suite in mnistfc acasxu; do
        start=$(date +%s.%N)
        (cd .gpu/bench && timeout 200 "$PYABS" -m vnnx.cli bench "$suite.csv" --device auto \
            --timeout-scale "$SCALE" --out "$out/$suite.csv") || echo "$suite: bench ended with $?"
        echo "$suite: $($PY -c "print(round($(date +%s.%N) - $start, 1))") s wall"
    done
}

case "$MODE" in
    prepare) prepare ;;
    run) run ;;
    *) echo "usage: bash tools/gpu_check.sh prepare|run" >&2; exit 2 ;;
esac
