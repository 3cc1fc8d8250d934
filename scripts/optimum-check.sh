#!/usr/bin/env bash
# fastflux's transformer in optimum's ORTFluxPipeline, the real client (scripts/optimum_check.py
# says what is checked). Not part of .ci/run: its venv is 5.7 GB, most of it the CUDA libraries
# that PyPI's torch wheel depends on (and imports) even to run on the CPU; BENCHMARKS.md records
# its runs. Creates .optimum-venv (ignored; once, no pip cache), builds the compiler, runs the
# check in a temporary folder. Exits non-zero when a latent is off by 1e-4 or more.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

VENV=.optimum-venv
STAMP=$VENV/.ready-v1
PACKAGES=("torch==2.15.0" "diffusers==0.39.0" "optimum==2.1.0" "optimum-onnx==0.1.0"
    "onnxruntime==1.31.1" "transformers==4.57.6" "tokenizers==0.22.2")
if [[ ! -f $STAMP ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "${PACKAGES[@]}"
    touch "$STAMP"
fi

cargo build --quiet --bin fastflux-compile
SHARED=${FASTFLUX_SHARED:-../shared}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
"$VENV/bin/python" scripts/optimum_check.py target/debug/fastflux-compile "$SHARED" "$WORK"
