#!/usr/bin/env bash
# Creates .venv holding the pinned ONNX Runtime wheel, whose capi/libonnxruntime.so.1.31.1 is the library
# src/runtime loads (ort's load-dynamic), plus the python tools used to build and check test fixtures.
# Idempotent: does nothing once .venv/.ready-v1 exists; bump the stamp name when the pins change.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

STAMP=.venv/.ready-v1
PYTHON=${PYTHON:-python3}
PACKAGES=("onnxruntime==1.31.1" "onnx==1.23.2" numpy safetensors)

if [[ -f $STAMP ]]; then
    echo "setup.sh: .venv is ready ($STAMP exists)"
    exit 0
fi

# Debian-style pythons can lack ensurepip; then build the venv without pip and drive the system pip at it
# (pip >= 22.3 understands --python).
if "$PYTHON" -m venv .venv >/dev/null 2>&1; then
    PIP=(.venv/bin/python -m pip)
else
    rm -rf .venv
    "$PYTHON" -m venv --without-pip .venv
    PIP=("$PYTHON" -m pip --python .venv/bin/python)
fi
"${PIP[@]}" install --quiet --disable-pip-version-check --root-user-action=ignore "${PACKAGES[@]}"

# Fail here, not later in cargo test, if the wheel did not ship the exact library we load.
.venv/bin/python - <<'PY'
import os, sys, onnx, numpy, safetensors, onnxruntime
lib = os.path.join(os.path.dirname(onnxruntime.__file__), "capi", "libonnxruntime.so.1.31.1")
sys.exit(0 if os.path.isfile(lib) else f"setup.sh: {lib} missing after install")
PY

touch "$STAMP"
echo "setup.sh: created .venv (onnxruntime 1.31.1, onnx 1.23.2, numpy, safetensors)"
