//! BRLL runs collapse at export: a run of replaced blocks becomes one composed linear per
//! stream, and the exported model computes what the uncollapsed IR with the same fits does.

mod support;

use fastflux::fit::calibrate::{CalibrationOptions, FitKind};
use fastflux::ir::BlockId;
use fastflux::metrics::relative_l2;
use std::collections::BTreeSet;
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
