//! `--verify` judges on held-out samples of the calibration's own source: with `--calib-cond`,
//! the trajectories' inputs at steps not recorded for calibration (checked by content against
//! the golden FLUX.1 schedule), with synthetic calibration another seed, with `--calib FILE`
//! only `--verify-inputs` (refused otherwise). The summary states that set, the device every
//! stage ran on, and FLOPs at the calibration set's own token counts.

mod support;

use fastflux::compile::{CompileOptions, TrajectorySpec, calib_cond, lift_checkpoint};
use fastflux::fit::brll::{
    BrllOptions, HeldOutSource, Selection, calibration_inputs, held_out_inputs,
};
use fastflux::inputs::{InputSet, SyntheticSpec};
use fastflux::ir::cost::Tokens;
use fastflux::report::human;
use fastflux::rng::Rng;
use fastflux::runtime::ort::cuda_available;
use fastflux::sample::Grid;
use std::collections::{BTreeMap, BTreeSet};
use support::*;

/// 4-step trajectories of the toy's 10 prompts on an 8x8 grid, `per_prompt` inputs recorded
/// per prompt, seed 7.
fn trajectory_flags(per_prompt: usize) -> Vec<String> {
    let prompts = toy("prompts.safetensors");
    let flags = [
        "--calib-cond",
        prompts.to_str().unwrap(),
        "--calib-size",
        "8x8",
    ];
    let more = ["--calib-steps", "4", "--seed", "7", "--calib-per-prompt"];
    let mut flags: Vec<String> = flags.iter().chain(&more).map(|f| f.to_string()).collect();
    flags.push(per_prompt.to_string());
    flags
}

/// diffusers' sigmas of FLUX.1-schnell's 4-step schedule (the toy has no guidance embedding),
/// from the golden file, without the final 0: the noise level of each step's input.
fn golden_schnell_sigmas() -> Vec<f64> {
    let text = std::fs::read_to_string(shared().join("golden/sampler-sigmas.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let case = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["model"] == "schnell" && c["steps"] == 4)
        .expect("the golden schnell 4-step case");
    let sigmas: Vec<f64> = case["sigmas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_f64().unwrap())
        .collect();
    sigmas[..4].to_vec()
}

/// Per prompt of the toy's conditioning file (found by its text rows, by content), the steps
/// of the golden schedule at which `set` holds an input of it, and its samples by step.
fn steps_by_prompt(set: &InputSet, sigmas: &[f64]) -> BTreeMap<usize, BTreeMap<usize, usize>> {
    let prompts = fastflux::tensor::read_f32_tensors(&toy("prompts.safetensors")).unwrap();
    let prompt_text = prompts
        .iter()
        .find(|t| t.name == "encoder_hidden_states")
        .unwrap();
    let row = 8 * 32;
    let text = &set.get("encoder_hidden_states").unwrap().data;
    let timestep = &set.get("timestep").unwrap().data;
    let mut found = BTreeMap::<usize, BTreeMap<usize, usize>>::new();
    for s in 0..set.samples {
        let sample_text = &text[s * row..(s + 1) * row];
        let p = (0..10)
            .find(|p| &prompt_text.data[p * row..(p + 1) * row] == sample_text)
            .unwrap_or_else(|| panic!("sample {s} is conditioned on none of the prompts"));
        let t = f64::from(timestep[s]);
        let k = (0..sigmas.len())
            .find(|&k| (sigmas[k] - t).abs() < 1e-6)
            .unwrap_or_else(|| panic!("sample {s}: timestep {t} is no sigma of {sigmas:?}"));
        let earlier = found.entry(p).or_default().insert(k, s);
        assert!(earlier.is_none(), "prompt {p} holds step {k} twice");
    }
    found
}

#[test]
fn trajectory_verification_holds_out_the_steps_calibration_did_not_record() {
    let mut options = CompileOptions::new(toy("flux-bfl.safetensors"));
    options.axes_dim = Some(vec![4, 6, 6]);
    let compiled = lift_checkpoint(&options).unwrap();
    let mut brll = BrllOptions {
        selection: Selection::Replace("double.1".into()),
        verify: true,
        ..BrllOptions::default()
    };
    brll.calibration.threads = 1;
    let seed = 7;
    let spec = TrajectorySpec {
        cond: toy("prompts.safetensors"),
        grid: Grid::parse("8x8", "--calib-size").unwrap(),
        steps: 4,
        per_prompt: 2,
        seed,
        guidance: None,
    };
    let (brll, _) =
        calib_cond::prepare(&compiled.ckpt, &compiled.graph, &brll, Some(&spec), None).unwrap();
    let calibration = calibration_inputs(&compiled.ckpt, &brll).unwrap();
    let held_out = held_out_inputs(&compiled.ckpt, &brll).unwrap();
    let expected = HeldOutSource::Trajectories {
        prompts: 10,
        per_prompt: 2,
        recorded: 2,
        steps: 4,
    };
    assert_eq!(held_out.source, expected);
    assert_eq!((held_out.inputs.samples, calibration.samples), (20, 20));

    let sigmas = golden_schnell_sigmas();
    let recorded = steps_by_prompt(&calibration, &sigmas);
    let held = steps_by_prompt(&held_out.inputs, &sigmas);
    let every_step: BTreeSet<usize> = (0..4).collect();
    let mut noise_checked = 0;
    for p in 0..10 {
        let (r, h): (BTreeSet<_>, BTreeSet<_>) = (
            recorded[&p].keys().copied().collect(),
            held[&p].keys().copied().collect(),
        );
        assert!(
            r.is_disjoint(&h),
            "prompt {p}: recorded {r:?}, held out {h:?}"
        );
        assert_eq!(
            &r | &h,
            every_step,
            "prompt {p}: recorded {r:?}, held out {h:?}"
        );
        // At the first step the input is the prompt's seeded noise: the trajectory's start.
        if let Some(&s) = held[&p].get(&0) {
            let per = 64 * 4;
            let mut rng = Rng::new(seed, p as u64);
            let noise: Vec<f32> = (0..per).map(|_| rng.normal() as f32).collect();
            let hidden = &held_out.inputs.get("hidden_states").unwrap().data;
            assert_eq!(&hidden[s * per..(s + 1) * per], &noise[..], "sample {s}");
            noise_checked += 1;
        }
    }
    assert!(noise_checked > 0, "no held-out input at the first step");
    let rows = |set: &InputSet| -> BTreeSet<Vec<u32>> {
        let hidden = &set.get("hidden_states").unwrap().data;
        hidden
            .chunks(64 * 4)
            .map(|r| r.iter().map(|v| v.to_bits()).collect())
            .collect()
    };
    let (held_rows, recorded_rows) = (rows(&held_out.inputs), rows(&calibration));
    assert_eq!(held_rows.len(), 20, "held-out latents repeat");
    assert!(
        held_rows.is_disjoint(&recorded_rows),
        "a held-out latent was calibrated on"
    );
}

#[test]
fn synthetic_verification_draws_other_samples_of_the_same_sizes() {
    let mut options = CompileOptions::new(toy("flux-bfl.safetensors"));
    options.axes_dim = Some(vec![4, 6, 6]);
    let compiled = lift_checkpoint(&options).unwrap();
    let brll = BrllOptions {
        synthetic: SyntheticSpec {
            samples: 3,
            image_tokens: 12,
            text_tokens: 5,
            seed: 2,
        },
        verify: true,
        ..BrllOptions::default()
    };
    let calibration = calibration_inputs(&compiled.ckpt, &brll).unwrap();
    let held_out = held_out_inputs(&compiled.ckpt, &brll).unwrap();
    assert!(
        matches!(held_out.source, HeldOutSource::Synthetic { calibration_seed: 2, seed } if seed != 2),
        "{:?}",
        held_out.source
    );
    for (a, b) in calibration.tensors.iter().zip(&held_out.inputs.tensors) {
        assert_eq!((&a.name, &a.shape), (&b.name, &b.shape));
    }
    let hidden = |set: &InputSet| set.get("hidden_states").unwrap().data.clone();
    assert_ne!(hidden(&calibration), hidden(&held_out.inputs));
}

/// One run that goes through every stage: trajectories, ranking, fitting, `--verify`, ST.
#[test]
fn the_summary_says_where_each_stage_ran_what_verify_judged_on_and_the_set_s_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let mut flags = vec!["-o", out.to_str().unwrap(), "--prune", "0.2", "--verify"];
    flags.extend(["--st-steps", "5", "--execution-provider", "auto"]);
    let trajectories = trajectory_flags(2);
    flags.extend(trajectories.iter().map(String::as_str));
    let summary = compile_ok(&toy_args(&flags));

    // `auto` resolves to CUDA exactly when the loaded ONNX Runtime has it; candle, in a build
    // without CUDA, to the CPU.
    let onnx = match cuda_available().unwrap() {
        true => "ONNX Runtime's CUDA execution provider",
        false => "ONNX Runtime's CPU execution provider",
    };
    let line = |start: &str| -> Vec<&str> {
        let lines = summary.lines().filter(|l| l.starts_with(start));
        lines.collect()
    };
    let one = |start: &str| -> &str {
        let found = line(start);
        assert_eq!(found.len(), 1, "one `{start}` line:\n{summary}");
        found[0]
    };
    assert!(
        !summary.contains("auto"),
        "an unresolved provider:\n{summary}"
    );
    let sampled = one("  calibration        the original model's own trajectories");
    assert!(sampled.contains(&format!(" s on {onnx}")), "{sampled}");
    assert!(one("  ranking cost").contains(onnx), "{summary}");
    assert!(one("BRLL: 2 blocks replaced").ends_with(&format!("fitted on {onnx}")));
    let verifications = line("  verification       relative L2 error");
    assert_eq!(verifications.len(), 2, "BRLL's and ST's:\n{summary}");
    for v in verifications {
        assert!(v.contains(onnx), "{v}");
    }
    if !candle_core::utils::cuda_is_available() {
        assert!(
            one("ST: ").contains("trained on candle on the CPU"),
            "{summary}"
        );
    }

    let held_out = line(
        "  held-out set       20 samples: the calibration trajectories' inputs at steps not recorded for calibration, 2 per prompt",
    );
    assert_eq!(
        held_out.len(),
        2,
        "BRLL's and ST's held-out set:\n{summary}"
    );

    // The set's 8x8 grid and the conditioning file's 8 text tokens, not the synthetic default
    // (256 and 64) the FLOPs were counted at before.
    let flops = one("  FLOPs/image token");
    assert!(
        flops.contains("at the calibration set's 64 image, 8 text tokens"),
        "{flops}"
    );
    let graph = lift_checkpoint(&{
        let mut options = CompileOptions::new(toy("flux-bfl.safetensors"));
        options.axes_dim = Some(vec![4, 6, 6]);
        options
    })
    .unwrap()
    .graph;
    let before = graph.flops_per_image_token(Tokens { image: 64, text: 8 });
    assert!(
        flops.starts_with(&format!("  FLOPs/image token  {} ->", human(before))),
        "{flops}"
    );
}

#[test]
fn a_calibration_file_is_verified_only_on_verify_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let out = out.to_str().unwrap();
    let calib = toy("calib.safetensors");
    let args = [
        "-o",
        out,
        "--replace",
        "double.1",
        "--calib",
        calib.to_str().unwrap(),
    ];
    // Refused before anything is written, the calibration set `--calib-save` would write too.
    let saved = dir.path().join("saved.safetensors");
    let verify = ["--verify", "--calib-save", saved.to_str().unwrap()];
    let refused = compile(&toy_args(&[&args[..], &verify].concat()));
    assert_refused(&refused, &["--verify-inputs", "calib.safetensors"]);
    assert!(listing(dir.path()).is_empty(), "{:?}", listing(dir.path()));

    // The library refuses as the command line does, not with synthetic inputs.
    let mut options = CompileOptions::new(toy("flux-bfl.safetensors"));
    options.axes_dim = Some(vec![4, 6, 6]);
    let ckpt = lift_checkpoint(&options).unwrap().ckpt;
    let brll = BrllOptions {
        calib: Some(calib.clone()),
        verify: true,
        ..BrllOptions::default()
    };
    let err = held_out_inputs(&ckpt, &brll).expect_err("refused");
    assert!(err.to_string().contains("--verify-inputs"), "{err}");

    let spec = SyntheticSpec {
        samples: 2,
        image_tokens: 64,
        text_tokens: 8,
        seed: 5,
    };
    let inputs = dir.path().join("held.safetensors");
    let set = InputSet::synthetic(&ckpt.config, &spec).unwrap();
    set.save(&inputs, &BTreeMap::new()).unwrap();
    let given = ["--verify", "--verify-inputs", inputs.to_str().unwrap()];
    let summary = compile_ok(&toy_args(&[&args[..], &given].concat()));
    let expected = format!(
        "  held-out set       2 samples: the --verify-inputs file {}",
        inputs.display()
    );
    assert!(summary.contains(&expected), "{summary}");
}

#[test]
fn trajectories_that_record_every_step_leave_nothing_to_verify_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let mut flags = vec![
        "-o",
        out.to_str().unwrap(),
        "--replace",
        "double.1",
        "--verify",
    ];
    let trajectories = trajectory_flags(4);
    flags.extend(trajectories.iter().map(String::as_str));
    let refused = compile(&toy_args(&flags));
    assert_refused(
        &refused,
        &[
            "--calib-per-prompt 4 records all 4 steps",
            "--verify-inputs",
        ],
    );
    assert!(listing(dir.path()).is_empty());
}
