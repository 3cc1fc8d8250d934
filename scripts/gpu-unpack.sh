#!/usr/bin/env bash
# Reassembles, on the GPU machine, what scripts/gpu-pack.sh built and split elsewhere: run it in
# every call that carries one of the folders target/gpu-carry/NN. Each run appends the pieces it
# finds under CARRY_DIR to DEST/pieces (DEST must outlive the calls: /tmp does while the machine
# stays up); the run that completes the set checks every piece's sha256 against MANIFEST,
# joins them, checks the bundle's sha256, and unpacks it into DEST:
#   DEST/bin/         fastflux-compile, fastflux-sample, synth_checkpoint (`cuda` feature)
#   DEST/python/      onnxruntime-gpu 1.31.1's python package, its CUDA provider in capi/
#   DEST/env.sh       FASTFLUX_BIN, ORT_DYLIB_PATH, PYTHONPATH, and LD_LIBRARY_PATH with the
#                     CUDA libraries of python3's nvidia-* wheels (cuBLAS, cuDNN, ...)
#   DEST/BUILD-INFO   the commit and versions it was built from
# The GPU scripts source DEST/env.sh when it exists.
#
# usage (repository root):  scripts/gpu-unpack.sh [CARRY_DIR [DEST]]
#   CARRY_DIR defaults to target/gpu-carry, DEST to $FASTFLUX_GPU or /tmp/fastflux-gpu.
# Exit status: 0 when pieces are still missing (it names the folders to carry next) or the
# bundle is unpacked; 1 when a piece or the bundle fails its sha256 (a failing piece is
# dropped: carry its folder again).
set -euo pipefail
carry=${1:-target/gpu-carry}
dest=${2:-${FASTFLUX_GPU:-/tmp/fastflux-gpu}}
pieces=$dest/pieces

manifest=$(find "$carry" -mindepth 2 -maxdepth 2 -name MANIFEST 2>/dev/null | sort | head -n1)
[[ -n $manifest ]] || { echo "gpu-unpack.sh: no $carry/NN/MANIFEST: carry a folder of target/gpu-carry" >&2; exit 1; }
read -r _ bundle bundle_sha bundle_size < <(grep '^bundle ' "$manifest")

if [[ -f $dest/ready && $(cat "$dest/ready") == "$bundle_sha" ]]; then
    echo "gpu-unpack.sh: $dest already holds this bundle ($bundle_sha)"
    exit 0
fi
# Pieces of an earlier, different pack are of no use.
if [[ -f $pieces/MANIFEST ]] && ! cmp -s "$pieces/MANIFEST" "$manifest"; then
    echo "gpu-unpack.sh: $pieces holds pieces of another pack; starting over"
    rm -rf "$pieces"
fi
mkdir -p "$pieces"
cp "$manifest" "$pieces/MANIFEST"

# This call's pieces (and any earlier call's left in CARRY_DIR) join those already there.
missing=()
total=0
while read -r _ dir name sha size; do
    total=$((total + 1))
    if [[ -f $carry/$dir/$name && ! -f $pieces/$name ]]; then
        cp "$carry/$dir/$name" "$pieces/$name.part" && mv "$pieces/$name.part" "$pieces/$name"
        echo "gpu-unpack.sh: added $dir/$name"
    fi
    [[ -f $pieces/$name ]] || missing+=("$dir")
done < <(grep '^piece ' "$manifest")
if ((${#missing[@]} > 0)); then
    echo "gpu-unpack.sh: $((total - ${#missing[@]})) of $total pieces in $pieces; still to carry: ${missing[*]}"
    exit 0
fi

echo "gpu-unpack.sh: all $total pieces here; checking sha256"
bad=0
while read -r _ dir name sha size; do
    if [[ $(sha256sum <"$pieces/$name" | cut -d' ' -f1) != "$sha" ]]; then
        echo "gpu-unpack.sh: $name (folder $dir) fails its sha256 (expected $sha, $size bytes; has $(stat -c %s "$pieces/$name")); dropped: carry $dir again" >&2
        rm -f "$pieces/$name"
        bad=1
    fi
done < <(grep '^piece ' "$manifest")
((bad == 0)) || exit 1

grep '^piece ' "$manifest" | while read -r _ dir name sha size; do cat "$pieces/$name"; done >"$dest/$bundle"
rm -rf "$pieces"
sum=$(sha256sum <"$dest/$bundle" | cut -d' ' -f1)
if [[ $sum != "$bundle_sha" ]]; then
    echo "gpu-unpack.sh: the joined $bundle fails its sha256 (expected $bundle_sha and $bundle_size bytes, got $sum and $(stat -c %s "$dest/$bundle"))" >&2
    rm -f "$dest/$bundle"
    exit 1
fi
rm -rf "$dest/new" && mkdir -p "$dest/new"
if command -v xz >/dev/null; then
    xz -dc "$dest/$bundle" | tar -C "$dest/new" -xf -
else # python's lzma where the xz tool is missing
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)' \
        "$dest/$bundle" | tar -C "$dest/new" -xf -
fi
rm -f "$dest/$bundle"
rm -rf "${dest:?}/bin" "$dest/python" "$dest/BUILD-INFO"
mv "$dest/new/bin" "$dest/new/python" "$dest/new/BUILD-INFO" "$dest/"
rm -rf "$dest/new"

# The CUDA libraries the binaries and ONNX Runtime's CUDA provider link: python3's nvidia-*
# wheels (PyTorch's) hold them on a machine set up for PyTorch.
libs=
if command -v python3 >/dev/null; then
    for site in $(python3 -c 'import site; print(*site.getsitepackages())' 2>/dev/null); do
        [[ -d $site/nvidia ]] || continue
        for d in $(find "$site/nvidia" -mindepth 2 -maxdepth 3 -type d -name lib | sort); do
            libs=$libs${libs:+:}$d
        done
    done
fi
ort=$(find "$dest/python/onnxruntime/capi" -name 'libonnxruntime.so.*' | head -n1)
{
    echo "# Made by scripts/gpu-unpack.sh: what the GPU scripts need from the carried bundle."
    echo "export FASTFLUX_BIN=$dest/bin"
    echo "export ORT_DYLIB_PATH=$ort"
    echo "export PYTHONPATH=$dest/python\${PYTHONPATH:+:\$PYTHONPATH}"
    [[ -z $libs ]] || echo "export LD_LIBRARY_PATH=$libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
} >"$dest/env.sh"
[[ -n $libs ]] || echo "gpu-unpack.sh: WARNING, python3 has no nvidia-* wheels: the CUDA libraries must be on the loader's path already" >&2
echo "$bundle_sha" >"$dest/ready"
echo "gpu-unpack.sh: unpacked into $dest ($(du -sh "$dest" | cut -f1)); the GPU scripts source $dest/env.sh"
head -n4 "$dest/BUILD-INFO"
# Say now, not at the first kernel, if a library the binaries or the CUDA provider need is
# not to be found (libcuda.so.1 comes with the driver).
unresolved=$(
    # shellcheck disable=SC1091
    source "$dest/env.sh"
    ldd "$dest"/bin/* "$dest/python/onnxruntime/capi/libonnxruntime_providers_cuda.so" 2>/dev/null |
        grep 'not found' | sort -u || true
)
if [[ -n $unresolved ]]; then
    echo "gpu-unpack.sh: WARNING, libraries not found with $dest/env.sh:" >&2
    echo "$unresolved" >&2
fi
