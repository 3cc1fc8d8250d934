//! The compile driver as library steps: `lift_checkpoint` (checkpoint → IR), `fit_brll` (the
//! BRLL rewrite), `emit_safetensors`, `fold_loras` and `export` (IR → ONNX). `compile` runs
//! them in that order behind the checks that protect the user's files and returns what each did
//! as data (`CompileOutcome`), which `report` renders; `plan` inspects without writing.

pub mod calib_cond;
mod guard;
mod plan;
mod st;

pub use calib_cond::{
    CalibrationRecord, CalibrationSource, DEFAULT_TRAJECTORY_STEPS, TrajectorySpec,
};
pub use plan::{PlanOutcome, parameters_by_part, plan};
pub use st::{StSummary, train_sandwiches};

use crate::checkpoint::FluxCheckpoint;
use crate::checkpoint::diffusers_config;
use crate::checkpoint::lora::LoraSpec;
use crate::dtype::DType;
use crate::emit::{self, Emitted};
use crate::error::{Error, Result};
use crate::fit::brll::{self as brll_run, BrllOptions, BrllOutcome};
use crate::ir::Graph;
use crate::ir::cost::Tokens;
use crate::lift::{self, LiftOptions};
use crate::onnx::{self, ExportOptions, ExportSummary, Target};
use crate::passes::{self, collapse::CollapseReport, lora::LoraReport};
use crate::train::StOptions;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub checkpoint: PathBuf,
    pub output: Option<PathBuf>,
    pub dtype: Option<DType>,
    pub axes_dim: Option<Vec<usize>>,
    pub target: Target,
    pub show_progress: bool,
    /// `--replace` / `--prune`: BRLL and its calibration.
    pub brll: Option<BrllOptions>,
    /// `--lora FILE[:SCALE]`, folded in the order given.
    pub loras: Vec<LoraSpec>,
    /// `--lora-allow-unmatched`: skip LoRA keys that match no weight instead of failing.
    pub lora_allow_unmatched: bool,
    /// `--emit-safetensors FILE`: also write the BRLL-rewritten base model (before LoRA) as a
    /// checkpoint in the input's naming (see `emit`).
    pub emit_safetensors: Option<PathBuf>,
    /// `--calib-cond`: calibrate on the original model's own sampling trajectories.
    pub calib_cond: Option<TrajectorySpec>,
    /// `--calib-save FILE`: write the calibration set in the `--calib` format.
    pub calib_save: Option<PathBuf>,
    /// `--st-steps` and its flags: sandwich training after BRLL (`None` or 0 steps: none).
    pub st: Option<StOptions>,
    /// `--st-save FILE`: keep the trained adapters as a LoRA file.
    pub st_save: Option<PathBuf>,
}

impl CompileOptions {
    /// Compiling `checkpoint` with every choice at its default: no output, the checkpoint's
    /// dtype, axes from the checkpoint, the CUDA target, no BRLL, no LoRA, no progress bar.
    pub fn new(checkpoint: impl Into<PathBuf>) -> Self {
        Self {
            checkpoint: checkpoint.into(),
            output: None,
            dtype: None,
            axes_dim: None,
            target: Target::Cuda,
            show_progress: false,
            brll: None,
            loras: Vec::new(),
            lora_allow_unmatched: false,
            emit_safetensors: None,
            calib_cond: None,
            calib_save: None,
            st: None,
            st_save: None,
        }
    }
}

/// The model between steps: the checkpoint it reads from and the graph the steps rewrite.
pub struct Compiled {
    pub ckpt: FluxCheckpoint,
    pub graph: Graph,
    pub dtype: DType,
    /// What the LoRA pass folded, once `fold_loras` ran with `--lora` given.
    pub lora: Option<LoraReport>,
}

/// What BRLL did, with the costs of the model before and after it.
pub struct BrllSummary {
    pub outcome: BrllOutcome,
    /// Parameters of the graph before and after the rewrite.
    pub parameters: (usize, usize),
    /// FLOPs per image token before and after, at `tokens`.
    pub flops_per_image_token: (f64, f64),
    /// The calibration set's token counts per sample.
    pub tokens: Tokens,
    /// What the fits were calibrated on, and what `--calib-save` wrote.
    pub calibration: CalibrationRecord,
}

impl BrllSummary {
    fn new(
        original: &Graph,
        pruned: &Graph,
        outcome: BrllOutcome,
        calibration: CalibrationRecord,
    ) -> Self {
        let tokens = outcome.calibration_tokens;
        Self {
            outcome,
            parameters: (original.parameters(), pruned.parameters()),
            flops_per_image_token: (
                original.flops_per_image_token(tokens),
                pruned.flops_per_image_token(tokens),
            ),
            tokens,
            calibration,
        }
    }
}

/// What `compile` wrote and how long it took.
pub struct CompileOutcome {
    pub output: PathBuf,
    /// Parameters the checkpoint stores for the model, before any pass.
    pub parameters_before: usize,
    pub dtype: DType,
    pub export: ExportSummary,
    pub rewrites: ExportRewrites,
    pub lora: Option<LoraReport>,
    pub emitted: Option<Emitted>,
    pub brll: Option<BrllSummary>,
    pub st: Option<StSummary>,
    pub seconds: f64,
}

/// Opens the checkpoint, lifts it and folds the LoRA deltas: the unpruned model, unwritten.
pub fn prepare(options: &CompileOptions) -> Result<Compiled> {
    let mut compiled = lift_checkpoint(options)?;
    fold_loras(&mut compiled, options)?;
    Ok(compiled)
}

/// Opens the checkpoint and lifts it: everything short of the passes and writing.
pub fn lift_checkpoint(options: &CompileOptions) -> Result<Compiled> {
    let ckpt = FluxCheckpoint::open(&options.checkpoint, options.axes_dim.clone())?;
    let dtype = options.dtype.unwrap_or_else(|| lift::default_dtype(&ckpt));
    let graph = lift::lift(&ckpt, LiftOptions { dtype })?;
    Ok(Compiled {
        ckpt,
        graph,
        dtype,
        lora: None,
    })
}

/// Chooses, calibrates and fits the blocks `options` asks for and rewrites the graph.
pub fn fit_brll(compiled: &mut Compiled, options: &BrllOptions) -> Result<BrllOutcome> {
    brll_run::run(&compiled.ckpt, &mut compiled.graph, options)
}

/// Writes the model the graph computes as a checkpoint in the input's naming (`emit`): to be
/// called before `fold_loras`, since that checkpoint is the base model sandwich training loads.
pub fn emit_safetensors(compiled: &Compiled, path: &Path) -> Result<Emitted> {
    emit::write(path, &compiled.ckpt, &compiled.graph)
}

/// Folds `options.loras` into the graph's weights, recording what was folded in `compiled.lora`.
pub fn fold_loras(compiled: &mut Compiled, options: &CompileOptions) -> Result<()> {
    compiled.lora = passes::lora::run(
        &mut compiled.graph,
        &compiled.ckpt.config,
        &options.loras,
        options.lora_allow_unmatched,
    )?;
    Ok(())
}

/// What the export-time rewrites did to the copy of the graph that was exported.
#[derive(Clone, Debug, Default)]
pub struct ExportRewrites {
    pub collapse: CollapseReport,
    /// Clip nodes of an f16 export (`passes::f16_range`).
    pub f16_clamps: usize,
}

/// Lowers the graph for `options.target` and writes `output`, `output.data` and diffusers'
/// `config.json` beside them.
pub fn export(
    compiled: &Compiled,
    output: &Path,
    options: &CompileOptions,
) -> Result<ExportSummary> {
    Ok(export_rewritten(compiled, output, options, &lora_labels(options)?)?.0)
}

/// The folded LoRAs as the exported model's metadata names them: `NAME@sha256:HASH:SCALE` each,
/// the file's name and content rather than its path, so that the same files give the same
/// model bytes whichever folder they are in.
fn lora_labels(options: &CompileOptions) -> Result<Vec<String>> {
    options.loras.iter().map(lora_label).collect()
}

fn lora_label(lora: &LoraSpec) -> Result<String> {
    let name = lora.path.file_name().unwrap_or(lora.path.as_os_str());
    let hash = crate::io::digest::sha256_hex(&lora.path)?;
    Ok(format!(
        "{}@sha256:{hash}:{}",
        name.to_string_lossy(),
        lora.scale
    ))
}

/// `export`, also saying what the export-time rewrites did.
fn export_rewritten(
    compiled: &Compiled,
    output: &Path,
    options: &CompileOptions,
    loras: &[String],
) -> Result<(ExportSummary, ExportRewrites)> {
    // No source path: the same checkpoint content and flags give the same bytes, wherever
    // the checkpoint lies (a file written by --emit-safetensors compiles to what its source did).
    let mut metadata = vec![
        (
            "fastflux.config".to_owned(),
            format!("{:?}", compiled.ckpt.config),
        ),
        ("fastflux.dtype".to_owned(), compiled.dtype.to_string()),
    ];
    if !loras.is_empty() {
        metadata.push(("fastflux.lora".to_owned(), loras.join(" ")));
    }
    let config = diffusers_config::render(
        &compiled.ckpt.config,
        compiled.ckpt.checkpoint.config_json.as_ref(),
        compiled.ckpt.origin(),
        &compiled.graph.replaced_blocks(),
    )?;
    let export = ExportOptions {
        target: options.target,
        show_progress: options.show_progress,
        metadata,
        beside: vec![(diffusers_config::CONFIG_FILE.to_owned(), config)],
    };
    // Export-time rewrites, on a copy: the IR that calibration and `--verify` ran stays as it is.
    let mut graph = compiled.graph.clone();
    let rewrites = ExportRewrites {
        collapse: passes::collapse::run(&mut graph, &compiled.ckpt)?,
        f16_clamps: passes::f16_range::run(&mut graph)?,
    };
    let summary = onnx::export(&graph, &compiled.ckpt, output, &export)?;
    Ok((summary, rewrites))
}

/// Compiles and writes the model: the steps in order, after checking that no output would
/// overwrite an input or another output.
pub fn compile(options: &CompileOptions) -> Result<CompileOutcome> {
    let start = Instant::now();
    let output = options.output.as_deref().ok_or_else(|| {
        Error::Usage("no output path: pass -o OUT.onnx (or --plan to only inspect)".into())
    })?;
    let mut compiled = lift_checkpoint(options)?;
    guard::refuse_to_overwrite_inputs(&compiled.ckpt, output)?;
    if let Some(emit_path) = &options.emit_safetensors {
        guard::refuse_to_overwrite_inputs(&compiled.ckpt, emit_path)?;
        guard::refuse_emit_onto_output(emit_path, output)?;
    }
    if let Some(save) = &options.calib_save {
        guard::refuse_onto_output("--calib-save", save, output)?;
    }
    if let Some(save) = &options.st_save {
        guard::refuse_to_overwrite_inputs(&compiled.ckpt, save)?;
        guard::refuse_onto_output("--st-save", save, output)?;
    }
    let st_options = options.st.as_ref().filter(|st| st.steps > 0);
    if st_options.is_some() && options.brll.is_none() {
        return Err(Error::Usage(
            "--st-steps trains the blocks around replaced ones: pass --replace or --prune".into(),
        ));
    }
    let (brll, mut st) = match &options.brll {
        Some(brll) => {
            let original = compiled.graph.clone();
            let (brll, calibration) = calib_cond::prepare(
                &compiled.ckpt,
                &compiled.graph,
                brll,
                options.calib_cond.as_ref(),
                options.calib_save.as_ref(),
            )?;
            let outcome = fit_brll(&mut compiled, &brll)?;
            let st = match st_options {
                Some(st) => Some(train_sandwiches(
                    &mut compiled,
                    &original,
                    &brll,
                    st,
                    options.st_save.as_deref(),
                )?),
                None => None,
            };
            let summary = BrllSummary::new(&original, &compiled.graph, outcome, calibration);
            (Some(summary), st)
        }
        None => (None, None),
    };
    // The checkpoint that sandwich training loads is the rewritten base model: no LoRA in it.
    let emitted = match &options.emit_safetensors {
        Some(path) => Some(emit_safetensors(&compiled, path)?),
        None => None,
    };
    // LoRA deltas meet the final weights: those BRLL fitted, and none of those it removed.
    // Sandwich training's adapters come first, as a `--lora` of the emitted checkpoint would.
    let mut labels = lora_labels(options)?;
    let mut folding = options.clone();
    if let (Some(st), Some(st_options)) = (&st, st_options) {
        // Saved, the adapters are a LoRA file like any other (so that the emitted checkpoint
        // plus `--lora` that file gives the same bytes); unsaved, the options that trained them.
        let label = match st.saved {
            true => lora_label(&st.lora_spec())?,
            false => st_options.label(),
        };
        folding.loras.insert(0, st.lora_spec());
        labels.insert(0, label);
    }
    let folded = fold_loras(&mut compiled, &folding);
    if let Some(st) = &mut st {
        st.release();
        // The report names the adapters as the exported metadata does, not by a removed file.
        if let (Some(report), false) = (&mut compiled.lora, st.saved) {
            report.files[0].path = "sandwich-training adapters (not saved)".into();
        }
    }
    folded?;
    let (export, rewrites) = export_rewritten(&compiled, output, options, &labels)?;
    let parameters_before = compiled.ckpt.sources().values().map(|s| s.numel()).sum();
    Ok(CompileOutcome {
        output: output.to_owned(),
        parameters_before,
        dtype: compiled.dtype,
        export,
        rewrites,
        lora: compiled.lora,
        emitted,
        brll,
        st,
        seconds: start.elapsed().as_secs_f64(),
    })
}
