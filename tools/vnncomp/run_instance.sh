#!/usr/bin/env bash
# VNN-COMP (2022+) run script:  run_instance.sh v1 BENCHMARK ONNX VNNLIB RESULTFILE TIMEOUT
# ONNX is one path, or (VNN-COMP 2026, multi-network VNN-LIB 2.0) the first column of instances.csv,
# "[('f', 'a.onnx'), ('g', 'b.onnx')]" (docs/vnnlib.md).
# Writes the verdict (and a counterexample after sat) to RESULTFILE. vnnx counts TIMEOUT from the
# start of its own process (loading included), so no separate start-up allowance is taken off.
# A hard stop one second after TIMEOUT (SIGINT, then SIGKILL a second later) guarantees that the
# script returns within TIMEOUT + 2 s even if a solver ignores its limit; the result is then
# "timeout".
set -u
if [ "$#" -ne 6 ] || [ "$1" != "v1" ]; then
    echo "usage: $0 v1 BENCHMARK ONNX VNNLIB RESULTFILE TIMEOUT" >&2
    exit 1
fi
bench="$2"; onnx="$3"; vnnlib="$4"; result="$5"; limit="$6"
# TIMEOUT is data, never code: a plain positive decimal number, checked here in the shell.
if ! [[ "$limit" =~ ^[0-9]+([.][0-9]+)?$ ]] || [[ "$limit" =~ ^0+([.]0+)?$ ]]; then
    echo "run_instance.sh: TIMEOUT must be a positive number of seconds, got '$limit'" >&2
    exit 1
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
vnnx="${VNNX_BIN:-$root/.venv/bin/vnnx}"
whole="${limit%%.*}"
[ "$whole" != "$limit" ] && whole=$((10#$whole + 1))   # ceil for fractional TIMEOUT
hard=$((10#$whole + 1))
rm -f "$result"
timeout --signal=INT --kill-after=1 "$hard" "$vnnx" verify --onnx "$onnx" --vnnlib "$vnnlib" \
    --benchmark "$bench" --timeout "$limit" --result-file "$result"
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
