#!/usr/bin/env bash
# Installs the CUDA toolkit that `cargo build --features cuda` needs into .cuda/ (ignored), from
# PyPI wheels, and prints the environment for the build:
#
#   eval "$(scripts/cuda-toolkit.sh)" && cargo build --release --features cuda
#
# Why wheels: Debian's main archive has no CUDA toolkit, and nothing here needs a GPU to build:
# candle's kernels are compiled by nvcc (to PTX, plus one static library of machine code), and the
# CUDA libraries are only linked against. Idempotent: does nothing but print the environment once
# .cuda/.ready-v1 exists; bump the stamp name when the pins change.
#
# Why these versions: everything is pinned to CUDA 13.0 (the newest 13.0 wheels), the CUDA of the
# R580 driver on the GPU machines the builds are for (H100, H200). A driver loads PTX of its own
# CUDA version or older only (13.0's nvcc writes PTX ISA 9.0), so PTX from a newer nvcc (13.5 is
# PyPI's newest) would fail to load there; and cudarc 0.19.10, which candle-core 0.11.1 uses with
# `cuda-version-from-build-system`, reads its CUDA version off `nvcc --version` (13.0 selects its
# `cuda-13000` bindings) and knows versions up to 13.4 only: its build script panics on 13.5.
#
# Why the shims (all inside the ignored prefix, nothing outside it changes):
# - The wheels ship the libraries by soname only (libcublas.so.13); the linker's `-lcublas` wants
#   libcublas.so, so each gets an unversioned symbolic link.
# - cudarc links the driver library (`-lcuda`), which comes with the NVIDIA driver, not the
#   toolkit or any wheel. lib/stubs/libcuda.so is a stand-in built here with every driver function
#   cudarc binds, each answering CUDA_ERROR_NO_DEVICE: enough to link, and a binary started with
#   it on LD_LIBRARY_PATH runs its CPU paths. It is never carried to a GPU machine: the binary
#   asks for libcuda.so.1 by soname and gets the real driver there.
# - The wheels lay nvcc, cicc (nvvm/bin), the headers and the libraries out under one folder,
#   nvidia/cu13/, as nvcc.profile expects: no links are needed for nvcc to find them.
#
# Environment printed: CUDA_HOME and CUDA_PATH (cudarc and candle's kernel builder look there for
# nvcc and the libraries), PATH (nvcc first, so cudarc reads its version), CUDA_COMPUTE_CAP
# (candle's kernels are built for one architecture, normally read off nvidia-smi, which a machine
# without a GPU lacks; 90 builds sm_90a, the H100 and H200; override by setting it before),
# LD_LIBRARY_PATH (the CUDA libraries, and the stand-in driver where no driver is installed, to
# run a cuda build here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PREFIX=.cuda
STAMP=$PREFIX/.ready-v1
PYTHON=${PYTHON:-python3}
# CUDA 13.0's components. The libraries are only linked against here: at run time the binaries
# load the GPU machine's own libcublas.so.13, libcurand.so.10, libcudart.so.13 by soname.
WHEELS=(
    nvidia-cuda-nvcc==13.0.88    # nvcc, ptxas, fatbinary, nvlink
    nvidia-nvvm==13.0.88         # cicc, libdevice
    nvidia-cuda-crt==13.0.88     # crt/ headers
    nvidia-cuda-runtime==13.0.96 # cuda_runtime.h, libcudart
    nvidia-cuda-cccl==13.0.85    # cub, thrust, libcu++ headers
    nvidia-cublas==13.1.0.3
    nvidia-curand==10.4.0.35
    nvidia-cuda-nvrtc==13.0.88
)

if [[ ! -f $STAMP ]]; then
    echo "cuda-toolkit.sh: installing ${#WHEELS[@]} CUDA 13.0 wheels into $PREFIX (about 1.2 GB)" >&2
    rm -rf "$PREFIX"
    if "$PYTHON" -m venv "$PREFIX/venv" >/dev/null 2>&1; then
        PIP=("$PREFIX/venv/bin/python" -m pip)
    else # Debian-style pythons can lack ensurepip (as in scripts/setup.sh)
        rm -rf "$PREFIX/venv"
        "$PYTHON" -m venv --without-pip "$PREFIX/venv"
        PIP=("$PYTHON" -m pip --python "$PREFIX/venv/bin/python")
    fi
    "${PIP[@]}" install --quiet --disable-pip-version-check --root-user-action=ignore \
        --no-deps --only-binary=:all: "${WHEELS[@]}" >&2
    site=$("$PREFIX/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # A stable name for the toolkit's root, whatever the python version in the path.
    ln -sfn "$(realpath --relative-to="$PREFIX" "$site/nvidia/cu13")" "$PREFIX/home"
    lib=$PREFIX/home/lib
    for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
        [[ -f $lib/$so ]] || { echo "cuda-toolkit.sh: $lib/$so missing after install" >&2; exit 1; }
        ln -sfn "$so" "$lib/${so%.so.*}.so"
    done

    # The stand-in driver: the function names from cudarc's own bindings, so it covers exactly
    # what a cuda build can ask for.
    cudarc=$(cargo metadata --format-version 1 --features cuda |
        "$PYTHON" -c 'import json, sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "cudarc"))')
    mkdir -p "$lib/stubs"
    {
        echo '/* Stand-in for the NVIDIA driver library, to link against; made by scripts/cuda-toolkit.sh. */'
        echo 'static const char *const msg = "no CUDA driver: this is the link-time stand-in for libcuda";'
        echo 'int cuGetErrorString(int e, const char **s) { (void)e; *s = msg; return 0; }'
        echo 'int cuGetErrorName(int e, const char **s) { (void)e; *s = "CUDA_ERROR_NO_DEVICE"; return 0; }'
        grep -oE '^pub unsafe fn cu[A-Za-z0-9_]+' "$(dirname "$cudarc")/src/driver/sys/mod.rs" |
            sed 's/^pub unsafe fn //' | grep -vxE 'cuGetErrorString|cuGetErrorName' | sort -u |
            sed 's/.*/int &(void) { return 100; } \/* CUDA_ERROR_NO_DEVICE *\//'
    } >"$lib/stubs/libcuda.c"
    cc -shared -fPIC -o "$lib/stubs/libcuda.so" "$lib/stubs/libcuda.c" -Wl,-soname,libcuda.so.1
    ln -sfn libcuda.so "$lib/stubs/libcuda.so.1"

    "$PREFIX/home/bin/nvcc" --version | grep -q 'release 13.0,' ||
        { echo "cuda-toolkit.sh: nvcc is not CUDA 13.0" >&2; exit 1; }
    touch "$STAMP"
    echo "cuda-toolkit.sh: CUDA 13.0 toolkit ready in $PREFIX/home" >&2
fi

home=$PWD/$PREFIX/home
# The stand-in driver only where there is no real one: it would shadow the driver otherwise.
stubs=
ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 ' || stubs=:$home/lib/stubs
cat <<EOF
export CUDA_HOME=$home
export CUDA_PATH=$home
export PATH=$home/bin:\$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LD_LIBRARY_PATH=$home/lib$stubs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
EOF
