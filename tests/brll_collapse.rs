//! BRLL runs collapse at export: a run of replaced blocks becomes one composed linear per
//! stream, and the exported model computes what the uncollapsed IR with the same fits does; in
//! bf16 a lone replaced block keeps its shortcut exact.

mod support;

use fastflux::compile::{CompileOptions, export, fit_brll, lift_checkpoint};
use fastflux::dtype::DType;
use fastflux::fit::brll::{BrllOptions, Selection};
use fastflux::fit::calibrate::{CalibrationOptions, FitKind};
use fastflux::inputs::SyntheticSpec;
use fastflux::ir::BlockId;
use fastflux::metrics::relative_l2;
use fastflux::onnx::{self, ExportOptions, Target};
use std::collections::BTreeSet;
use std::path::Path;
use support::*;

/// Compiles tiny-dev with `--replace replace` (and `extra` flags) and checks the exported model,
/// whose runs of fitted blocks are collapsed, against the staged run of the uncollapsed IR with
/// the same fits. Returns the exported initializer names.
fn collapsed_export_equals_uncollapsed_ir(
    replace: &str,
    blocks: &[BlockId],
    kind: FitKind,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("collapsed.onnx");
    let ckpt_path = golden("diffusers");
    let mut args = vec![
        ckpt_path.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--dtype",
        "f32",
        "--replace",
        replace,
        "-q",
    ];
    if kind == FitKind::Conditioned {
        args.extend(["--fit", "conditioned"]);
    }
    args.extend(CALIBRATION_FLAGS);
    compile_ok(&args);

    let chosen: BTreeSet<_> = blocks.iter().copied().collect();
    let options = CalibrationOptions {
        kind,
        ..calibration(1e-6)
    };
    let staged = staged_fitted_latent(&chosen, &options);
    let exported = run_golden(&out);
    let error = relative_l2(&exported, &staged);
    eprintln!("--replace {replace} ({kind:?}): relative L2 {error:.2e}");
    // Composing reorders f32 sums; a wrong composition (a transposed product, a lost bias)
    // is off by far more than that.
    assert!(
        error < 1e-5,
        "--replace {replace}: collapsed export differs from the uncollapsed IR by {error:.2e}"
    );

    initializer_names(&out)
}

#[test]
fn a_run_of_replaced_double_blocks_exports_as_one_linear_per_stream() {
    let names = collapsed_export_equals_uncollapsed_ir(
        "double.0,double.1",
        &[BlockId::Double(0), BlockId::Double(1)],
        FitKind::Plain,
    );
    for stream in ["img", "txt"] {
        let composed = format!("double_blocks.0-1.brll.{stream}.affine.weight");
        assert!(names.contains(&composed), "{composed} missing: {names}");
    }
    assert!(!names.contains("double_blocks.0.brll"), "{names}");
    assert!(!names.contains("double_blocks.1.brll"), "{names}");
}

#[test]
fn a_run_of_replaced_single_blocks_exports_as_one_linear() {
    let names = collapsed_export_equals_uncollapsed_ir(
        "single.1-3",
        &[BlockId::Single(1), BlockId::Single(2), BlockId::Single(3)],
        FitKind::Plain,
    );
    assert!(
        names.contains("single_blocks.1-3.brll.affine.weight"),
        "{names}"
    );
    for i in 1..=3 {
        assert!(
            !names.contains(&format!("single_blocks.{i}.brll")),
            "{names}"
        );
    }
}

#[test]
fn a_run_of_conditioned_fits_composes_with_its_condition_term() {
    let names = collapsed_export_equals_uncollapsed_ir(
        "single.1-3",
        &[BlockId::Single(1), BlockId::Single(2), BlockId::Single(3)],
        FitKind::Conditioned,
    );
    assert!(
        names.contains("single_blocks.1-3.brll.cond_weight"),
        "{names}"
    );
}

/// Widens every bf16 tensor and type of a model to f32 (exactly: bf16 is the top half of an
/// f32) and saves it with its weights embedded: ONNX Runtime's CPU provider has no bf16
/// kernels for these ops, so this runs the exported bf16 weights with f32 arithmetic.
const WIDEN_BF16: &str = r#"
import sys, numpy as np, onnx
from onnx import TensorProto, numpy_helper
m = onnx.load(sys.argv[1])
BF16, F32 = TensorProto.BFLOAT16, TensorProto.FLOAT
def widen(t):
    if t.data_type != BF16:
        return t
    bits = np.frombuffer(t.raw_data, dtype=np.uint16).astype(np.uint32) << 16
    return numpy_helper.from_array(bits.view(np.float32).reshape(tuple(t.dims)), t.name)
inits = [widen(t) for t in m.graph.initializer]
del m.graph.initializer[:]
m.graph.initializer.extend(inits)
for node in m.graph.node:
    for a in node.attribute:
        if node.op_type == "Cast" and a.name == "to" and a.i == BF16:
            a.i = F32
        if a.type == onnx.AttributeProto.TENSOR:
            a.t.CopyFrom(widen(a.t))
for v in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
    if v.type.tensor_type.elem_type == BF16:
        v.type.tensor_type.elem_type = F32
onnx.save(m, sys.argv[2])
"#;

/// The golden latent of `model` (a bf16 export) run with its weights widened to f32.
fn run_widened(model: &Path) -> Vec<f32> {
    let widened = model.with_extension("f32.onnx");
    let (ok, text) = python_run(WIDEN_BF16, &[model, &widened]);
    assert!(ok, "widening {}: {text}", model.display());
    run_golden(&widened)
}

/// Fits tiny-dev's `replace` blocks on `CALIBRATION_FLAGS`' inputs and exports the model in
/// bf16 twice, collapsed (as the compiler does) and uncollapsed; returns the relative L2
/// difference of their golden latents, both run with the same bf16 weights widened to f32, and
/// the collapsed export's initializer names.
fn bf16_collapsed_against_uncollapsed(replace: &str) -> (f64, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = CompileOptions::new(golden("diffusers"));
    options.dtype = Some(DType::BF16);
    let mut compiled = lift_checkpoint(&options).unwrap();
    let brll = BrllOptions {
        selection: Selection::Replace(replace.into()),
        synthetic: SyntheticSpec {
            samples: 6,
            image_tokens: 64,
            text_tokens: 16,
            seed: 3,
        },
        ..BrllOptions::default()
    };
    fit_brll(&mut compiled, &brll).unwrap();
    let collapsed = dir.path().join("collapsed.onnx");
    export(&compiled, &collapsed, &options).unwrap();
    let uncollapsed = dir.path().join("uncollapsed.onnx");
    let export_options = ExportOptions {
        target: Target::Cuda,
        show_progress: false,
        metadata: vec![],
        beside: vec![],
    };
    onnx::export(
        &compiled.graph,
        &compiled.ckpt,
        &uncollapsed,
        &export_options,
    )
    .unwrap();
    let error = relative_l2(&run_widened(&collapsed), &run_widened(&uncollapsed));
    eprintln!("--replace {replace}, bf16 collapsed against uncollapsed: relative L2 {error:.2e}");
    (error, initializer_names(&collapsed))
}

/// In bf16 the collapsed export keeps the shortcut exact: a lone replaced block computes
/// `x + x Wᵀ + b` as the uncollapsed model does, with no `I + W` whose diagonal `1 + wᵢᵢ`
/// would round in steps of 2⁻⁷.
#[test]
fn a_bf16_export_keeps_the_shortcut_of_a_lone_replaced_block_exact() {
    let (error, names) = bf16_collapsed_against_uncollapsed("double.1,single.2");
    assert!(!names.contains("affine"), "a shortcut was folded: {names}");
    // The same weights and the same products: only f32 summation order could differ. Folding
    // the shortcut into a bf16 `I + W` moved this output by 2.1e-3 (measured).
    assert!(
        error < 1e-6,
        "the bf16 collapsed export differs from the uncollapsed model by {error:.2e}"
    );
}

/// A run composed in f64 is exported as `x + x Wᵀ + b` with `W = (I+W₃)(I+W₂)(I+W₁) − I`
/// rounded to bf16 once, where the uncollapsed model rounds each `Wᵢ`: the two differ by
/// bf16's rounding of the weights (1.7e-3 measured; 2.6e-3 with the identity folded in and
/// rounded too), where a wrong composition (a transposed product, a lost bias) is off by far
/// more.
#[test]
fn a_bf16_run_of_replaced_blocks_composes_without_rounding_the_identity() {
    let (error, names) = bf16_collapsed_against_uncollapsed("single.1-3");
    assert!(
        names.contains("single_blocks.1-3.brll.weight") && !names.contains("affine"),
        "the run is not one fitted node with its shortcut apart: {names}"
    );
    assert!(
        error < 4e-3,
        "the bf16 collapsed run differs from the uncollapsed model by {error:.2e}"
    );
}
