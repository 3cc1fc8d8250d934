//! f16 exports stay finite where FLUX.1's weights overflow f16 (a single block's output, a
//! double block's text stream after its feed-forward residual): tiny-dev with those branches
//! scaled up overflows f16 there without the clamp, and the export clamps it as diffusers does.
//! f32 and bf16 exports have no Clip (bf16 has no CUDA kernel for it).

mod support;

use fastflux::compile::{CompileOptions, lift_checkpoint};
use fastflux::dtype::DType;
use fastflux::onnx::{ExportOptions, Target, export};
use std::path::{Path, PathBuf};
use support::*;

/// How much the scaled branches are multiplied by: enough that their residual adds pass 65504
/// in f32 (checked below: the unclamped f16 export goes non-finite), not so much that the
/// branch's own weights leave f16's range.
const SCALE: f32 = 30000.0;

/// tiny-dev (BFL naming) with every single block's `linear2` and every double block's
/// `txt_mlp.2` scaled by `SCALE`.
fn overflowing_checkpoint(dir: &Path) -> PathBuf {
    let mut tensors = read_tensors(&golden("flux-bfl.safetensors"));
    let mut scaled = 0;
    for t in &mut tensors {
        let branch = (t.name.starts_with("single_blocks.") && t.name.contains(".linear2."))
            || (t.name.starts_with("double_blocks.") && t.name.contains(".txt_mlp.2."));
        if branch {
            let values: Vec<f32> = t.f32_values().iter().map(|v| v * SCALE).collect();
            *t = StoredTensor::from_f32(&t.name, t.shape.clone(), &values);
            scaled += 1;
        }
    }
    assert_eq!(
        scaled,
        2 * (4 + 2),
        "weight and bias of 4 single and 2 double blocks"
    );
    let path = dir.join("overflowing.safetensors");
    write_tensors(&path, &tensors);
    path
}

fn compile_dtype(ckpt: &Path, dir: &Path, dtype: &str) -> PathBuf {
    let out = dir.join(format!("{dtype}.onnx"));
    compile_ok(&[
        ckpt.to_str().unwrap(),
        "--axes-dim",
        "4,6,6",
        "-o",
        out.to_str().unwrap(),
        "--dtype",
        dtype,
        "-q",
    ]);
    out
}

/// The op types of a model's nodes, one per line.
fn op_types(model: &Path) -> String {
    let (ok, text) = python_run(
        "import sys, onnx\nm = onnx.load(sys.argv[1], load_external_data=False)\nprint('\\n'.join(n.op_type for n in m.graph.node))",
        &[model],
    );
    assert!(ok, "{text}");
    text
}

fn count_non_finite(values: &[f32]) -> usize {
    values.iter().filter(|v| !v.is_finite()).count()
}

#[test]
fn f16_export_clamps_where_the_residual_stream_overflows() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = overflowing_checkpoint(dir.path());

    // Without the clamps (the graph exported as lifted), f16 overflows on this checkpoint.
    let mut options = CompileOptions::new(&ckpt);
    options.dtype = Some(DType::F16);
    options.axes_dim = Some(vec![4, 6, 6]);
    let compiled = lift_checkpoint(&options).unwrap();
    let unclamped = dir.path().join("unclamped.onnx");
    let export_options = ExportOptions {
        target: Target::Cuda,
        show_progress: false,
        metadata: vec![],
        beside: vec![],
    };
    export(&compiled.graph, &compiled.ckpt, &unclamped, &export_options).unwrap();
    let overflowed = count_non_finite(&run_golden(&unclamped));
    assert!(
        overflowed > 0,
        "the scaled checkpoint does not overflow f16"
    );

    let f16 = compile_dtype(&ckpt, dir.path(), "f16");
    let latent = run_golden(&f16);
    assert_eq!(
        count_non_finite(&latent),
        0,
        "the f16 export is not finite ({overflowed} values of the unclamped one were not)"
    );
    let ops = op_types(&f16);
    let clips = ops.lines().filter(|op| *op == "Clip").count();
    assert_eq!(
        clips,
        4 + 2,
        "one Clip per single block and per double block: {ops}"
    );

    // (bf16 is not run: ONNX Runtime's CPU EP has no bf16 FusedMatMul.)
    for dtype in ["f32", "bf16"] {
        let model = compile_dtype(&ckpt, dir.path(), dtype);
        assert!(
            !op_types(&model).lines().any(|op| op == "Clip"),
            "{dtype} export has a Clip"
        );
    }
}
