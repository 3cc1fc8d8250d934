//! BRLL: the fitted layers are the least-squares solution (checked by an independent solver),
//! a block whose branch is zero fits to exactly zero, `--prune` takes the lowest-error blocks,
//! the rewrite has the expected structure, and the exported pruned model computes what the
//! calibration predicted.

mod support;

use faer::linalg::solvers::SolveLstsq;
use fastflux::checkpoint::FluxCheckpoint;
use fastflux::dtype::DType;
use fastflux::fit::calibrate::{fit_sequentially, rank_blocks};
use fastflux::ir::BlockId;
use fastflux::lift::{LiftOptions, lift};
use fastflux::metrics::relative_l2;
use fastflux::passes::brll::apply_fits;
use fastflux::runtime::staged::StagedRunner;
use std::collections::BTreeSet;
use std::path::Path;
use support::*;

/// The least-squares solution of `[x 1] Θ ≈ y − x` by Householder QR of the stacked design
/// matrix: a different algorithm from the fitter's normal equations and Cholesky.
fn qr_solution(x: &[f32], y: &[f32], width: usize) -> (Vec<f64>, Vec<f64>) {
    let rows = x.len() / width;
    let design = faer::Mat::<f64>::from_fn(rows, width + 1, |i, j| {
        if j < width {
            f64::from(x[i * width + j])
        } else {
            1.0
        }
    });
    let target = faer::Mat::<f64>::from_fn(rows, width, |i, j| {
        f64::from(y[i * width + j]) - f64::from(x[i * width + j])
    });
    let theta = design.qr().solve_lstsq(&target);
    let weight = (0..width * width)
        .map(|k| theta[(k % width, k / width)])
        .collect();
    let bias = (0..width).map(|o| theta[(width, o)]).collect();
    (weight, bias)
}

fn relative_difference(a: &[f32], b: &[f64]) -> f64 {
    relative_l2(a, b)
}

#[test]
fn fitted_layers_equal_an_independent_least_squares_solution() {
    let ckpt = tiny();
    let graph = lift(&ckpt, LiftOptions { dtype: DType::F32 }).unwrap();
    let inputs = inputs(&ckpt);
    let block = BlockId::Single(2);
    let chosen: BTreeSet<_> = [block].into();
    // Ridge 0: the exact normal equations, so both solvers target the same minimizer.
    let reports = fit_sequentially(&graph, &ckpt, &inputs, &chosen, &calibration(0.0)).unwrap();
    let fit = &reports[0].fit.streams[0];

    // Capture the same activations independently: run the stages up to and including the block.
    let runner = StagedRunner::new(&graph, &ckpt, 4, 1);
    let mut env = runner.load_inputs(&inputs.tensors).unwrap();
    let io = &graph.block_io[&block];
    for k in 0..runner.stages().len() {
        runner.run_stage(k, &mut env).unwrap();
        if runner.stages()[k].block == Some(block) {
            break;
        }
    }
    let (x, y) = (&env[&io.streams[0].input], &env[&io.streams[0].output]);
    let width = ckpt.config.hidden;
    let (weight, bias) = qr_solution(&x.data, &y.data, width);
    // 576 rows × 65 unknowns of f32 activations: κ(Z) is O(10²), so Cholesky of ZᵀZ in f64
    // loses about κ² · 2⁻⁵² ≈ 1e-12; storing Θ in f32 adds 6e-8. 1e-6 leaves room for both.
    let (dw, db) = (
        relative_difference(&fit.weight, &weight),
        relative_difference(&fit.bias, &bias),
    );
    assert!(
        dw < 1e-6 && db < 1e-6,
        "weight differs by {dw:.2e}, bias by {db:.2e}"
    );
    // The default ridge moves the solution only slightly (it is relative and tiny).
    let ridged = fit_sequentially(&graph, &ckpt, &inputs, &chosen, &calibration(1e-6)).unwrap();
    let dw = relative_difference(&ridged[0].fit.streams[0].weight, &weight);
    assert!(dw < 1e-3, "the default ridge moves the weight by {dw:.2e}");
}

/// tiny-dev with every gate of `block` zero: its residual branch contributes nothing.
fn zero_gated_checkpoint(dir: &Path, single_block: usize) -> std::path::PathBuf {
    let source = std::fs::read(golden("flux-bfl.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&source).unwrap();
    let hidden = 64;
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        let mut data = view.data().to_vec();
        if name.starts_with(&format!("single_blocks.{single_block}.modulation.lin.")) {
            // Rows 2h..3h (the gate of shift, scale, gate) are zero, weight and bias alike.
            let row_bytes = data.len() / view.shape()[0];
            data[2 * hidden * row_bytes..3 * hidden * row_bytes].fill(0);
        }
        tensors.push((name, view.shape().to_vec(), data));
    }
    let views: Vec<(&str, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.as_str(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d)
                    .unwrap(),
            )
        })
        .collect();
    let path = dir.join("zero-gate.safetensors");
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn a_block_with_zero_gates_fits_to_zero() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt =
        FluxCheckpoint::open(&zero_gated_checkpoint(dir.path(), 1), Some(vec![4, 6, 6])).unwrap();
    let graph = lift(&ckpt, LiftOptions { dtype: DType::F32 }).unwrap();
    let chosen: BTreeSet<_> = [BlockId::Single(1)].into();
    let reports =
        fit_sequentially(&graph, &ckpt, &inputs(&ckpt), &chosen, &calibration(1e-6)).unwrap();
    let fit = &reports[0].fit.streams[0];
    assert!(
        fit.weight.iter().all(|&w| w == 0.0),
        "W is not exactly zero"
    );
    assert!(fit.bias.iter().all(|&b| b == 0.0), "b is not exactly zero");
    assert_eq!(reports[0].fit_error, 0.0);
}

#[test]
fn prune_select_local_replaces_the_lowest_error_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt_path = zero_gated_checkpoint(dir.path(), 3);
    let ckpt = FluxCheckpoint::open(&ckpt_path, Some(vec![4, 6, 6])).unwrap();
    let graph = lift(&ckpt, LiftOptions { dtype: DType::F32 }).unwrap();
    let ranking = rank_blocks(&graph, &ckpt, &inputs(&ckpt), &calibration(1e-6), false).unwrap();
    assert_eq!(ranking.len(), 6);
    assert!(ranking.iter().all(|r| r.output_effect.is_none()));
    let mut by_error = ranking.clone();
    by_error.sort_by(|a, b| a.worst_stream_error().total_cmp(&b.worst_stream_error()));
    assert_eq!(
        by_error[0].block,
        BlockId::Single(3),
        "the zero-gated block fits best"
    );

    // 0.34 of 6 blocks rounds to 2: the two lowest-error blocks of the ranking (worst stream).
    let out = dir.path().join("pruned.onnx");
    let report = compile_ok(
        &[
            ckpt_path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--axes-dim",
            "4,6,6",
            "--dtype",
            "f32",
            "--prune",
            "0.34",
            "--select",
            "local",
            "-q",
        ]
        .iter()
        .chain(&CALIBRATION_FLAGS)
        .copied()
        .collect::<Vec<_>>(),
    );
    for expected in [by_error[0].block, by_error[1].block] {
        assert!(
            report.contains(&format!("{expected} ")),
            "{expected} not replaced:\n{report}"
        );
    }
    assert!(report.contains("2 blocks replaced"), "{report}");
}

#[test]
fn rewritten_ir_of_tiny_dev() {
    let ckpt = tiny();
    let mut graph = lift(&ckpt, LiftOptions { dtype: DType::F32 }).unwrap();
    let chosen: BTreeSet<_> = [BlockId::Double(1), BlockId::Single(2)].into();
    let reports =
        fit_sequentially(&graph, &ckpt, &inputs(&ckpt), &chosen, &calibration(1e-6)).unwrap();
    let fits: Vec<_> = reports.into_iter().map(|r| r.fit).collect();
    apply_fits(&mut graph, &fits).unwrap();
    insta::assert_snapshot!("tiny_dev_brll_double1_single2", graph.to_string());
}

#[test]
fn exported_pruned_model_computes_what_calibration_predicted() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pruned.onnx");
    let ckpt_path = golden("diffusers");
    let held_out = golden("inputs.safetensors");
    let report = compile_ok(
        &[
            ckpt_path.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--dtype",
            "f32",
            "--replace",
            "double.1,single.2",
            "--verify",
            "--verify-inputs",
            held_out.to_str().unwrap(),
            "-q",
        ]
        .iter()
        .chain(&CALIBRATION_FLAGS)
        .copied()
        .collect::<Vec<_>>(),
    );
    // The error --verify states is the exported pruned model's, on the golden inputs, against
    // what diffusers computes there in f64 (the original model, as --verify runs it, matches
    // diffusers to 1e-5, below the four decimals stated).
    let stated: f64 = report
        .split("verification       relative L2 error ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no verification line:\n{report}"))
        .parse()
        .unwrap();
    let (_, diffusers) = golden_io("expected.safetensors");
    let measured = relative_l2(&run_golden(&out), &diffusers);
    assert!(
        (stated - measured).abs() < 2e-4 && measured > 1e-3,
        "--verify states {stated}, the exported model is {measured:.5} from diffusers"
    );

    // The same fits applied to the f32 IR and run stage by stage must give the exported model's
    // output: the LinearResidual lowering is what calibration assumed.
    let chosen: BTreeSet<_> = [BlockId::Double(1), BlockId::Single(2)].into();
    let staged = staged_fitted_latent(&chosen, &calibration(1e-6));
    let exported = run_golden(&out);
    let error = relative_l2(&exported, &staged);
    assert!(
        error < 1e-5,
        "exported pruned model differs from the staged one by {error:.2e}"
    );

    // The replaced branches' weights are gone from the exported model.
    let text = initializer_names(&out);
    assert!(
        !text.contains("double_blocks.1.img_attn.qkv.weight"),
        "replaced weights exported"
    );
    assert!(
        !text.contains("single_blocks.2.linear1.weight"),
        "replaced weights exported"
    );
    // A lone fitted node is exported as one Linear, `x (I+W)ᵀ + b`, under its own name.
    assert!(
        !text.contains("double_blocks.1.brll.img.weight"),
        "the uncollapsed fitted weight exported"
    );
    for name in [
        "double_blocks.1.brll.img.affine.weight",
        "double_blocks.1.brll.txt.affine.bias",
        "single_blocks.2.brll.affine.weight",
    ] {
        assert!(
            text.contains(name),
            "{name} missing from the exported model"
        );
    }
}

#[test]
fn bad_replace_lists_and_calibration_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = golden("diffusers");
    let out = dir.path().join("m.onnx");
    for (list, expected) in [
        ("double.2", "the model has 2 double blocks"),
        ("quad.0", "unknown block kind `quad`"),
        ("single.0,single.0-1", "single_blocks.0 is named twice"),
    ] {
        let o = compile(&[
            ckpt.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--replace",
            list,
        ]);
        let stderr = &o.stderr;
        assert!(
            !o.success && stderr.contains(expected),
            "--replace {list}: {stderr}"
        );
    }
    // A calibration file for another model: the toy's inputs have 4 channels, tiny-dev needs 16.
    let toy_calib = shared().join("toy/digits/calib.safetensors");
    let o = compile(&[
        ckpt.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--replace",
        "single.0",
        "--calib",
        toy_calib.to_str().unwrap(),
    ]);
    let stderr = &o.stderr;
    assert!(!o.success, "a mis-shaped calibration file was accepted");
    assert!(
        stderr.contains("calib.safetensors") && stderr.contains("hidden_states"),
        "{stderr}"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "output written"
    );
}
