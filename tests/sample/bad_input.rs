//! Bad input to the sampler and to trajectory calibration, each refused with an error that
//! names the file, the tensor and what was expected, a non-zero exit, and nothing written.

use crate::support::*;
use crate::{sample_cmd, toy, toy_onnx};
use fastflux::tensor::{Tensor, read_f32_tensors, write_f32_tensors};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The toy's conditioning file, edited by `edit`, in a fresh folder (which also receives the
/// outputs of the refused run).
fn cond_file(edit: impl FnOnce(&mut Vec<Tensor>)) -> (tempfile::TempDir, PathBuf) {
    let mut tensors = read_f32_tensors(&toy("prompts.safetensors")).unwrap();
    edit(&mut tensors);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cond.safetensors");
    write_f32_tensors(&path, &tensors, &BTreeMap::new()).unwrap();
    (dir, path)
}

fn sample_args(model: &Path, cond: &Path, dir: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![model.into(), "--cond".into(), cond.into()];
    for a in [
        "--steps",
        "3",
        "--size",
        "8x8",
        "-q",
        "--threads",
        "1",
        "-o",
    ] {
        args.push(a.into());
    }
    args.push(dir.join("out.safetensors").into());
    args.extend(extra.iter().map(OsString::from));
    args
}

/// Runs `fastflux-sample` expecting a refusal that says each of `needles`, with nothing left in
/// `dir` but the files that were there before.
fn refused(args: &[OsString], dir: &Path, needles: &[&str]) -> String {
    let before = listing(dir);
    let out = sample_cmd(args);
    assert_refused(&out, needles);
    assert_eq!(listing(dir), before, "{args:?} left files behind");
    out.stderr
}

fn edit<'a>(tensors: &'a mut [Tensor], name: &str) -> &'a mut Tensor {
    tensors.iter_mut().find(|t| t.name == name).unwrap()
}

/// Drops the last `by` columns of the tensor's last axis.
fn narrow(t: &mut Tensor, by: usize) {
    let width = *t.shape.last().unwrap();
    t.data = t
        .data
        .chunks_exact(width)
        .flat_map(|row| row[..width - by].to_vec())
        .collect();
    *t.shape.last_mut().unwrap() -= by;
}

#[test]
fn conditioning_with_a_missing_tensor() {
    for missing in ["encoder_hidden_states", "pooled_projections"] {
        let (dir, cond) = cond_file(|t| t.retain(|t| t.name != missing));
        let args = sample_args(toy_onnx(), &cond, dir.path(), &[]);
        let tensor = format!("tensor `{missing}`");
        refused(&args, dir.path(), &["cond.safetensors", &tensor, "missing"]);
    }
}

#[test]
fn conditioning_widths_that_do_not_match_the_model() {
    let (dir, cond) = cond_file(|t| narrow(edit(t, "encoder_hidden_states"), 2));
    let args = sample_args(toy_onnx(), &cond, dir.path(), &[]);
    let needles = [
        "cond.safetensors",
        "`encoder_hidden_states`",
        "[P, L, 32]",
        "[10, 8, 30]",
    ];
    refused(&args, dir.path(), &needles);
    let (dir, cond) = cond_file(|t| narrow(edit(t, "pooled_projections"), 4));
    let args = sample_args(toy_onnx(), &cond, dir.path(), &[]);
    let needles = [
        "cond.safetensors",
        "`pooled_projections`",
        "[P, 16]",
        "[10, 12]",
    ];
    refused(&args, dir.path(), &needles);
}

#[test]
fn conditioning_row_counts_that_disagree() {
    let (dir, cond) = cond_file(|t| {
        let pooled = edit(t, "pooled_projections");
        pooled.shape[0] = 9;
        pooled.data.truncate(9 * 16);
    });
    let args = sample_args(toy_onnx(), &cond, dir.path(), &[]);
    let needles = [
        "cond.safetensors",
        "`pooled_projections`",
        "9 rows",
        "has 10",
    ];
    refused(&args, dir.path(), &needles);
}

#[test]
fn a_size_that_is_not_h_x_w() {
    let dir = tempfile::tempdir().unwrap();
    for size in ["64", "8by8", "0x8"] {
        let mut args = sample_args(toy_onnx(), &toy("prompts.safetensors"), dir.path(), &[]);
        let at = args.iter().position(|a| a == "8x8").unwrap();
        args[at] = size.into();
        refused(&args, dir.path(), &["--size", size, "HxW"]);
    }
}

#[test]
fn a_model_whose_inputs_are_not_flux() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("identity.onnx");
    let script = "import sys, onnx\n\
        from onnx import helper, TensorProto as T\n\
        x = helper.make_tensor_value_info('x', T.FLOAT, [1, 4])\n\
        y = helper.make_tensor_value_info('y', T.FLOAT, [1, 4])\n\
        g = helper.make_graph([helper.make_node('Identity', ['x'], ['y'])], 'g', [x], [y])\n\
        m = helper.make_model(g, opset_imports=[helper.make_opsetid('', 20)])\n\
        m.ir_version = 10\n\
        onnx.save(m, sys.argv[1])\n";
    let (ok, text) = python_run(script, &[&model]);
    assert!(ok, "{text}");
    let args = sample_args(&model, &toy("prompts.safetensors"), dir.path(), &[]);
    let needles = [
        "identity.onnx",
        "not a FLUX transformer",
        "hidden_states",
        "`x` [1, 4]",
    ];
    refused(&args, dir.path(), &needles);
}

#[test]
fn guidance_for_a_model_without_a_guidance_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--guidance", "3.5"];
    let args = sample_args(toy_onnx(), &toy("prompts.safetensors"), dir.path(), &extra);
    refused(
        &args,
        dir.path(),
        &["toy.onnx", "guidance 3.5", "no guidance embedding"],
    );
}

#[test]
fn png_for_latents_that_are_not_images() {
    // tiny-dev's tokens have 16 channels: not a grey 2×2 patch.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny.onnx");
    compile_ok(&golden_f32_args("diffusers", &model, &[]));
    let cond = dir.path().join("cond.safetensors");
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let keep = ["encoder_hidden_states", "pooled_projections"];
    let kept: Vec<Tensor> = inputs
        .into_iter()
        .filter(|t| keep.contains(&t.name.as_str()))
        .collect();
    write_f32_tensors(&cond, &kept, &BTreeMap::new()).unwrap();
    let png = dir.path().join("x.png");
    let extra = ["--png", png.to_str().unwrap()];
    let args = sample_args(&model, &cond, dir.path(), &extra);
    refused(&args, dir.path(), &["tiny.onnx", "--png", "16 channels"]);
}

/// `fastflux-compile` with trajectory calibration of the toy into `dir`, plus `extra`.
fn calib_args(cond: &Path, dir: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![toy("flux-bfl.safetensors").into(), "-o".into()];
    args.push(dir.join("pruned.onnx").into());
    for a in [
        "--axes-dim",
        "4,6,6",
        "-q",
        "--replace",
        "double.1",
        "--calib-cond",
    ] {
        args.push(a.into());
    }
    args.push(cond.into());
    args.extend(["--calib-steps", "2", "--calib-per-prompt", "1"].map(OsString::from));
    args.extend(extra.iter().map(OsString::from));
    args
}

#[test]
fn trajectory_calibration_refuses_bad_conditioning_and_sizes() {
    let (dir, cond) = cond_file(|t| narrow(edit(t, "pooled_projections"), 1));
    let args = calib_args(&cond, dir.path(), &["--calib-size", "8x8"]);
    let before = listing(dir.path());
    assert_refused(
        &compile(&args),
        &["cond.safetensors", "`pooled_projections`", "[P, 16]"],
    );
    assert_eq!(listing(dir.path()), before);
    let cond = toy("prompts.safetensors");
    let args = calib_args(&cond, dir.path(), &["--calib-size", "8-8"]);
    assert_refused(&compile(&args), &["--calib-size", "HxW"]);
    let extra = ["--calib-size", "8x8", "--calib-guidance", "2"];
    assert_refused(
        &compile(&calib_args(&cond, dir.path(), &extra)),
        &["no guidance embedding"],
    );
    assert_eq!(listing(dir.path()), before);
}

/// A FLUX.2 checkpoint is refused by the sampler as by the compiler: by name, writing nothing.
#[test]
fn a_flux2_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let model = toy_flux2("flux2-bfl.safetensors");
    let args = sample_args(&model, &toy("prompts.safetensors"), dir.path(), &[]);
    let needles = [
        "flux2-bfl.safetensors: a FLUX.2 transformer",
        "(found `double_stream_modulation_img.lin.weight`)",
        "FLUX.2 support is issue 19",
    ];
    refused(&args, dir.path(), &needles);
}
