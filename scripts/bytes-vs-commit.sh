#!/usr/bin/env bash
# Compiles the same inputs with two fastflux-compile binaries and says, run by run, whether the
# outputs (the .onnx and its data file) are byte-identical. For changes that must not move the
# numbers of runs whose algorithm did not change (`--replace`, `--select local`):
#
#   git worktree add /tmp/base <old commit> && (cd /tmp/base && cargo build --release --bin fastflux-compile)
#   scripts/bytes-vs-commit.sh /tmp/base/target/release/fastflux-compile target/release/fastflux-compile
#
# Inputs: the shipped mini model and the trained toy in ../shared/toy/digits. Exits non-zero when
# any pair differs or either binary fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OLD=$(realpath "$1")
NEW=$(realpath "$2")
# The old binary looks for ONNX Runtime beside its own checkout; point both at this one's.
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(ls "$PWD"/.venv/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1)}
export ORT_DYLIB_PATH
MINI=$PWD/fixtures/flux-mini-dev.safetensors
TOY=$(realpath ../shared/toy/digits)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

runs=(
  "$MINI --replace single.0 --dtype f32"
  "$MINI --replace double.0,single.1"
  "$MINI --prune 0.2 --select local"
  "$MINI --prune 0.4 --select local --calib-batch 3 --dtype f32"
  "$TOY/flux-bfl.safetensors --axes-dim 4,6,6 --dtype f32 --replace single.4,single.5 --calib $TOY/calib.safetensors"
  "$TOY/flux-bfl.safetensors --axes-dim 4,6,6 --dtype f32 --prune 0.2 --select local"
)
differing=0
for i in "${!runs[@]}"; do
  for side in old new; do
    bin=$NEW; [ "$side" = old ] && bin=$OLD
    mkdir -p "$WORK/$i-$side"
    # shellcheck disable=SC2086  # each run is a list of arguments
    "$bin" ${runs[$i]} -o "$WORK/$i-$side/m.onnx" -q >"$WORK/$i-$side.log" 2>&1 ||
      { echo "failed ($side): ${runs[$i]}"; cat "$WORK/$i-$side.log"; exit 1; }
  done
  if diff -rq "$WORK/$i-old" "$WORK/$i-new" >/dev/null; then verdict=identical; else verdict=DIFFERENT; differing=1; fi
  echo "$verdict: ${runs[$i]/$PWD\//}"
done
exit $differing
