#!/usr/bin/env bash
# VNN-COMP (2022+) run script:  run_instance.sh v1 BENCHMARK ONNX VNNLIB RESULTFILE TIMEOUT
# Writes the verdict (and a counterexample after sat) to RESULTFILE. vnnx gets TIMEOUT minus a
# start-up allowance as its own deadline; a hard stop a few seconds after TIMEOUT guarantees the
# script returns in time even if a solver ignores its limit, and then the result is "timeout".
set -u
if [ "$#" -ne 6 ] || [ "$1" != "v1" ]; then
    echo "usage: $0 v1 BENCHMARK ONNX VNNLIB RESULTFILE TIMEOUT" >&2
    exit 1
fi
bench="$2"; onnx="$3"; vnnlib="$4"; result="$5"; limit="$6"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
vnnx="${VNNX_BIN:-$root/.venv/bin/vnnx}"
startup="${VNNX_STARTUP_ALLOWANCE:-3}"
inner=$(python3 -c "print(max(1.0, float('$limit') - float('$startup')))")
hard=$(python3 -c "import math; print(int(math.ceil(float('$limit'))) + 2)")
rm -f "$result"
timeout --signal=INT --kill-after=2 "$hard" "$vnnx" verify --onnx "$onnx" --vnnlib "$vnnlib" \
    --benchmark "$bench" --timeout "$inner" --result-file "$result"
rc=$?
if [ ! -s "$result" ]; then
    # vnnx was stopped before it could write (hard timeout) or failed: say so in the file.
    if [ "$rc" -eq 124 ] || [ "$rc" -eq 130 ] || [ "$rc" -eq 137 ]; then
        echo "timeout" > "$result"
    else
        echo "error" > "$result"
    fi
fi
exit 0
