//! The exported files as others see them: the `onnx` checker (full check), ONNX Runtime's CUDA
//! execution provider placement for every export type, the external data layout, and the
//! numbers of an f16 export.

mod support;

use fastflux::metrics::relative_l2;
use std::path::{Path, PathBuf};
use support::*;

fn export_tiny(dir: &Path, dtype: &str, target: &str) -> PathBuf {
    let out = dir.join(format!("tiny-{dtype}-{target}.onnx"));
    let ckpt = golden("diffusers");
    compile_ok(&[
        ckpt.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dtype",
        dtype,
        "--target",
        target,
        "-q",
    ]);
    out
}

const CHECKER: &str =
    "import sys, onnx\nonnx.checker.check_model(sys.argv[1], full_check=True)\nprint('ok')";

#[test]
fn onnx_checker_accepts_every_export_type() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, target) in [
        ("f32", "cuda"),
        ("f16", "cuda"),
        ("bf16", "cuda"),
        ("f32", "portable"),
    ] {
        let model = export_tiny(dir.path(), dtype, target);
        let (ok, text) = python_run(CHECKER, &[&model]);
        assert!(
            ok,
            "onnx.checker rejects the {dtype} {target} export:\n{text}"
        );
    }
}

/// Runs shared/tools/cuda-placement on `model`; fails naming `what` unless every compute node
/// lands on the CUDA execution provider.
fn assert_placed_on_cuda(model: &Path, what: &str) {
    let tool = shared().join("tools/cuda-placement/run.sh");
    let out = std::process::Command::new("bash")
        .arg(&tool)
        .arg(model)
        .output()
        .expect("placement tool runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: nodes off the CUDA execution provider:\n{text}"
    );
    assert!(
        text.contains("every compute node is placed on the CUDA execution provider"),
        "{what}: {text}"
    );
}

/// Every node of the cuda target's exports, in each export type, unpruned and pruned, lands on
/// CUDA: the fused contrib ops (MultiHeadAttention, RotaryEmbedding, BranchwiseRMSNorm,
/// FastGelu, FusedMatMul) included.
#[test]
fn cuda_execution_provider_places_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = golden("diffusers");
    for dtype in ["f32", "f16", "bf16"] {
        let model = export_tiny(dir.path(), dtype, "cuda");
        assert_placed_on_cuda(&model, &format!("{dtype} export"));
        // The fitted nodes of BRLL (conditioned: the widest form) place on CUDA too.
        let pruned = dir.path().join(format!("pruned-{dtype}.onnx"));
        compile_ok(&[
            ckpt.to_str().unwrap(),
            "-o",
            pruned.to_str().unwrap(),
            "--dtype",
            dtype,
            "--replace",
            "double.1,single.2",
            "--fit",
            "conditioned",
            "--calib-samples",
            "2",
            "--calib-image-tokens",
            "16",
            "--calib-text-tokens",
            "8",
            "-q",
        ]);
        assert_placed_on_cuda(&pruned, &format!("{dtype} export with BRLL"));
    }
    // Collapsed runs of plain fits (one fitted node per stream, the shortcut kept apart) in f16,
    // with the f16 clamps, and in bf16.
    for dtype in ["f16", "bf16"] {
        let collapsed = dir.path().join(format!("collapsed-{dtype}.onnx"));
        compile_ok(&[
            ckpt.to_str().unwrap(),
            "-o",
            collapsed.to_str().unwrap(),
            "--dtype",
            dtype,
            "--replace",
            "double.0,double.1,single.1-3",
            "--calib-samples",
            "2",
            "--calib-image-tokens",
            "16",
            "--calib-text-tokens",
            "8",
            "-q",
        ]);
        assert_placed_on_cuda(&collapsed, &format!("collapsed {dtype} export"));
    }
}

#[test]
fn f16_export_matches_diffusers_within_f16_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let model = export_tiny(dir.path(), "f16", "cuda");
    let (_, reference) = golden_io("expected.safetensors");
    let error = relative_l2(&run_golden(&model), &reference);
    // f16 rounds weights and activations to 2⁻¹¹ ≈ 4.9e-4 relative; 7.3e-4 is measured for the
    // fused cuda lowering (6.2e-4 for portable). Four unit roundoffs leave room for accumulation
    // order, and are far below what a wrong op (a swapped half, a missing gate) does to the
    // output (order 1).
    assert!(
        error < 4.0 * 2f64.powi(-11),
        "f16 relative L2 error {error:.3e}"
    );
}

/// Large tensors start on 64 KiB boundaries, the data file holds exactly the weights, and the
/// `.onnx` stays small.
const LAYOUT: &str = r#"
import sys, os, onnx
from onnx.external_data_helper import uses_external_data
path = sys.argv[1]
m = onnx.load(path, load_external_data=False)
ends, external = 0, 0
for t in m.graph.initializer:
    if not uses_external_data(t):
        assert len(t.raw_data) < 4096, f"{t.name} embedded in the .onnx"
        continue
    info = {e.key: e.value for e in t.external_data}
    assert info["location"] == os.path.basename(path) + ".data", info
    offset, length = int(info["offset"]), int(info["length"])
    if length >= 1 << 20:
        assert offset % 65536 == 0, f"{t.name} at {offset}"
    ends = max(ends, offset + length)
    external += 1
assert ends == os.path.getsize(path + ".data"), (ends, os.path.getsize(path + ".data"))
assert os.path.getsize(path) < 1 << 20
print("external", external)
"#;

#[test]
fn external_data_is_aligned_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("wide.safetensors");
    synthetic_checkpoint(&ckpt, &flux_like(512, 1, 1));
    let out = dir.path().join("wide.onnx");
    compile_ok(&[ckpt.to_str().unwrap(), "-o", out.to_str().unwrap(), "-q"]);
    let (ok, text) = python_run(LAYOUT, &[&out]);
    assert!(ok, "{text}");
    // Double block 2 streams × 12, single block 8, embedders 12 (no guidance), final layer 4.
    assert!(text.contains("external 48"), "{text}");
}

#[test]
fn plan_reports_configuration_without_writing() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("wide.safetensors");
    synthetic_checkpoint(&ckpt, &flux_like(256, 2, 3));
    let report = compile_ok(&[ckpt.to_str().unwrap(), "--plan"]);
    for expected in [
        "Black Forest Labs",
        "256 (2 heads of 128)",
        "2 double, 3 single",
        "no (schnell)",
        "[16, 56, 56]",
        "f32 (",
    ] {
        assert!(
            report.contains(expected),
            "--plan misses `{expected}`:\n{report}"
        );
    }
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "--plan wrote files");
}
