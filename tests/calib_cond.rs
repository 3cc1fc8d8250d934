//! Calibration from trajectories (`--calib-cond`): the recorded set holds the model's inputs at
//! the documented steps (seeded noise at the first, the schedule's sigmas), `--calib-save`
//! writes it so that `--calib` reloads the same set and the same fits, and the summary says
//! where the fits' inputs came from (plainly, when they were random).

mod support;

use fastflux::checkpoint::FluxCheckpoint;
use fastflux::compile::{CompileOptions, prepare};
use fastflux::inputs::{InputSet, SyntheticSpec};
use fastflux::metrics::relative_l2;
use fastflux::rng::Rng;
use fastflux::runtime::staged::StagedRunner;
use fastflux::sample::trajectories::recorded_steps;
use fastflux::tensor::Tensor;
use std::collections::{BTreeMap, BTreeSet};
use support::*;

/// The ranking table of a `--plan` report.
/// The ranking table, without its cost line (which states the seconds it took).
fn ranking(stdout: &str) -> String {
    let table = &stdout[stdout.find("BRLL ranking").expect("a ranking table")..];
    let rows = table.lines().filter(|l| !l.starts_with("  ranking cost"));
    rows.collect::<Vec<_>>().join("\n")
}

/// `steps` sigmas of an unshifted schedule and the final 0: `np.linspace(1, 1/steps, steps)` in
/// f64, cast to f32 (the toy has no guidance embedding, so it samples like schnell).
fn unshifted_sigmas(steps: usize) -> Vec<f32> {
    let last = (steps - 1).max(1) as f64;
    let linspace = (0..steps).map(|k| (1.0 + (1.0 / steps as f64 - 1.0) * k as f64 / last) as f32);
    linspace.chain([0.0]).collect()
}

/// The toy checkpoint's own Euler trajectories for the ten prompts, written out here rather than
/// taken from the sampler under test: `x_0` the seeded noise of each prompt row, then
/// `x_{k+1} = x_k + (σ_{k+1} − σ_k)·v(x_k, σ_k)` with `v` the f32 model run stage by stage. The
/// conditioning (text, pooled vector, ids) is the recorded set's own, which the caller checks
/// against the prompts file. Returns `x_k` for every step `k`, prompts stacked.
fn original_trajectories(
    set: &InputSet,
    per_prompt: usize,
    sigmas: &[f32],
    seed: u64,
) -> Vec<Vec<f32>> {
    let options = CompileOptions {
        dtype: Some(fastflux::dtype::DType::F32),
        axes_dim: Some(vec![4, 6, 6]),
        ..CompileOptions::new(toy("flux-bfl.safetensors"))
    };
    let compiled = prepare(&options).unwrap();
    let runner = StagedRunner::new(&compiled.graph, &compiled.ckpt, 1, 10);
    // Row `p · per_prompt` is prompt p's first recorded input: its conditioning rows.
    let conditioning: Vec<Tensor> = set
        .tensors
        .iter()
        .map(|t| match t.shape.first() == Some(&set.samples) {
            false => t.clone(),
            true => {
                let row = t.data.len() / set.samples;
                let data = (0..10)
                    .flat_map(|p| &t.data[p * per_prompt * row..(p * per_prompt + 1) * row])
                    .copied()
                    .collect();
                let mut shape = t.shape.clone();
                shape[0] = 10;
                Tensor {
                    name: t.name.clone(),
                    shape,
                    data,
                }
            }
        })
        .collect();
    let per = 64 * 4;
    let mut x: Vec<f32> = (0..10)
        .flat_map(|p| {
            let mut rng = Rng::new(seed, p as u64);
            (0..per).map(move |_| rng.normal() as f32)
        })
        .collect();
    let mut trajectory = vec![x.clone()];
    for k in 0..sigmas.len() - 2 {
        let mut inputs = conditioning.clone();
        for t in &mut inputs {
            match t.name.as_str() {
                "hidden_states" => t.data.clone_from(&x),
                "timestep" => t.data.fill(sigmas[k]),
                _ => {}
            }
        }
        let v = runner.run(&inputs).unwrap().remove("latent").unwrap().data;
        let dt = sigmas[k + 1] - sigmas[k];
        x.iter_mut().zip(&v).for_each(|(x, v)| *x += dt * v);
        trajectory.push(x.clone());
    }
    trajectory
}

#[test]
fn recorded_set_round_trips_through_calib_save() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("traj.safetensors");
    let cond = toy("prompts.safetensors");
    let (steps, per_prompt, seed) = (6, 2, 7);
    let plan = compile_ok(&toy_args(&[
        "--plan",
        "--calib-cond",
        cond.to_str().unwrap(),
        "--calib-size",
        "8x8",
        "--calib-steps",
        &steps.to_string(),
        "--calib-per-prompt",
        &per_prompt.to_string(),
        "--seed",
        &seed.to_string(),
        "--calib-save",
        saved.to_str().unwrap(),
    ]));
    assert!(plan.contains("own trajectories: 10 prompts"), "{plan}");
    assert!(
        plan.contains("20 samples; reload it with --calib"),
        "{plan}"
    );

    let ckpt = FluxCheckpoint::open(&toy("flux-bfl.safetensors"), Some(vec![4, 6, 6])).unwrap();
    let set = InputSet::load(&saved, &ckpt.config).unwrap();
    assert_eq!(
        (set.samples, set.image_tokens, set.text_tokens),
        (20, 64, 8)
    );
    let sigmas = unshifted_sigmas(steps);
    let timestep = &set.get("timestep").unwrap().data;
    let hidden = &set.get("hidden_states").unwrap().data;
    let text = &set.get("encoder_hidden_states").unwrap().data;
    let prompts = fastflux::tensor::read_f32_tensors(&cond).unwrap();
    let prompt_text = &prompts
        .iter()
        .find(|t| t.name == "encoder_hidden_states")
        .unwrap();
    let per = 64 * 4;
    for p in 0..10 {
        for (j, &k) in recorded_steps(steps, per_prompt, p, 10).iter().enumerate() {
            let s = p * per_prompt + j;
            assert_eq!(timestep[s], sigmas[k], "sample {s}: prompt {p}, step {k}");
            assert_eq!(
                &text[s * 256..(s + 1) * 256],
                &prompt_text.data[p * 256..(p + 1) * 256],
                "sample {s} is conditioned on prompt {p}"
            );
            if k == 0 {
                let mut rng = Rng::new(seed, p as u64);
                let noise: Vec<f32> = (0..per).map(|_| rng.normal() as f32).collect();
                assert_eq!(&hidden[s * per..(s + 1) * per], &noise[..], "sample {s}");
            }
        }
    }
    // Every recorded input lies on the original model's own trajectory from that noise (a
    // sampler that ran a pruned model, or skipped a step, would leave it).
    let trajectories = original_trajectories(&set, per_prompt, &sigmas, seed);
    for p in 0..10 {
        for (j, &k) in recorded_steps(steps, per_prompt, p, 10).iter().enumerate() {
            let s = p * per_prompt + j;
            let want = &trajectories[k][p * per..(p + 1) * per];
            let error = relative_l2(&hidden[s * per..(s + 1) * per], want);
            assert!(
                error < 1e-5,
                "sample {s} (prompt {p}, step {k}): relative L2 {error:.2e} from the original model's trajectory"
            );
        }
    }
    // Reloaded with --calib, the set gives the same fits.
    let reloaded = compile_ok(&toy_args(&["--plan", "--calib", saved.to_str().unwrap()]));
    assert_eq!(ranking(&reloaded), ranking(&plan));
}

/// Without `--calib-steps`, a toy model without guidance embedding is sampled with 28 unshifted
/// steps (not schnell's 4), and the ten prompts' 4 inputs each cover every one of those steps:
/// the set reaches down to sigma 1/28, where a 4-step set stops at 0.25.
#[test]
fn the_default_trajectory_spans_the_whole_flow() {
    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("traj.safetensors");
    let cond = toy("prompts.safetensors");
    let plan = compile_ok(&toy_args(&[
        "--plan",
        "--calib-cond",
        cond.to_str().unwrap(),
        "--calib-size",
        "8x8",
        "--calib-save",
        saved.to_str().unwrap(),
    ]));
    assert!(
        plan.contains("28 Euler steps at 8x8 image tokens, 4 inputs recorded per prompt"),
        "{plan}"
    );
    let ckpt = FluxCheckpoint::open(&toy("flux-bfl.safetensors"), Some(vec![4, 6, 6])).unwrap();
    let set = InputSet::load(&saved, &ckpt.config).unwrap();
    assert_eq!(set.samples, 40);
    // np.linspace(1, 1/28, 28) in f64, cast to f32: every step's sigma, unshifted.
    let expected: BTreeSet<u32> = (0..28)
        .map(|k| (1.0 + (1.0 / 28.0 - 1.0) * k as f64 / 27.0) as f32)
        .map(f32::to_bits)
        .collect();
    let recorded: BTreeSet<u32> = set
        .get("timestep")
        .unwrap()
        .data
        .iter()
        .map(|t| t.to_bits())
        .collect();
    assert_eq!(recorded, expected);
}

#[test]
fn save_then_load_is_the_same_set() {
    let ckpt = FluxCheckpoint::open(&toy("flux-bfl.safetensors"), Some(vec![4, 6, 6])).unwrap();
    let spec = SyntheticSpec {
        samples: 3,
        image_tokens: 12,
        text_tokens: 5,
        seed: 2,
    };
    let set = InputSet::synthetic(&ckpt.config, &spec).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.safetensors");
    set.save(&path, &BTreeMap::new()).unwrap();
    assert_eq!(InputSet::load(&path, &ckpt.config).unwrap(), set);
}

#[test]
fn the_summary_says_what_the_fits_were_judged_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let out = out.to_str().unwrap();
    let synthetic = compile_ok(&toy_args(&["-o", out, "--replace", "double.1"]));
    assert!(
        synthetic.contains("synthetic random inputs: the fits were judged on random")
            && synthetic.contains("--calib-cond"),
        "{synthetic}"
    );
    let calib = toy("calib.safetensors");
    let args = [
        "-o",
        out,
        "--replace",
        "double.1",
        "--calib",
        calib.to_str().unwrap(),
    ];
    let file = compile_ok(&toy_args(&args));
    assert!(
        file.contains("calibration file") && !file.contains("random"),
        "{file}"
    );
    let cond = toy("prompts.safetensors");
    let args = [
        "-o",
        out,
        "--prune",
        "0.2",
        "--calib-cond",
        cond.to_str().unwrap(),
        "--calib-size",
        "8x8",
        "--calib-steps",
        "4",
        "--calib-per-prompt",
        "2",
    ];
    let traj = compile_ok(&toy_args(&args));
    assert!(
        traj.contains("2 blocks replaced (20 calibration samples)"),
        "{traj}"
    );
    assert!(
        traj.contains("own trajectories") && !traj.contains("random"),
        "{traj}"
    );
}

#[test]
fn calib_cond_needs_a_brll_flag_and_conflicts_with_calib() {
    let cond = toy("prompts.safetensors");
    let cond = cond.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.onnx");
    let out = out.to_str().unwrap();
    let alone = compile(&toy_args(&[
        "-o",
        out,
        "--calib-cond",
        cond,
        "--calib-size",
        "8x8",
    ]));
    assert_refused(&alone, &["--prune or --replace"]);
    let calib = toy("calib.safetensors");
    let both = compile(&toy_args(&[
        "-o",
        out,
        "--prune",
        "0.2",
        "--calib-cond",
        cond,
        "--calib-size",
        "8x8",
        "--calib",
        calib.to_str().unwrap(),
    ]));
    assert!(
        !both.success && both.stderr.contains("cannot be used with"),
        "{}",
        both.stderr
    );
    let unsized_ = compile(&toy_args(&[
        "-o",
        out,
        "--prune",
        "0.2",
        "--calib-cond",
        cond,
    ]));
    assert!(
        !unsized_.success && unsized_.stderr.contains("--calib-size"),
        "{}",
        unsized_.stderr
    );
    let data = format!("{out}.data");
    let onto = compile(&toy_args(&[
        "-o",
        out,
        "--replace",
        "double.1",
        "--calib-save",
        &data,
    ]));
    assert_refused(&onto, &["--calib-save", "is also the ONNX output"]);
    let checkpoint = toy("flux-bfl.safetensors");
    let args = ["-o", out, "--replace", "double.1", "--calib-save"];
    let onto_input = compile(&toy_args(
        &[&args[..], &[checkpoint.to_str().unwrap()]].concat(),
    ));
    assert_refused(&onto_input, &["would overwrite the input checkpoint"]);
    assert!(listing(dir.path()).is_empty());
}
