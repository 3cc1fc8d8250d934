#!/usr/bin/env bash
# Step time of sandwich training on a GPU (candle's `cuda` feature): one sandwich
# (single_blocks.0 [single_blocks.1] single_blocks.2) of a FLUX.1-dev-width model of reduced depth
# (hidden 3072, 24 heads of 128, 1 double + 3 single blocks, random bf16 weights) at 4096 image +
# 512 text tokens, batch 1; the same run with 0 steps beside it, so the difference is the training.
#
# usage (repository root, on a machine with an NVIDIA GPU):  scripts/gpu-st-step.sh [OUT_DIR]
#
# Carry (a GPU machine without network): run scripts/gpu-pack.sh here first; it makes
# target/gpu-carry/01 .. 04: 4 folders of at most 56 MiB, 211 MiB in all, when it was written
# (it prints the count). Carry one folder per call, each running `scripts/gpu-unpack.sh`, on one
# machine that keeps /tmp between the calls; then run this script in the call that carries the last
# folder (`scripts/gpu-unpack.sh && scripts/gpu-st-step.sh`; unpacking takes well under a
# minute): 4 calls in all.
#
# - Binaries: the carried ones ($FASTFLUX_BIN, from /tmp/fastflux-gpu/env.sh that
#   gpu-unpack.sh writes), else target/release/fastflux-compile and
#   target/release/examples/synth_checkpoint when present and built with `--features cuda`,
#   else `cargo build --release --features cuda` here (needs the CUDA toolkit: see
#   scripts/cuda-toolkit.sh).
# - ONNX Runtime walks the activations: the carried onnxruntime-gpu library (ORT_DYLIB_PATH;
#   `auto` puts it on the CUDA execution provider), else the CPU library from scripts/setup.sh;
#   candle trains on GPU 0 (`--execution-provider auto` picks it when the build has CUDA).
# - Never run yet: no GPU was lent to the task that wrote it. Sized for one 10-minute call.
# Writes $OUT_DIR/gpu-st-step.txt (the two summaries) and log.txt.
set -euo pipefail
out=${1:-${OUT:-/tmp/gpu-st-step}}
work=${WORK:-/tmp/gpu-st-step-work}
steps=${STEPS:-20}
mkdir -p "$out" "$work"
exec > >(tee "$out/log.txt") 2>&1
step() { echo "== $(date +%T) $*"; }

step binaries
carried=${FASTFLUX_GPU:-/tmp/fastflux-gpu}
if [[ -f $carried/env.sh ]]; then
  # shellcheck disable=SC1091
  source "$carried/env.sh"
fi
if [[ -n ${FASTFLUX_BIN:-} ]]; then
  compile=$FASTFLUX_BIN/fastflux-compile
  synth=$FASTFLUX_BIN/synth_checkpoint
  head -n4 "$carried/BUILD-INFO" || true
else
  compile=target/release/fastflux-compile
  synth=target/release/examples/synth_checkpoint
  if [[ ! -x $compile || ! -x $synth ]]; then
    cargo build --release --features cuda --bin fastflux-compile --example synth_checkpoint
  fi
fi
[[ -n ${ORT_DYLIB_PATH:-} || -f .venv/.ready-v1 ]] || bash scripts/setup.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

step "checkpoint: hidden 3072, 24 heads, 1 double + 3 single blocks, bf16"
"$synth" --hidden 3072 --heads 24 --double 1 --single 3 --dtype bf16 -o "$work/wide.safetensors"
calib=(--calib-samples 2 --calib-image-tokens 4096 --calib-text-tokens 512 --calib-batch 1)
for n in 0 "$steps"; do
  step "--replace single.1 --st-steps $n"
  /usr/bin/time -v "$compile" "$work/wide.safetensors" -o "$work/st$n.onnx" --replace single.1 \
    "${calib[@]}" --st-steps "$n" --st-batch 1 --execution-provider auto 2> "$work/time$n.txt" \
    | tee -a "$out/gpu-st-step.txt"
  grep -E "Elapsed|Maximum resident" "$work/time$n.txt" | tee -a "$out/gpu-st-step.txt"
done
step done
