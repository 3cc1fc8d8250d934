//! BRLL end to end: choose the blocks, calibrate and fit them through ONNX Runtime, rewrite the
//! graph, and verify the pruned model against the original on held-out inputs of the
//! calibration's source.

use super::calibrate::{
    BlockReport, CalibrationOptions, FitKind, MemoryPlan, fit_sequentially, rank_blocks,
    staged_runner,
};
use super::effect;
use super::select::{SelectRule, choose, parse_replace, prune_count};
use crate::checkpoint::FluxCheckpoint;
use crate::error::{Error, Result};
use crate::inputs::{InputSet, SyntheticSpec, held_out_seed};
use crate::ir::Graph;
use crate::ir::cost::Tokens;
use crate::metrics::{cosine, relative_l2};
use crate::passes::brll::apply_fits;
use crate::passes::retype;
use crate::runtime::ExecutionProvider;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub enum Selection {
    /// `--replace double.4,single.10-13`
    Replace(String),
    /// `--prune FRACTION`: that share of all blocks, those `SelectRule` ranks best.
    Prune(f64),
}

#[derive(Clone, Debug)]
pub struct BrllOptions {
    pub selection: Selection,
    /// `--select`: how `--prune` ranks the blocks.
    pub rule: SelectRule,
    /// `--calib FILE`; synthetic inputs of `synthetic`'s sizes otherwise.
    pub calib: Option<PathBuf>,
    /// Calibration inputs already made (by the driver: `--calib-cond` trajectories, or a set
    /// it also saved with `--calib-save`); used instead of `calib` and the synthetic ones.
    pub inputs: Option<InputSet>,
    pub synthetic: SyntheticSpec,
    pub calibration: CalibrationOptions,
    /// `--verify`, on held-out inputs of the calibration's source (see [`held_out_inputs`]).
    pub verify: bool,
    /// `--verify-inputs FILE`: held-out inputs for `--verify`, whatever the calibration's source.
    pub verify_inputs: Option<PathBuf>,
    /// Held-out inputs the driver made with `inputs` (the `--calib-cond` trajectories' inputs
    /// at steps not recorded for calibration); `verify_inputs` overrides them.
    pub held_out: Option<HeldOut>,
}

/// `--verify`'s held-out inputs and where they came from.
#[derive(Clone, Debug)]
pub struct HeldOut {
    pub inputs: InputSet,
    pub source: HeldOutSource,
}

/// Where `--verify`'s held-out inputs came from (the summary states it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeldOutSource {
    /// `--verify-inputs FILE`.
    File(PathBuf),
    /// Synthetic inputs of the synthetic calibration set's sizes, drawn with `seed`
    /// (`inputs::held_out_seed` of the calibration's `calibration_seed`).
    Synthetic { seed: u64, calibration_seed: u64 },
    /// The `--calib-cond` trajectories' inputs at steps not recorded for calibration
    /// (`sample::trajectories::held_out_steps`): up to `per_prompt` of the `steps - recorded`
    /// steps each of the `prompts` trajectories did not record.
    Trajectories {
        prompts: usize,
        per_prompt: usize,
        recorded: usize,
        steps: usize,
    },
}

/// What `--verify` measured, on what, and where it ran.
#[derive(Clone, Debug)]
pub struct Verification {
    /// Relative L2 error and cosine similarity of the pruned model's output to the original's.
    pub relative_l2: f64,
    pub cosine: f64,
    /// Held-out samples it ran.
    pub samples: usize,
    pub held_out: HeldOutSource,
    /// The execution provider ONNX Runtime ran both models on (resolved: never `Auto`).
    pub provider: ExecutionProvider,
}

pub struct BrllOutcome {
    /// Every block's fit on the original activations (only when `--prune` ranked them).
    pub ranking: Option<Ranking>,
    /// The replaced blocks, fitted sequentially.
    pub replaced: Vec<BlockReport>,
    /// `--verify`: the pruned model's output against the original's on held-out inputs.
    pub verification: Option<Verification>,
    pub calibration_samples: usize,
    /// How the sequential fit held its activations.
    pub memory: MemoryPlan,
    /// The calibration set's image and text tokens per sample.
    pub calibration_tokens: Tokens,
}

/// Every block's fit on the original model's activations, and what ranking them cost.
pub struct Ranking {
    pub reports: Vec<BlockReport>,
    pub rule: SelectRule,
    /// Block runs: the ranking pass's own (one per block, over the `samples` calibration
    /// samples), and the extra ones measuring the output effect took, each over
    /// `effect_samples` of them (0 with `--select local`).
    pub block_runs: usize,
    pub extra_block_runs: usize,
    /// Runs of the final layer (the stages around the blocks) the effect added.
    pub extra_other_runs: usize,
    /// Calibration samples (of `samples`) the extra runs carry: the output effect's sample.
    pub effect_samples: usize,
    pub samples: usize,
    /// How the ranking walk held its activations (samples per run, the effect's groups).
    pub memory: MemoryPlan,
    pub seconds: f64,
}

/// The f32 model that calibration runs (ONNX Runtime's CPU kernels compute in f32): `graph`,
/// the lifted model, retyped.
pub fn calibration_graph(graph: &Graph) -> Result<Graph> {
    retype::to_f32(graph)
}

/// The calibration set `options` ask for: `inputs` if made already, else `--calib`, else synthetic.
pub fn calibration_inputs(ckpt: &FluxCheckpoint, options: &BrllOptions) -> Result<InputSet> {
    if let Some(inputs) = &options.inputs {
        return Ok(inputs.clone());
    }
    match &options.calib {
        Some(path) => InputSet::load(path, &ckpt.config),
        None => InputSet::synthetic(&ckpt.config, &options.synthetic),
    }
}

/// Fits every block of `graph`, the lifted model before any rewrite (no LoRA folded in), on
/// the original activations, and measures their output effect unless `--select local` (the
/// `--plan` ranking table).
pub fn rank(ckpt: &FluxCheckpoint, graph: &Graph, options: &BrllOptions) -> Result<Ranking> {
    let graph = calibration_graph(graph)?;
    let inputs = calibration_inputs(ckpt, options)?;
    rank_calibrated(ckpt, &graph, &inputs, options)
}

fn rank_calibrated(
    ckpt: &FluxCheckpoint,
    graph: &Graph,
    inputs: &InputSet,
    options: &BrllOptions,
) -> Result<Ranking> {
    let start = std::time::Instant::now();
    let measure = options.rule == SelectRule::Output;
    let reports = rank_blocks(graph, ckpt, inputs, &options.calibration, measure)?;
    let blocks: Vec<_> = graph.blocks().into_iter().collect();
    let memory = MemoryPlan::new(
        graph,
        inputs,
        options.calibration.limits(),
        measure.then_some(blocks.len()),
    );
    let (extra_block_runs, extra_other_runs) = if measure {
        effect::extra_runs(&crate::runtime::staged::plan_stages(graph), &blocks)
    } else {
        (0, 0)
    };
    Ok(Ranking {
        reports,
        rule: options.rule,
        block_runs: blocks.len(),
        extra_block_runs,
        extra_other_runs,
        effect_samples: memory.effect.map_or(0, |e| e.samples),
        samples: inputs.samples,
        memory,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Chooses, fits and replaces blocks in `graph`, the lifted model being exported (before any
/// other rewrite, no LoRA folded in); calibration runs it retyped to f32.
pub fn run(ckpt: &FluxCheckpoint, graph: &mut Graph, options: &BrllOptions) -> Result<BrllOutcome> {
    // Chosen first: a calibration that has no held-out source fails before the slow work.
    let held_out = match options.verify {
        true => Some(held_out_inputs(ckpt, options)?),
        false => None,
    };
    let calib_graph = calibration_graph(graph)?;
    let inputs = calibration_inputs(ckpt, options)?;
    let (chosen, ranking) = match &options.selection {
        Selection::Replace(spec) => (parse_replace(spec, &ckpt.config)?, None),
        Selection::Prune(fraction) => {
            let count = prune_count(*fraction, calib_graph.blocks().len())?;
            let ranking = rank_calibrated(ckpt, &calib_graph, &inputs, options)?;
            (
                choose(&ranking.reports, count, options.rule)?,
                Some(ranking),
            )
        }
    };
    let replaced = if chosen.is_empty() {
        Vec::new()
    } else {
        fit_sequentially(&calib_graph, ckpt, &inputs, &chosen, &options.calibration)?
    };
    let fits: Vec<_> = replaced.iter().map(|r| r.fit.clone()).collect();
    apply_fits(graph, &fits)?;
    let verification = match &held_out {
        Some(held_out) => {
            let mut pruned = calib_graph.clone();
            apply_fits(&mut pruned, &fits)?;
            Some(verify_on(
                ckpt,
                &calib_graph,
                &pruned,
                held_out,
                &options.calibration,
            )?)
        }
        None => None,
    };
    Ok(BrllOutcome {
        ranking,
        replaced,
        verification,
        calibration_samples: inputs.samples,
        memory: MemoryPlan::new(&calib_graph, &inputs, options.calibration.limits(), None),
        calibration_tokens: inputs.tokens(),
    })
}

/// `--verify`'s held-out inputs, from the calibration's source: `--verify-inputs FILE` when
/// given; else those the driver made with the calibration set (`held_out`: the `--calib-cond`
/// trajectories' unrecorded steps); else, for a synthetic calibration, synthetic inputs of its
/// sizes with another seed. A `--calib FILE` calibration has no second sample of its source to
/// draw from, and holding part of the file out would make `--verify` change the fits, so it
/// needs `--verify-inputs`.
pub fn held_out_inputs(ckpt: &FluxCheckpoint, options: &BrllOptions) -> Result<HeldOut> {
    if let Some(path) = &options.verify_inputs {
        return Ok(HeldOut {
            inputs: InputSet::load(path, &ckpt.config)?,
            source: HeldOutSource::File(path.clone()),
        });
    }
    if let Some(held_out) = &options.held_out {
        return Ok(held_out.clone());
    }
    if let Some(calib) = &options.calib {
        return Err(unverifiable(calib));
    }
    let spec = SyntheticSpec {
        seed: held_out_seed(options.synthetic.seed),
        ..options.synthetic
    };
    Ok(HeldOut {
        inputs: InputSet::synthetic(&ckpt.config, &spec)?,
        source: HeldOutSource::Synthetic {
            seed: spec.seed,
            calibration_seed: options.synthetic.seed,
        },
    })
}

/// Refuses `--verify` of a `--calib FILE` calibration without `--verify-inputs` (see
/// [`held_out_inputs`]); the driver asks before it does anything slow or writes anything.
pub fn refuse_calibration_file_alone(options: &BrllOptions) -> Result<()> {
    let given = options.verify_inputs.is_some() || options.held_out.is_some();
    match &options.calib {
        Some(calib) if options.verify && !given => Err(unverifiable(calib)),
        _ => Ok(()),
    }
}

fn unverifiable(calib: &std::path::Path) -> Error {
    Error::Usage(format!(
        "--verify judges the pruned model on held-out samples from the calibration's source, and \
         the calibration file {} is all the samples of it there are (fastflux does not split it: \
         holding samples out would change the fits): pass --verify-inputs FILE with other \
         samples in the --calib format (e.g. --calib-save of a --calib-cond run on other prompts)",
        calib.display()
    ))
}

/// `--verify`: runs `original` and `pruned` (f32 models) stage by stage on the held-out inputs
/// [`held_out_inputs`] chooses and compares the pruned model's output to the original's.
pub fn verify(
    ckpt: &FluxCheckpoint,
    original: &Graph,
    pruned: &Graph,
    options: &BrllOptions,
) -> Result<Verification> {
    let held_out = held_out_inputs(ckpt, options)?;
    verify_on(ckpt, original, pruned, &held_out, &options.calibration)
}

fn verify_on(
    ckpt: &FluxCheckpoint,
    original: &Graph,
    pruned: &Graph,
    held_out: &HeldOut,
    calibration: &CalibrationOptions,
) -> Result<Verification> {
    let run = |graph: &Graph| -> Result<(Vec<f32>, ExecutionProvider)> {
        let runner = staged_runner(graph, ckpt, calibration, &held_out.inputs)?;
        let mut outputs = runner.run(&held_out.inputs.tensors)?;
        let latent = outputs
            .remove("latent")
            .ok_or_else(|| Error::Internal("the model has no `latent` output".into()))?;
        Ok((latent.data, runner.backend().provider()))
    };
    let (reference, provider) = run(original)?;
    let reference: Vec<f64> = reference.into_iter().map(f64::from).collect();
    let (output, _) = run(pruned)?;
    Ok(Verification {
        relative_l2: relative_l2(&output, &reference),
        cosine: cosine(&output, &reference),
        samples: held_out.inputs.samples,
        held_out: held_out.source.clone(),
        provider,
    })
}

impl Default for BrllOptions {
    fn default() -> Self {
        Self {
            selection: Selection::Prune(0.0),
            rule: SelectRule::default(),
            calib: None,
            inputs: None,
            synthetic: SyntheticSpec::default(),
            calibration: CalibrationOptions {
                kind: FitKind::Plain,
                ridge: super::lstsq::DEFAULT_RIDGE,
                batch: 4,
                threads: 0,
                provider: ExecutionProvider::Cpu,
                show_progress: false,
                effect_samples: 0,
                memory_budget: crate::runtime::MemoryBudget::from_machine(),
            },
            verify: false,
            verify_inputs: None,
            held_out: None,
        }
    }
}
