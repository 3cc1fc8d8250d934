#!/usr/bin/env bash
# Peak RSS of calibration by depth and calibration-set size (BENCHMARKS.md, "Memory set by a
# budget"): random hidden-512 models (4 heads of 128) of 4 and 12 blocks, 32 and 64 synthetic
# samples of 256 + 32 tokens, for `--plan --prune 0.2 --select output` (ranking with the output
# effect) and a real compile with `--prune 0.2 --st-steps 5`. Prints one row per run.
#
#   scripts/bench-calib-memory.sh [BINARY] [EXTRA FLAGS...]
#
# BINARY defaults to target/release/fastflux-compile (build it with `cargo build --release
# --bin fastflux-compile --example synth_checkpoint`); EXTRA FLAGS go to every run (e.g.
# `--memory-budget 4G`). Scratch goes to target/bench-memory.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/fastflux-compile}
shift || true
dir=target/bench-memory
mkdir -p "$dir"
synth=target/release/examples/synth_checkpoint

model() { # NAME DOUBLE SINGLE
    [ -f "$dir/$1.safetensors" ] || "$synth" --hidden 512 --heads 4 --double "$2" --single "$3" \
        --context 256 --pooled 256 --dtype bf16 -o "$dir/$1.safetensors" >/dev/null
}
model b4 1 3
model b12 4 8

peak() { # LABEL ARGS...: runs the binary, prints LABEL and its peak RSS in MiB
    local label=$1
    shift
    /usr/bin/time -f "%M" -o "$dir/rss" "$bin" "$@" -q >/dev/null
    printf '%-28s %6d MiB\n' "$label" $(($(cat "$dir/rss") / 1024))
}

calib=(--calib-image-tokens 256 --calib-text-tokens 32)
for blocks in 4 12; do
    for samples in 32 64; do
        peak "plan  ${blocks} blocks ${samples} samples" "$dir/b$blocks.safetensors" --plan \
            --prune 0.2 --select output --calib-samples "$samples" "${calib[@]}" "$@"
        peak "st    ${blocks} blocks ${samples} samples" "$dir/b$blocks.safetensors" \
            -o "$dir/out.onnx" --prune 0.2 --st-steps 5 --calib-samples "$samples" \
            "${calib[@]}" "$@"
    done
done
