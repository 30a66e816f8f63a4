#!/usr/bin/env bash
# Idempotent installer for vnnx. Creates ./.venv (or uses $VNNX_VENV) and installs, in order:
#   1. torch 2.13.0 (CPU wheel, pinned through tools/constraints.txt);
#   2. auto-LiRPA 0.3 with --no-deps (its metadata pins torch<1.13, which pip cannot resolve);
#   3. vnnx itself (editable) with its declared dependencies, plus the test extra.
# Re-running it is cheap: a stamp file records the hash of the inputs it installed from.
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
echo "[vnnx install] setting up $venv (one-off; a few minutes)" >&2
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install -c "$cons" "torch==2.13.0"
"${pip[@]}" install -c "$cons" --no-deps "auto-LiRPA==0.3" "onnx2torch==1.5.15"
# auto_LiRPA's own runtime imports that --no-deps skipped (packaging, appdirs, tqdm, ...).
"${pip[@]}" install -c "$cons" -e "$root[test]"
echo "$want" > "$stamp"
echo "[vnnx install] done" >&2
