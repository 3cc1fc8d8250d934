//! The FLUX sampler: its schedules are diffusers' (`shared/golden/sampler-sigmas.json`), its
//! Euler loop steps `x ← x + (σ_next − σ)·v` from seeded noise with the inputs of the contract,
//! a compiled model and the staged original sample the same latents, and `fastflux-sample`
//! writes them (and a PNG) for the trained toy. Bad input: `sample/bad_input.rs`.

mod support;

mod sample {
    mod bad_input;
}

use fastflux::compile::{CompileOptions, prepare};
use fastflux::dtype::DType;
use fastflux::inputs::{Conditioning, Signature};
use fastflux::io::SafetensorsFile;
use fastflux::metrics::relative_l2;
use fastflux::rng::Rng;
use fastflux::runtime::staged::StagedRunner;
use fastflux::runtime::{ExecutionProvider, OrtBackend};
use fastflux::sample::schedule::mu;
use fastflux::sample::{
    Denoiser, Grid, OnnxDenoiser, SampleSpec, Schedule, StagedDenoiser, sample,
};
use fastflux::tensor::{Tensor, read_f32_tensors};
use indicatif::ProgressBar;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use support::*;

/// The toy compiled to ONNX in f32, once per test binary.
pub fn toy_onnx() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("toy.onnx");
        let checkpoint = toy("flux-bfl.safetensors");
        let args = [checkpoint.as_os_str(), "-o".as_ref(), out.as_os_str()];
        let flags = ["--axes-dim", "4,6,6", "-q"].map(std::ffi::OsStr::new);
        compile_ok(&[&args[..], &flags[..]].concat());
        dir
    });
    Box::leak(dir.path().join("toy.onnx").into_boxed_path())
}

/// Runs `fastflux-sample` with `args`.
pub fn sample_cmd<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_fastflux-sample"))
        .args(args)
        .output()
        .expect("fastflux-sample starts");
    Outcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn schedules_are_diffusers() {
    let path = shared().join("golden/sampler-sigmas.json");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = json["cases"].as_array().unwrap();
    assert!(cases.len() >= 6, "several step and token counts");
    for case in cases {
        let steps = case["steps"].as_u64().unwrap() as usize;
        let tokens = case["image_seq_len"].as_u64().unwrap() as usize;
        let schedule: Schedule = case["model"].as_str().unwrap().parse().unwrap();
        let label = format!("{schedule:?}, {steps} steps, {tokens} tokens");
        match case["mu"].as_f64() {
            Some(want) => assert!((mu(tokens) - want).abs() < 1e-12, "{label}: mu"),
            None => assert_eq!(schedule.mu(tokens), None, "{label}: unshifted"),
        }
        let ours = schedule.sigmas(steps, tokens);
        let want: Vec<f64> = case["sigmas"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ours.len(), want.len(), "{label}");
        for (k, (&s, &w)) in ours.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(s) - w).abs() < 1e-6,
                "{label}: sigma {k}: {s} vs {w}"
            );
        }
        let timesteps = case["timesteps"].as_array().unwrap();
        for (k, t) in timesteps.iter().enumerate() {
            let t = t.as_f64().unwrap();
            assert!(
                (f64::from(ours[k]) * 1000.0 - t).abs() < 1e-3,
                "{label}: timestep {k}"
            );
        }
    }
}

/// A model with a constant velocity, recording what it was given.
struct Constant {
    signature: Signature,
    velocity: f32,
    seen: Vec<Vec<Tensor>>,
}

impl Denoiser for Constant {
    fn signature(&self) -> Signature {
        self.signature
    }

    fn velocity(&mut self, inputs: &[Tensor]) -> fastflux::Result<Tensor> {
        self.seen.push(inputs.to_vec());
        let x = &inputs[0];
        Ok(Tensor {
            name: "latent".into(),
            shape: x.shape.clone(),
            data: vec![self.velocity; x.data.len()],
        })
    }
}

#[test]
fn euler_steps_from_seeded_noise_with_the_contract_inputs() {
    let signature = Signature {
        in_channels: 3,
        context_dim: 5,
        pooled_dim: 2,
        axes: 3,
        guidance: true,
    };
    let text = Tensor {
        name: "encoder_hidden_states".into(),
        shape: vec![2, 4, 5],
        data: (0..40).map(|i| i as f32).collect(),
    };
    let pooled = Tensor {
        name: "pooled_projections".into(),
        shape: vec![2, 2],
        data: vec![1.0, 2.0, 3.0, 4.0],
    };
    let cond = Conditioning {
        prompts: 2,
        text_tokens: 4,
        text: text.clone(),
        pooled,
    };
    let mut model = Constant {
        signature,
        velocity: 0.5,
        seen: Vec::new(),
    };
    let spec = SampleSpec {
        grid: Grid { rows: 2, cols: 3 },
        steps: 5,
        seed: 11,
        guidance: Some(4.0),
        schedule: Schedule::Dev,
    };
    let out = sample(&mut model, &cond, &spec, &ProgressBar::hidden(), |_| Ok(())).unwrap();
    assert_eq!(out.latents.shape, [2, 6, 3]);
    // Σ (σ_next − σ) = −1: the constant velocity moves every element by −0.5.
    for p in 0..2 {
        let mut rng = Rng::new(11, p as u64);
        for (i, &x) in out.latents.data[p * 18..(p + 1) * 18].iter().enumerate() {
            let noise = rng.normal() as f32;
            assert!(
                (x - (noise - 0.5)).abs() < 1e-5,
                "row {p} element {i}: {x} vs {noise}"
            );
        }
    }
    assert_eq!(model.seen.len(), 5);
    let names: Vec<&str> = model.seen[0].iter().map(|t| t.name.as_str()).collect();
    let want: Vec<&str> = signature.inputs().iter().map(|i| i.name).collect();
    assert_eq!(names, want);
    let sigmas = Schedule::Dev.sigmas(5, 6);
    for (k, inputs) in model.seen.iter().enumerate() {
        let get = |n: &str| inputs.iter().find(|t| t.name == n).unwrap();
        assert_eq!(get("timestep").data, vec![sigmas[k]; 2]);
        assert_eq!(get("guidance").data, vec![4.0; 2]);
        assert_eq!(get("encoder_hidden_states"), &text);
        assert_eq!(get("txt_ids").data, vec![0.0; 12]);
        // Token 4 of a 2×3 grid is row 1, column 1.
        assert_eq!(&get("img_ids").data[12..15], &[0.0, 1.0, 1.0]);
    }
    // The hidden states of step 1 are step 0's plus (σ₁ − σ₀)·v.
    let (x0, x1) = (&model.seen[0][0].data, &model.seen[1][0].data);
    let dt = sigmas[1] - sigmas[0];
    assert!(
        x0.iter()
            .zip(x1)
            .all(|(a, b)| (a + dt * 0.5 - b).abs() < 1e-6)
    );
}

#[test]
fn the_compiled_model_and_the_staged_original_sample_alike() {
    let options = CompileOptions {
        dtype: Some(DType::F32),
        axes_dim: Some(vec![4, 6, 6]),
        ..CompileOptions::new(toy("flux-bfl.safetensors"))
    };
    let compiled = prepare(&options).unwrap();
    let signature = Signature::of(&compiled.ckpt.config);
    let cond = Conditioning::load(&toy("prompts.safetensors"), &signature).unwrap();
    let spec = SampleSpec {
        grid: Grid { rows: 8, cols: 8 },
        steps: 6,
        seed: 3,
        guidance: None,
        schedule: Schedule::Schnell,
    };
    let hidden = ProgressBar::hidden();
    let mut onnx = OnnxDenoiser::open(toy_onnx(), 1, ExecutionProvider::Cpu, 3).unwrap();
    assert_eq!(onnx.signature(), signature, "read off the ONNX file");
    let a = sample(&mut onnx, &cond, &spec, &hidden, |_| Ok(())).unwrap();
    // Reloading every stage each step, and keeping them loaded, compute the same.
    for keep in [false, true] {
        let (graph, ckpt) = (&compiled.graph, &compiled.ckpt);
        let runner = match keep {
            false => StagedRunner::new(graph, ckpt, 4, 1),
            true => {
                let backend = OrtBackend::cpu(1).without_spinning();
                StagedRunner::with_backend(graph, ckpt, backend, 4).keep_loaded()
            }
        };
        let mut staged = StagedDenoiser::new(runner, signature);
        let b = sample(&mut staged, &cond, &spec, &hidden, |_| Ok(())).unwrap();
        let error = relative_l2(&a.latents.data, &b.latents.data);
        assert!(error < 1e-4, "keep loaded {keep}: relative L2 {error:.2e}");
    }
}

#[test]
fn fastflux_sample_writes_latents_and_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let (out, png) = (dir.path().join("x.safetensors"), dir.path().join("x.png"));
    let cond = toy("prompts.safetensors");
    let args = [
        toy_onnx().as_os_str(),
        "--cond".as_ref(),
        cond.as_os_str(),
        "--steps".as_ref(),
        "20".as_ref(),
        "--size".as_ref(),
        "8x8".as_ref(),
        "--seed".as_ref(),
        "5".as_ref(),
        "-o".as_ref(),
        out.as_os_str(),
        "--png".as_ref(),
        png.as_os_str(),
        "-q".as_ref(),
        "--threads".as_ref(),
        "1".as_ref(),
    ];
    let run = sample_cmd(&args);
    assert!(run.success, "{}", run.stderr);
    assert!(run.stdout.contains("step  20/20"), "{}", run.stdout);
    assert!(run.stdout.contains("per step"), "{}", run.stdout);
    let latents = read_f32_tensors(&out).unwrap();
    assert_eq!(latents.len(), 1);
    assert_eq!(latents[0].shape, [10, 64, 4]);
    // Samples are digits, not noise: their mean brightness is the held-out digits' (dark
    // background, about -0.39 in [-1, 1]), where noise would give 0.
    let held_out = SafetensorsFile::open_with_other_dtypes(&toy("heldout.safetensors")).unwrap();
    let (_, images) = held_out.read_f32("images").unwrap();
    let average = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (mean, want) = (average(&latents[0].data), average(&images));
    assert!(
        (mean - want).abs() < 0.1,
        "mean {mean}, held-out digits {want}"
    );
    assert!(
        latents[0].data.iter().all(|v| v.abs() < 1.6),
        "latents stay in the image range"
    );
    // Each sample has a digit's contrast, not a flat image of the right mean: its pixels spread
    // about as much as a held-out digit's do, and no two of the ten samples are alike.
    let spread = |v: &[f32]| {
        let m = average(v);
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / v.len() as f32).sqrt()
    };
    let pixels = 64 * 4;
    let digit_spread = average(&images.chunks(pixels).map(spread).collect::<Vec<_>>());
    let samples: Vec<&[f32]> = latents[0].data.chunks(pixels).collect();
    for (i, sample) in samples.iter().enumerate() {
        let ratio = spread(sample) / digit_spread;
        assert!(
            (0.5..2.0).contains(&ratio),
            "sample {i}: pixel spread {ratio:.2}x a held-out digit's"
        );
        for (j, other) in samples[..i].iter().enumerate() {
            let distance = relative_l2(sample, other);
            assert!(distance > 0.1, "samples {j} and {i} alike ({distance:.2e})");
        }
    }
    // The checkpoint itself, run stage by stage, samples the same latents.
    let staged_out = dir.path().join("staged.safetensors");
    let checkpoint = toy("flux-bfl.safetensors");
    let mut staged_args: Vec<&std::ffi::OsStr> = args.to_vec();
    staged_args[0] = checkpoint.as_os_str();
    let at = staged_args
        .iter()
        .position(|a| *a == out.as_os_str())
        .unwrap();
    staged_args[at] = staged_out.as_os_str();
    staged_args.truncate(staged_args.len() - 5); // from --png on
    let flags = ["-q", "--threads", "1", "--axes-dim", "4,6,6"];
    staged_args.extend(flags.map(std::ffi::OsStr::new));
    let run = sample_cmd(&staged_args);
    assert!(run.success, "{}", run.stderr);
    assert!(run.stdout.contains("staged"), "{}", run.stdout);
    let staged = read_f32_tensors(&staged_out).unwrap();
    let error = relative_l2(&staged[0].data, &latents[0].data);
    assert!(
        error < 1e-4,
        "staged checkpoint vs compiled: relative L2 {error:.2e}"
    );
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    // Grid: 10 tiles of 64 pixels (16 × scale 4), gaps of 4: 10·68 + 4 wide, 68 + 4 high.
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), (684, 72));
}
