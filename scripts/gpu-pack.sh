#!/usr/bin/env bash
# Builds here everything the GPU scripts (scripts/gpu-*.sh) need on a GPU machine that has no
# network, and cuts it into pieces that can be carried there one call at a time, when each call
# to that machine may bring along at most 64 MiB (the repository's tracked files included).
#
# usage (repository root):  scripts/gpu-pack.sh
# then, on the GPU machine, one call per folder target/gpu-carry/NN, each carrying that folder
# and running `scripts/gpu-unpack.sh`; the call that completes the set checks the sums,
# reassembles and unpacks into /tmp/fastflux-gpu, and the GPU scripts pick it up from there.
#
# What the bundle holds, and why:
# - bin/: fastflux-compile, fastflux-sample and the synth_checkpoint example, release builds with
#   the `cuda` feature (candle trains on the GPU) and no debug info (`--config
#   profile.release.debug=false`, then `strip`): the GPU machine has no Rust toolchain or crates.
#   They link the NVIDIA driver and CUDA 13's cuBLAS, cuRAND, NVRTC and runtime by soname; the
#   GPU machine has those (the driver, and PyTorch's CUDA 13 wheels), so they are not carried.
# - python/onnxruntime/: the `onnxruntime` package of onnxruntime-gpu 1.31.1 for python $PYVER
#   (3.12 by default, the GPU machine's python3). Its capi/ holds libonnxruntime.so.1.31.1 and
#   the CUDA execution provider (libonnxruntime_providers_cuda.so, 284 MB, and
#   libonnxruntime_providers_shared.so), which fastflux loads through ORT_DYLIB_PATH; the python
#   module is what scripts/gpu-bench-lowering.sh times with. TensorRT's provider is left out.
# - BUILD-INFO: the commit, the toolkit and the versions.
# Everything is one xz-compressed tar, split into pieces of $PIECE_MIB MiB (default 56: 64 MiB
# per call less the repository's tracked files, about 4 MiB, and a margin for its growth),
# one piece per folder target/gpu-carry/NN (one folder per call), each with a copy of MANIFEST:
# the bundle's and every piece's sha256 and size.
#
# Costs: the CUDA toolkit wheels (scripts/cuda-toolkit.sh, once, 1.2 GB), the onnxruntime-gpu
# wheel (250 MB, kept in target/gpu-pack/wheels), one release build with the `cuda` feature
# (debug info off makes it a build of its own beside `cargo build --release --features cuda`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PIECE_MIB=${PIECE_MIB:-56}
PYVER=${PYVER:-3.12}
ORT_VERSION=1.31.1
CALL_MIB=64 # what one call may carry, the repository's files included
work=target/gpu-pack
carry=target/gpu-carry
step() { echo "== $(date +%T) $*" >&2; }

step "CUDA toolkit"
eval "$(scripts/cuda-toolkit.sh)"

step "cargo build --release --features cuda (no debug info)"
cargo build --release --features cuda --config profile.release.debug=false \
    --bin fastflux-compile --bin fastflux-sample --example synth_checkpoint

step "staging"
rm -rf "$work/stage" "$work/bundle.tar.xz"
mkdir -p "$work/stage/bin" "$work/stage/python" "$work/wheels"
for b in target/release/fastflux-compile target/release/fastflux-sample \
    target/release/examples/synth_checkpoint; do
    strip -o "$work/stage/bin/$(basename "$b")" "$b"
done

wheel_glob="onnxruntime_gpu-$ORT_VERSION-cp${PYVER/./}-*.whl"
if ! compgen -G "$work/wheels/$wheel_glob" >/dev/null; then
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version "$PYVER" --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$work/wheels" "onnxruntime-gpu==$ORT_VERSION"
fi
wheel=$(compgen -G "$work/wheels/$wheel_glob" | head -n1)
python3 - "$wheel" "$work/stage/python" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(("onnxruntime/", "onnxruntime_gpu-"))
             and not n.endswith("libonnxruntime_providers_tensorrt.so")]
    z.extractall(dest, names)
PY
capi=$work/stage/python/onnxruntime/capi
for so in "libonnxruntime.so.$ORT_VERSION" libonnxruntime_providers_cuda.so \
    libonnxruntime_providers_shared.so; do
    [[ -f $capi/$so ]] || { echo "gpu-pack.sh: $so is not in $wheel" >&2; exit 1; }
done

{
    echo "commit: $(git describe --always --dirty)"
    echo "built: $(date -u +%FT%TZ) on $(uname -m)"
    echo "cargo build --release --features cuda --config profile.release.debug=false, CUDA_COMPUTE_CAP=$CUDA_COMPUTE_CAP"
    nvcc --version | tail -n2 | head -n1
    echo "onnxruntime-gpu $ORT_VERSION: $(basename "$wheel")"
    (cd "$work/stage" && find bin python/onnxruntime/capi -type f -name '*.so*' -o -path 'bin/*' |
        sort | xargs sha256sum)
} >"$work/stage/BUILD-INFO"

step "compressing"
bundle=fastflux-gpu.tar.xz
tar -C "$work/stage" -cf - . | xz -T0 -6 >"$work/$bundle"

step "splitting into $PIECE_MIB MiB pieces"
rm -rf "$carry"
mkdir -p "$carry"
split -b "${PIECE_MIB}M" -d -a 3 "$work/$bundle" "$work/$bundle."
manifest=$work/MANIFEST
{
    echo "# fastflux GPU bundle, $(git describe --always --dirty); reassembled by scripts/gpu-unpack.sh"
    echo "bundle $bundle $(sha256sum <"$work/$bundle" | cut -d' ' -f1) $(stat -c %s "$work/$bundle")"
} >"$manifest"
n=0
for piece in "$work/$bundle".[0-9][0-9][0-9]; do
    n=$((n + 1))
    dir=$(printf '%02d' "$n")
    mkdir -p "$carry/$dir"
    mv "$piece" "$carry/$dir/"
    name=$(basename "$piece")
    echo "piece $dir $name $(sha256sum <"$carry/$dir/$name" | cut -d' ' -f1) $(stat -c %s "$carry/$dir/$name")" >>"$manifest"
done
for dir in "$carry"/*/; do cp "$manifest" "$dir"; done
rm "$work/$bundle"

# Each call carries one folder and the repository's tracked files: check they fit.
tree=$(git ls-files -z | du -cb --files0-from=- | tail -n1 | cut -f1)
for dir in "$carry"/*/; do
    size=$(du -cb "$dir" | tail -n1 | cut -f1)
    if ((size + tree > CALL_MIB * 1024 * 1024)); then
        echo "gpu-pack.sh: $dir ($size bytes) and the tracked files ($tree bytes) exceed $CALL_MIB MiB; lower PIECE_MIB" >&2
        exit 1
    fi
done
step "done"
cat "$work/stage/BUILD-INFO" >&2
echo "gpu-pack.sh: $n folders in $carry, one call each (the tracked files are $((tree / 1024)) KiB):" >&2
for dir in "$carry"/*/; do
    echo "  carry ${dir%/}, run scripts/gpu-unpack.sh   ($(du -sh "$dir" | cut -f1))" >&2
done
