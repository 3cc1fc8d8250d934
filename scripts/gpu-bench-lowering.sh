#!/usr/bin/env bash
# bf16 latency of one forward pass on ONNX Runtime's CUDA execution provider, the cuda lowering
# against the portable one, on a FLUX.1-dev-width model of reduced depth (hidden 3072, 24 heads of
# 128, MLP 4x, $DOUBLE double + $SINGLE single blocks, random weights) at 4096 image + 512 text
# tokens, batch 1; with the check that the two outputs agree.
#
# usage (repository root, on a machine with an NVIDIA GPU):  scripts/gpu-bench-lowering.sh [OUT_DIR]
#
# Carry (a GPU machine without network): run scripts/gpu-pack.sh here first; it makes
# target/gpu-carry/01 .. 04: 4 folders of at most 56 MiB, 211 MiB in all, when it was written
# (it prints the count). Carry one folder per call, each running `scripts/gpu-unpack.sh`, on one
# machine that keeps /tmp between the calls; then run this script in a call of its own (it is sized for
# a whole 10-minute call): 5 calls in all.
#
# - Binaries: the carried ones ($FASTFLUX_BIN, from /tmp/fastflux-gpu/env.sh that
#   gpu-unpack.sh writes), else target/release/fastflux-compile and
#   target/release/examples/synth_checkpoint when present, else `cargo build --release` here.
# - ONNX Runtime: an onnxruntime-gpu 1.31.1 that python3 imports with the CUDA provider (the
#   carried one, by the PYTHONPATH of that env.sh), else the wheel and the CUDA user-space
#   libraries from PyPI into $WORK/venv (about 2 GB; the same pins as
#   ../shared/tools/cuda-placement/setup.sh).
# - Every node must be placed on CUDA: sessions are created with the CPU fallback disabled.
# - Timing: inputs and outputs bound on the device (IO binding), $WARMUP untimed runs of each
#   model, then $REPEAT rounds that run both, the order alternating; medians and the median of
#   the per-round ratios. Also each model's peak device memory (ONNX Runtime's arena), measured
#   in a process of its own, and, with FLASH_COMPARE=1, the cuda model with flash attention
#   disabled (memory-efficient attention instead).
# - Sized for a 10-minute call on an H200 when the wheels install quickly: about 2.6 GB of
#   checkpoint, two compiles of it, two sessions, 2 x (WARMUP + REPEAT) forward passes.
# Writes $OUT_DIR/gpu-bench-lowering.txt (the table) and the log of each step.
set -euo pipefail
out=${1:-${OUT:-/tmp/gpu-bench-lowering}}
work=${WORK:-/tmp/gpu-bench-lowering-work}
double=${DOUBLE:-2}
single=${SINGLE:-4}
warmup=${WARMUP:-3}
repeat=${REPEAT:-10}
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
    cargo build --release --bin fastflux-compile --example synth_checkpoint
  fi
fi

step onnxruntime-gpu
has_cuda='import onnxruntime as o, sys; sys.exit(0 if o.__version__ == "1.31.1" and "CUDAExecutionProvider" in o.get_available_providers() else 1)'
if python3 -c "$has_cuda" 2>/dev/null; then
  py=python3
else
  if [[ ! -x $work/venv/bin/python ]]; then
    python3 -m venv "$work/venv"
    "$work/venv/bin/pip" install -q "onnxruntime-gpu==1.31.1" numpy \
      "nvidia-cuda-runtime~=13.0" "nvidia-cublas~=13.0" "nvidia-curand~=10.0" "nvidia-cufft~=12.0" \
      "nvidia-cudnn-cu13~=9.0"
  fi
  py=$work/venv/bin/python
  site=$("$py" -c 'import site; print(site.getsitepackages()[0])')
  for d in $(find "$site/nvidia" -type d -name lib 2>/dev/null); do
    LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  done
  export LD_LIBRARY_PATH
fi
"$py" -c "$has_cuda" || { echo "onnxruntime-gpu 1.31.1 with the CUDA provider is not importable"; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

step "checkpoint: hidden 3072, 24 heads, $double double + $single single blocks, bf16"
"$synth" --hidden 3072 --heads 24 --double "$double" --single "$single" --dtype bf16 \
  -o "$work/flux-dev-width.safetensors"
for target in cuda portable; do
  step "compile --target $target --dtype bf16"
  "$compile" "$work/flux-dev-width.safetensors" -o "$work/$target.onnx" --dtype bf16 --target "$target"
done
rm -f "$work/flux-dev-width.safetensors"

cat > "$work/bench.py" <<'EOF'
import os, sys, time, json
import numpy as np
import onnxruntime as ort

work, mode = sys.argv[1], sys.argv[2]
warmup, repeat = int(os.environ.get("WARMUP", 3)), int(os.environ.get("REPEAT", 10))
N, L = 4096, 512

def inputs(sess):
    rng = np.random.default_rng(1)
    side = int(N ** 0.5)
    img_ids = np.zeros((N, 3), np.float32)
    img_ids[:, 1] = np.repeat(np.arange(side), side)
    img_ids[:, 2] = np.tile(np.arange(side), side)
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    feed = {
        "hidden_states": rng.standard_normal((1, N, shapes["hidden_states"][2])).astype(np.float32),
        "encoder_hidden_states": rng.standard_normal((1, L, shapes["encoder_hidden_states"][2])).astype(np.float32),
        "pooled_projections": rng.standard_normal((1, shapes["pooled_projections"][1])).astype(np.float32),
        "timestep": np.array([0.5], np.float32),
        "img_ids": img_ids,
        "txt_ids": np.zeros((L, 3), np.float32),
        "guidance": np.array([3.5], np.float32),
    }
    return {k: v for k, v in feed.items() if k in shapes}

PROVIDERS = [("CUDAExecutionProvider", {"device_id": 0})]

def session(path):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    strict = ort.SessionOptions()
    strict.graph_optimization_level = so.graph_optimization_level
    strict.add_session_config_entry("session.disable_cpu_ep_fallback", "1")  # every node on CUDA
    try:
        return ort.InferenceSession(path, strict, providers=PROVIDERS)
    except Exception as e:  # report, and measure anyway with the fallback allowed
        print(f"WARNING {os.path.basename(path)}: not every node is placed on CUDA: {str(e)[:300]}")
        return ort.InferenceSession(path, so, providers=PROVIDERS + ["CPUExecutionProvider"])

def bound(sess, feed):
    b = sess.io_binding()
    for k, v in feed.items():
        b.bind_ortvalue_input(k, ort.OrtValue.ortvalue_from_numpy(v, "cuda", 0))
    b.bind_output("latent", "cuda", 0)
    return b

def timed(sess, b):
    b.synchronize_inputs()
    t = time.perf_counter()
    sess.run_with_iobinding(b)
    b.synchronize_outputs()
    return (time.perf_counter() - t) * 1e3

if mode == "peak":  # one model per process: its arena's peak
    name = sys.argv[3]
    sess = session(os.path.join(work, name + ".onnx"))
    b = bound(sess, inputs(sess))
    for _ in range(2):
        timed(sess, b)
    stats = {}
    try:
        import ctypes
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        ctypes.CDLL("libcudart.so.13").cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total))
        stats["device_used_mib"] = (total.value - free.value) / 2**20
    except OSError:
        pass
    print(json.dumps({name: stats}))
    sys.exit(0)

names = ["cuda", "portable"]
sessions = {n: session(os.path.join(work, n + ".onnx")) for n in names}
feed = inputs(sessions["cuda"])
binds = {n: bound(sessions[n], feed) for n in names}
for n in names:
    for _ in range(warmup):
        timed(sessions[n], binds[n])
times = {n: [] for n in names}
for r in range(repeat):
    for n in (names if r % 2 == 0 else names[::-1]):
        times[n].append(timed(sessions[n], binds[n]))
out = {n: binds[n].copy_outputs_to_cpu()[0].astype(np.float64) for n in names}
med = {n: float(np.median(times[n])) for n in names}
ratio = float(np.median(np.array(times["cuda"]) / np.array(times["portable"])))
c, p = out["cuda"], out["portable"]
rel = float(np.linalg.norm(c - p) / np.linalg.norm(p))
cos = float((c * p).sum() / np.sqrt((c * c).sum() * (p * p).sum()))
finite = bool(np.isfinite(c).all() and np.isfinite(p).all())
print(f"ONNX Runtime {ort.__version__} CUDA EP, bf16, batch 1, {N} image + {L} text tokens, "
      f"{repeat} interleaved rounds after {warmup} warm-up runs each")
print("| lowering | median (ms) | min (ms) |\n| --- | --- | --- |")
for n in names:
    print(f"| {n} | {med[n]:.2f} | {min(times[n]):.2f} |")
print(f"cuda/portable latency: ratio of medians {med['cuda'] / med['portable']:.3f}, "
      f"median of per-round ratios {ratio:.3f}")
print(f"outputs: relative L2 of cuda vs portable {rel:.3e}, cosine {cos:.6f}, all finite: {finite}")
# bf16 rounding of two differently fused graphs: a few 1e-3 relative; a wrong op is order 1.
ok = finite and rel < 0.05 and cos > 0.998
print("agreement:", "ok" if ok else "FAILED")
sys.exit(0 if ok else 1)
EOF

step "latency, interleaved"
WARMUP=$warmup REPEAT=$repeat "$py" "$work/bench.py" "$work" latency | tee "$out/gpu-bench-lowering.txt"
for target in cuda portable; do
  step "device memory after two runs, $target alone"
  "$py" "$work/bench.py" "$work" peak "$target" | tee -a "$out/gpu-bench-lowering.txt"
done
if [[ ${FLASH_COMPARE:-0} == 1 ]]; then
  step "cuda model, flash attention disabled"
  ORT_DISABLE_FLASH_ATTENTION=1 WARMUP=$warmup REPEAT=$repeat "$py" "$work/bench.py" "$work" latency \
    | sed 's/^/[no flash] /' | tee -a "$out/gpu-bench-lowering.txt"
fi
step done
