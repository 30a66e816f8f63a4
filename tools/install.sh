#!/usr/bin/env bash
# Idempotent installer for vnnx. Creates ./.venv (or $VNNX_VENV) and installs, in order:
#   1. torch 2.13.0 (the local CPU wheel; pinned in tools/constraints.txt, not in setup.cfg);
#   2. auto-LiRPA 0.3 and onnx2torch with --no-deps: auto-LiRPA's metadata pins torch<1.13 and
#      both ask for torchvision, which has no CPU build that loads against torch 2.13 here;
#   3. vnnx itself (editable) with its declared dependencies and the test extra.
# A stamp records the hash of the inputs; re-running with nothing changed returns at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VNNX_VENV:-$root/.venv}"
py="${PYTHON:-python3}"
cons="$root/tools/constraints.txt"
stamp="$venv/.vnnx-install-stamp"
want="$(cat "$cons" "$root/setup.cfg" "$root/tools/install.sh" | sha256sum | cut -d' ' -f1)"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c "import vnnx" 2>/dev/null; then
    exit 0
fi
echo "[vnnx install] setting up $venv (first time: a few minutes)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"

pipq() {
    # pip's notes about local index folders it skips, and about the two --no-deps packages'
    # unmet metadata (expected, see above), are noise here; real errors still show and fail.
    "$venv/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(
        grep -v -e "is ignored: it is neither" -e "^auto-lirpa 0.3 requires" -e "^onnx2torch .* requires" \
                -e "dependency resolver does not currently take into account" -e "dependency conflicts" >&2)
}
pipq install -c "$cons" "torch==2.13.0"
pipq install -c "$cons" --no-deps "auto-LiRPA==0.3" "onnx2torch==1.5.15"
pipq install -c "$cons" -e "$root[test]"
"$venv/bin/python" -W ignore -c "import vnnx, onnx2torch; from vnnx._compat import import_auto_lirpa; import_auto_lirpa()"
echo "$want" > "$stamp"
echo "[vnnx install] done: $venv" >&2
