//! BRLL fidelity on the trained toy FLUX (`../shared/toy/digits`): held-out velocity error of the
//! pruned models relative to the unpruned one, all compiled to f32 ONNX and run in ONNX Runtime.
//!
//! ```text
//! ORT_DYLIB_PATH=... cargo run --release --example brll_fidelity -- /work/shared/toy/digits
//! ```
//!
//! The held-out set is built from `heldout.safetensors` (digits the model never saw): each image
//! is packed into 64 tokens × 4 channels, noised to `x_s = (1 − s)·x0 + s·e` with `e ~ N(0, 1)`
//! (seeded) at `--levels` noise levels `s = (k + ½)/levels`, and conditioned on its label's class.
//! It is written as `heldout_inputs.safetensors` in `--out-dir`, usable with `--verify-inputs`.
//!
//! Configurations, each replacing `--prune` of the blocks (2 of 8 by default) calibrated on the
//! toy's `calib.safetensors`: the plain fit, the conditioned fit at several ridges, and the
//! baseline that removes the plain fit's blocks outright (zero `W`, `b`: the identity). Besides
//! the velocity error it samples digits with 20 Euler steps from the same noise and reports the
//! relative difference of the final samples to the unpruned model's.

mod toy_heldout;

use clap::Parser;
use fastflux::compile::{self, CompileOptions};
use fastflux::dtype::DType;
use fastflux::fit::brll::{BrllOptions, Selection};
use fastflux::fit::calibrate::FitKind;
use fastflux::fit::lstsq::DEFAULT_RIDGE;
use fastflux::io::{AtomicFile, SafetensorsWriter, TensorEntry};
use fastflux::metrics::{cosine, relative_l2};
use fastflux::passes::brll::{BlockFit, apply_fits};
use fastflux::rng::Rng;
use fastflux::runtime::run_model_file;
use fastflux::tensor::{Tensor, read_f32_tensors};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use toy_heldout::{heldout_digits, inputs, pack};

type Res<T> = Result<T, Box<dyn std::error::Error>>;
/// A written model, its replaced blocks (with fit errors), `--verify`'s result and the fits.
type Built = (PathBuf, String, Option<(f64, f64)>, Vec<BlockFit>);

/// Held-out fidelity of BRLL fits on the trained toy model.
#[derive(Parser, Debug)]
struct Args {
    /// The toy's folder (flux-bfl.safetensors, calib/cond/heldout.safetensors).
    #[arg(default_value = "/work/shared/toy/digits")]
    toy: PathBuf,
    /// Held-out samples (images × noise levels).
    #[arg(long, default_value_t = 64)]
    samples: usize,
    #[arg(long, default_value_t = 8)]
    levels: usize,
    #[arg(long, default_value_t = 0.25)]
    prune: f64,
    /// Ridges of the conditioned fit (besides the default).
    #[arg(long, value_delimiter = ',', default_value = "1e-4,1e-2,1e-1,1")]
    cond_ridges: Vec<f64>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Digits sampled with 20 Euler steps per model (0: skip).
    #[arg(long, default_value_t = 20)]
    draws: usize,
    /// Where models and the held-out file go (a temporary folder by default).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

fn write_safetensors(path: &Path, tensors: &[Tensor]) -> Res<()> {
    let entries: Vec<TensorEntry> = tensors
        .iter()
        .map(|t| TensorEntry {
            name: t.name.clone(),
            dtype: DType::F32,
            shape: t.shape.clone(),
        })
        .collect();
    let mut out = SafetensorsWriter::create(AtomicFile::new(path)?, &entries, &BTreeMap::new())?;
    for t in tensors {
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.write(&bytes)?;
    }
    out.finish()?;
    Ok(())
}

fn velocity(model: &Path, inputs: &[Tensor]) -> Res<Vec<f32>> {
    Ok(run_model_file(model, inputs, 2)?.remove(0).data)
}

/// 20 Euler steps from noise `x` at s = 1 to s = 0.
fn draw(model: &Path, cond: &[Tensor], mut x: Vec<f32>, classes: &[usize]) -> Res<Vec<f32>> {
    for k in 0..20 {
        let (s, next) = (1.0 - k as f32 / 20.0, 1.0 - (k + 1) as f32 / 20.0);
        let v = velocity(
            model,
            &inputs(cond, x.clone(), vec![s; classes.len()], classes),
        )?;
        x.iter_mut().zip(&v).for_each(|(x, v)| *x += (next - s) * v);
    }
    Ok(x)
}

fn main() -> Res<()> {
    let a = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = a.out_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let cond = read_f32_tensors(&a.toy.join("cond.safetensors"))?;
    let (images, labels) = heldout_digits(&a.toy)?;
    let mut rng = Rng::new(a.seed, 0);
    let (mut x, mut s, mut classes) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..a.samples {
        let level = ((n % a.levels) as f32 + 0.5) / a.levels as f32;
        let x0 = pack(&images[n * 256..][..256]);
        x.extend(
            x0.iter()
                .map(|&p| (1.0 - level) * p + level * rng.normal() as f32),
        );
        s.push(level);
        classes.push(labels[n] as usize);
    }
    let held_out = inputs(&cond, x, s, &classes);
    let held_path = dir.join("heldout_inputs.safetensors");
    write_safetensors(&held_path, &held_out)?;
    let draw_classes: Vec<usize> = (0..a.draws).map(|i| i % 10).collect();
    let noise: Vec<f32> = (0..a.draws * 256).map(|_| rng.normal() as f32).collect();

    let base = |out: &str| CompileOptions {
        output: Some(dir.join(out)),
        dtype: Some(DType::F32),
        axes_dim: Some(vec![4, 6, 6]),
        ..CompileOptions::new(a.toy.join("flux-bfl.safetensors"))
    };
    // The compile steps: lift, optionally fit BRLL, replace `zero`'s blocks by the identity
    // (not a compile step: the baseline), export.
    let build = |out: &str, options: Option<BrllOptions>, zero: &[BlockFit]| -> Res<Built> {
        let opts = base(out);
        let mut c = compile::lift_checkpoint(&opts)?;
        let outcome = options.map(|o| compile::fit_brll(&mut c, &o)).transpose()?;
        apply_fits(&mut c.graph, zero)?;
        let path = opts.output.clone().unwrap();
        compile::export(&c, &path, &opts)?;
        let blocks = match &outcome {
            Some(o) => o
                .replaced
                .iter()
                .map(|r| format!("{}({:.3})", r.block, r.fit_error))
                .collect::<Vec<_>>()
                .join(" "),
            None => zero
                .iter()
                .map(|f| f.block.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        };
        let fits = outcome
            .as_ref()
            .map(|o| o.replaced.iter().map(|r| r.fit.clone()).collect());
        Ok((
            path,
            blocks,
            outcome.and_then(|o| o.verification.map(|v| (v.relative_l2, v.cosine))),
            fits.unwrap_or_default(),
        ))
    };
    let brll_options = |kind: FitKind, ridge: f64| {
        let mut o = BrllOptions {
            selection: Selection::Prune(a.prune),
            calib: Some(a.toy.join("calib.safetensors")),
            ..Default::default()
        };
        o.calibration.kind = kind;
        o.calibration.ridge = ridge;
        o.calibration.threads = 2;
        o.verify = true;
        o.verify_inputs = Some(held_path.clone());
        o
    };

    let (reference_model, ..) = build("full.onnx", None, &[])?;
    let reference = velocity(&reference_model, &held_out)?;
    let reference_draws = if a.draws > 0 {
        draw(&reference_model, &cond, noise.clone(), &draw_classes)?
    } else {
        Vec::new()
    };
    let mut configs: Vec<(String, FitKind, f64)> = vec![
        ("plain".into(), FitKind::Plain, DEFAULT_RIDGE),
        ("conditioned".into(), FitKind::Conditioned, DEFAULT_RIDGE),
    ];
    configs.extend(
        a.cond_ridges
            .iter()
            .map(|&r| (format!("conditioned ridge {r:e}"), FitKind::Conditioned, r)),
    );
    let mut rows = Vec::new();
    for (i, (label, kind, ridge)) in configs.iter().enumerate() {
        rows.push((
            label.clone(),
            build(
                &format!("cfg{i}.onnx"),
                Some(brll_options(*kind, *ridge)),
                &[],
            )?,
        ));
    }
    // The baseline: the plain fit's blocks, each replaced by the identity (zero W and b).
    let zero: Vec<BlockFit> = rows[0]
        .1
        .3
        .iter()
        .map(|f| BlockFit {
            block: f.block,
            streams: f
                .streams
                .iter()
                .map(|s| fastflux::passes::brll::StreamFit {
                    weight: Arc::new(vec![0.0; s.weight.len()]),
                    bias: Arc::new(vec![0.0; s.bias.len()]),
                    cond_weight: None,
                    relative_error: 1.0,
                    stream: s.stream.clone(),
                })
                .collect(),
        })
        .collect();
    rows.insert(
        0,
        (
            "remove outright".into(),
            build("removed.onnx", None, &zero)?,
        ),
    );

    println!(
        "held-out: {} samples ({} digits × {} noise levels (k+½)/{}), seed {}",
        a.samples, a.samples, a.levels, a.levels, a.seed
    );
    println!(
        "\n| configuration | blocks (calib fit error) | rel. L2 velocity | cosine | --verify (staged) | samples rel. diff |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut per_level = Vec::new();
    for (label, (model, blocks, verify, _)) in &rows {
        let v = velocity(model, &held_out)?;
        let draws = if a.draws > 0 {
            format!(
                "{:.4}",
                relative_l2(
                    &draw(model, &cond, noise.clone(), &draw_classes)?,
                    &reference_draws
                )
            )
        } else {
            "-".into()
        };
        let verify = verify.map_or("-".into(), |(e, _)| format!("{e:.4}"));
        println!(
            "| {label} | {blocks} | {:.4} | {:.4} | {verify} | {draws} |",
            relative_l2(&v, &reference),
            cosine(&v, &reference)
        );
        let level_error = |k: usize| {
            let idx: Vec<usize> = (0..a.samples).filter(|n| n % a.levels == k).collect();
            let take = |t: &[f32]| {
                idx.iter()
                    .flat_map(|&n| t[n * 256..][..256].to_vec())
                    .collect::<Vec<f32>>()
            };
            relative_l2(&take(&v), &take(&reference))
        };
        per_level.push((
            label.clone(),
            (0..a.levels).map(level_error).collect::<Vec<_>>(),
        ));
    }
    println!("\nrel. L2 velocity error by noise level s:\n");
    let header: Vec<String> = (0..a.levels)
        .map(|k| format!("{:.3}", (k as f64 + 0.5) / a.levels as f64))
        .collect();
    println!(
        "| configuration | {} |\n|---|{}",
        header.join(" | "),
        "---|".repeat(a.levels)
    );
    for (label, errors) in per_level {
        let e: Vec<String> = errors.iter().map(|e| format!("{e:.3}")).collect();
        println!("| {label} | {} |", e.join(" | "));
    }
    Ok(())
}
