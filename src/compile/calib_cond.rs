//! Calibration from trajectories (`--calib-cond`): the original model, retyped to f32 and run
//! stage by stage in ONNX Runtime (`StagedRunner`, one block's weights at a time), samples each
//! prompt of a conditioning file from seeded noise; the inputs it sees at steps spread over each
//! trajectory (`sample::trajectories`) become the calibration set, and with `--verify` the inputs
//! at steps it did not record become the held-out set. Also `--calib-save` (the set, whatever
//! its source, written in the `--calib` format) and the record of where the set came from and
//! which execution provider calibration runs on, which the summary states.

use super::guard;
use crate::checkpoint::FluxCheckpoint;
use crate::error::{Error, Result};
use crate::fit::brll::{
    BrllOptions, HeldOut, HeldOutSource, calibration_inputs, refuse_calibration_file_alone,
};
use crate::inputs::{Conditioning, Signature};
use crate::ir::Graph;
use crate::ir::cost::Tokens;
use crate::passes::retype;
use crate::runtime::ExecutionProvider;
use crate::runtime::staged::{self, plan_stages};
use crate::sample::euler::resolve_guidance;
use crate::sample::trajectories::{Recording, record};
use crate::sample::{Grid, SampleSpec, Schedule, StagedDenoiser};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

/// `--calib-cond COND --calib-size HxW --calib-steps N --calib-per-prompt K`.
#[derive(Clone, Debug)]
pub struct TrajectorySpec {
    pub cond: PathBuf,
    pub grid: Grid,
    /// Euler steps per trajectory (`--calib-steps`, default [`DEFAULT_TRAJECTORY_STEPS`]).
    pub steps: usize,
    /// Inputs recorded per prompt.
    pub per_prompt: usize,
    /// Prompt row p starts from the noise of `Rng::new(seed, p)`.
    pub seed: u64,
    /// `--calib-guidance` (guidance models only; default 3.5).
    pub guidance: Option<f32>,
}

/// Euler steps of a calibration trajectory unless `--calib-steps` says otherwise, for every
/// model: FLUX.1-dev's sampling default. Not a model's own step count (4 for FLUX.1-schnell):
/// the set should span the whole flow the model is used over, and an `N`-step schedule's
/// smallest sigma is about `1/N`, so 4 steps never sample below 0.25, and with
/// `--calib-per-prompt` 4 every prompt records the same 4 noise levels; a finer trajectory also
/// follows the flow more closely. The finer trajectory costs model evaluations (prompts × steps),
/// not fitting: the set still holds prompts × `--calib-per-prompt` samples. On the trained toy
/// (BENCHMARKS.md) 4 steps chose the second-best pair of blocks for `--prune 0.2` and 28 the best.
pub const DEFAULT_TRAJECTORY_STEPS: usize = 28;

/// Where the calibration set came from (the summary says it).
#[derive(Clone, Debug)]
pub enum CalibrationSource {
    /// Random inputs (`inputs::InputSet::synthetic`).
    Synthetic,
    /// `--calib FILE`.
    File(PathBuf),
    /// `--calib-cond`: the model's own trajectories.
    Trajectories {
        cond: PathBuf,
        prompts: usize,
        per_prompt: usize,
        steps: usize,
        grid: Grid,
        seconds: f64,
    },
}

/// What calibration was fed, where it ran, and what `--calib-save` wrote.
#[derive(Clone, Debug)]
pub struct CalibrationRecord {
    pub source: CalibrationSource,
    /// `--calib-save`: the path and the number of samples written.
    pub saved: Option<(PathBuf, usize)>,
    /// The ONNX Runtime execution provider that trajectory sampling, ranking and fitting run
    /// on: `--execution-provider` resolved (never `Auto`).
    pub provider: ExecutionProvider,
}

/// Makes the calibration set of `brll` for `graph` (the lifted base model, no rewrite, no LoRA)
/// when it must be made here — trajectories, or any set `save` is to write — and stores it in
/// the returned options, with the trajectories' held-out inputs when `brll.verify` needs them;
/// otherwise returns them as they are.
pub fn prepare(
    ckpt: &FluxCheckpoint,
    graph: &Graph,
    brll: &BrllOptions,
    trajectories: Option<&TrajectorySpec>,
    save: Option<&PathBuf>,
) -> Result<(BrllOptions, CalibrationRecord)> {
    let mut brll = brll.clone();
    // Every ONNX Runtime session resolves `--execution-provider` with this same `resolve` (it
    // asks the loaded library whether it has CUDA, and a CUDA session that cannot register
    // fails instead of falling back), so this is the provider they run on. The options keep the
    // request: sandwich training's candle resolves it on its own (its CUDA is a build feature).
    let provider = brll.calibration.provider.resolve()?;
    refuse_calibration_file_alone(&brll)?;
    if let Some(path) = save {
        guard::refuse_to_overwrite_inputs(ckpt, path)?;
        let inputs = [brll.calib.as_ref(), trajectories.map(|t| &t.cond)];
        if inputs.into_iter().flatten().any(|i| same_file(i, path)) {
            return Err(Error::Usage(format!(
                "--calib-save {} would overwrite a calibration input; choose another path",
                path.display()
            )));
        }
    }
    let source = match (trajectories, &brll.calib) {
        (Some(spec), _) => {
            let start = Instant::now();
            let hold_out = brll.verify && brll.verify_inputs.is_none();
            let (recording, prompts, steps) =
                sample_trajectories(ckpt, graph, &brll, spec, hold_out)?;
            brll.inputs = Some(recording.calibration);
            brll.held_out = recording.held_out.map(|inputs| HeldOut {
                source: HeldOutSource::Trajectories {
                    prompts,
                    // Every prompt holds out as many steps (`held_out_steps`).
                    per_prompt: inputs.samples / prompts.max(1),
                    recorded: spec.per_prompt,
                    steps,
                },
                inputs,
            });
            CalibrationSource::Trajectories {
                cond: spec.cond.clone(),
                prompts,
                per_prompt: spec.per_prompt,
                steps,
                grid: spec.grid,
                seconds: start.elapsed().as_secs_f64(),
            }
        }
        (None, Some(path)) => CalibrationSource::File(path.clone()),
        (None, None) => CalibrationSource::Synthetic,
    };
    let saved = match save {
        Some(path) => {
            let set = calibration_inputs(ckpt, &brll)?;
            let mut metadata = BTreeMap::new();
            metadata.insert("fastflux.calibration".to_string(), describe(&source));
            set.save(path, &metadata)?;
            let samples = set.samples;
            brll.inputs = Some(set);
            Some((path.clone(), samples))
        }
        None => None,
    };
    let record = CalibrationRecord {
        source,
        saved,
        provider,
    };
    Ok((brll, record))
}

/// Samples every prompt with the original model and records the inputs along the way, and with
/// `hold_out` those at steps not recorded.
fn sample_trajectories(
    ckpt: &FluxCheckpoint,
    graph: &Graph,
    brll: &BrllOptions,
    spec: &TrajectorySpec,
    hold_out: bool,
) -> Result<(Recording, usize, usize)> {
    let signature = Signature::of(&ckpt.config);
    let cond = Conditioning::load(&spec.cond, &signature)?;
    let guidance = resolve_guidance(&signature, spec.guidance)
        .map_err(|e| Error::Usage(format!("--calib-guidance: {e}")))?;
    let steps = spec.steps;
    let sample_spec = SampleSpec {
        grid: spec.grid,
        steps,
        seed: spec.seed,
        guidance,
        schedule: Schedule::for_model(signature.guidance),
    };
    let f32_graph = retype::to_f32(graph)?;
    let options = &brll.calibration;
    let (threads, provider) = (options.threads, options.provider);
    // Prompts per stage run: `--calib-batch`, fewer where their working set exceeds the budget.
    let tokens = Tokens {
        image: spec.grid.tokens(),
        text: cond.text_tokens,
    };
    let working = staged::working_bytes(&f32_graph, &plan_stages(&f32_graph), tokens);
    let batch = options.memory_budget.samples(working, options.batch.max(1));
    let mut model = StagedDenoiser::original(&f32_graph, ckpt, threads, provider, batch)?;
    let bar = match options.show_progress {
        true => ProgressBar::new(steps as u64),
        false => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "trajectories of {} prompts {{bar:30}} {{pos}}/{{len}} steps ({{per_sec}}, eta {{eta}})",
            cond.prompts
        ))
        .expect("valid template"),
    );
    let recording = record(
        &mut model,
        &cond,
        &sample_spec,
        spec.per_prompt,
        hold_out,
        &bar,
    )?;
    bar.finish_and_clear();
    Ok((recording, cond.prompts, steps))
}

/// One line on where a calibration set came from.
pub fn describe(source: &CalibrationSource) -> String {
    match source {
        CalibrationSource::Synthetic => "synthetic random inputs".into(),
        CalibrationSource::File(path) => format!("the calibration file {}", path.display()),
        CalibrationSource::Trajectories {
            cond,
            prompts,
            per_prompt,
            steps,
            grid,
            ..
        } => format!(
            "the original model's own trajectories: {prompts} prompts of {}, {steps} Euler \
             steps at {grid} image tokens, {per_prompt} inputs recorded per prompt",
            cond.display()
        ),
    }
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
