//! `fastflux-compile`: the command line.

use clap::{ArgAction, Parser, ValueEnum};
use fastflux::checkpoint::lora::LoraSpec;
use fastflux::compile::{self, CompileOptions, TrajectorySpec};
use fastflux::dtype::DType;
use fastflux::fit::brll::{BrllOptions, Selection};
use fastflux::fit::calibrate::FitKind;
use fastflux::fit::select::SelectRule;
use fastflux::onnx::Target;
use fastflux::runtime::{ExecutionProvider, MemoryBudget};
use fastflux::sample::Grid;
use fastflux::train::{Entry, StOptions};
use std::path::PathBuf;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  fastflux-compile flux1-dev.safetensors -o fastflux.onnx
  fastflux-compile FLUX.1-schnell/transformer -o schnell.onnx --dtype f16
  fastflux-compile flux1-dev.safetensors --plan
  fastflux-compile flux1-dev.safetensors -o st.onnx --lora st.safetensors --lora style.safetensors:0.8";

/// Compiles a FLUX.1 transformer checkpoint into an ONNX model for ONNX Runtime.
///
/// Reads one .safetensors file (Black Forest Labs or ComfyUI naming) or a diffusers transformer
/// folder, and writes OUT.onnx plus its weights in OUT.onnx.data.
#[derive(Parser, Debug)]
#[command(name = "fastflux-compile", version, after_help = EXAMPLES)]
struct Cli {
    /// The checkpoint: a .safetensors file, a diffusers folder, or its .index.json.
    checkpoint: PathBuf,
    /// Where to write the ONNX model (its weights go to OUT.onnx.data beside it).
    #[arg(short, long, value_name = "OUT.onnx", required_unless_present = "plan")]
    output: Option<PathBuf>,
    /// Type of the weights and of the computation [default: the checkpoint's; fp8 becomes bf16].
    #[arg(long, value_name = "f32|f16|bf16")]
    dtype: Option<DType>,
    /// RoPE axes widths, e.g. 16,56,56 [default: config.json, else 16,56,56 for head width 128].
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    axes_dim: Option<Vec<usize>>,
    /// The runtime the model is for.
    #[arg(long, value_enum, default_value_t = TargetArg::Cuda)]
    target: TargetArg,
    /// BRLL: replace these blocks' residual branches with fitted linear layers
    /// (BFL indices, e.g. double.4,single.10-13).
    #[arg(long, value_name = "LIST", conflicts_with = "prune")]
    replace: Option<String>,
    /// BRLL: replace this share of all blocks, those --select ranks best (e.g. 0.2).
    #[arg(long, value_name = "FRACTION")]
    prune: Option<f64>,
    /// How --prune ranks blocks: by the error replacing each block alone causes in the model's
    /// output on the calibration inputs (costs K(K-1)/2 extra block runs for K blocks), or by
    /// the local fit error (its worst stream's for a double block; no extra runs).
    #[arg(long, value_enum, default_value_t = SelectArg::Output)]
    select: SelectArg,
    /// --select output: measure the output effect on the first N calibration samples only
    /// (the extra runs scale with N) [default: all].
    #[arg(long, value_name = "N", default_value_t = 0)]
    effect_samples: usize,
    /// Calibration inputs: a safetensors file with the model's ONNX inputs, samples stacked on
    /// the batch axis [default: synthetic inputs, see --calib-samples].
    #[arg(long, value_name = "FILE")]
    calib: Option<PathBuf>,
    /// Calibration from the model's own sampling trajectories: a conditioning file,
    /// `encoder_hidden_states [P,L,ctx]` and `pooled_projections [P,vec]`, one row per prompt
    /// (see the README for making one from prompts). Each prompt is sampled with the original
    /// model from seeded noise (--seed) and its inputs are recorded along the way.
    #[arg(
        long,
        value_name = "COND.safetensors",
        conflicts_with = "calib",
        requires = "calib_size"
    )]
    calib_cond: Option<PathBuf>,
    /// --calib-cond: image tokens as rows x columns of the packed latent grid (64x64 for
    /// 1024×1024 images).
    #[arg(long, value_name = "HxW")]
    calib_size: Option<String>,
    /// --calib-cond: Euler steps per trajectory, for every model (FLUX.1-dev's default; finer
    /// than schnell's 4, so that the set spans the whole flow).
    #[arg(long, value_name = "N", default_value_t = compile::DEFAULT_TRAJECTORY_STEPS)]
    calib_steps: usize,
    /// --calib-cond: inputs recorded per prompt, at steps spread over its trajectory.
    #[arg(long, value_name = "K", default_value_t = 4)]
    calib_per_prompt: usize,
    /// --calib-cond: the guidance value (models with a guidance embedding) [default: 3.5].
    #[arg(long, value_name = "G")]
    calib_guidance: Option<f32>,
    /// Write the calibration set (whatever its source) in the --calib format, for reuse.
    #[arg(long, value_name = "FILE")]
    calib_save: Option<PathBuf>,
    /// Synthetic calibration: number of samples.
    #[arg(long, value_name = "N", default_value_t = 16)]
    calib_samples: usize,
    /// Synthetic calibration: image tokens per sample (a square-ish latent grid).
    #[arg(long, value_name = "N", default_value_t = 256)]
    calib_image_tokens: usize,
    /// Synthetic calibration: text tokens per sample.
    #[arg(long, value_name = "N", default_value_t = 64)]
    calib_text_tokens: usize,
    /// Seed of the synthetic calibration (and, derived from it, verification) inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// What the fitted layer reads: the block input only, or also silu(vec).
    #[arg(long, value_enum, default_value_t = FitArg::Plain)]
    fit: FitArg,
    /// Relative ridge of the least-squares fits.
    #[arg(long, default_value_t = fastflux::fit::lstsq::DEFAULT_RIDGE)]
    ridge: f64,
    /// Calibration samples per ONNX Runtime call (memory grows with it; --memory-budget may
    /// lower it).
    #[arg(long, value_name = "N", default_value_t = 4)]
    calib_batch: usize,
    /// Bytes of activations calibration may hold at once (e.g. 16G, 512M): bounds the samples
    /// per ONNX Runtime call and how many samples the output effect carries per walk; the
    /// activations between stages are spilled to TMPDIR [default: half the machine's memory].
    #[arg(long, value_name = "SIZE", value_parser = parse_budget)]
    memory_budget: Option<MemoryBudget>,
    /// ONNX Runtime threads for calibration [default: one per core].
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Where ONNX Runtime runs calibration, trajectory sampling and --verify: its `cuda` or `cpu`
    /// execution provider, or `auto` (CUDA when the loaded ONNX Runtime has it, else the CPU;
    /// the summary names the one used).
    /// Sandwich training follows it on candle: `cuda` needs a `--features cuda` build, and
    /// `auto` takes GPU 0 when the build has CUDA.
    #[arg(long, value_name = "auto|cpu|cuda", default_value = "auto")]
    execution_provider: ExecutionProvider,
    /// Run the pruned and the original model on held-out inputs of the calibration's source and
    /// compare their outputs: synthetic ones with another seed for a synthetic calibration, the
    /// --calib-cond trajectories' inputs at steps not recorded for calibration; a --calib FILE
    /// calibration needs --verify-inputs.
    #[arg(long)]
    verify: bool,
    /// Held-out inputs for --verify, in the --calib format, whatever the calibration's source.
    #[arg(long, value_name = "FILE")]
    verify_inputs: Option<PathBuf>,
    /// Also write the BRLL-rewritten base model as one .safetensors checkpoint in the input's
    /// naming: the tensors the rewritten model still uses, copied as stored, plus the fitted
    /// `brll` tensors (F32), with the replaced blocks listed in its header metadata. It is what
    /// sandwich training in PyTorch loads; LoRAs are not folded into it. fastflux-compile reads
    /// it back (pass --axes-dim when the RoPE axes are not FLUX.1's).
    #[arg(long, value_name = "FILE", conflicts_with = "plan")]
    emit_safetensors: Option<PathBuf>,
    /// Inspect only: print the naming, configuration, parameters and dtypes (and, with
    /// --prune/--replace/--calib, every block's BRLL fit); write nothing.
    #[arg(long)]
    plan: bool,
    /// A LoRA to fold into the weights, at SCALE (default 1); repeat for several. Reads the
    /// diffusers/peft, kohya, XLabs and original (BFL) namings.
    #[arg(long, value_name = "FILE[:SCALE]", action = ArgAction::Append)]
    lora: Vec<LoraSpec>,
    /// Skip LoRA keys that match no weight of the model (with a warning) instead of failing.
    #[arg(long)]
    lora_allow_unmatched: bool,
    /// Sandwich training: optimizer steps per sandwich (the blocks around each run of replaced
    /// blocks), on the calibration inputs, against the original model [default: 0, none].
    #[arg(long, value_name = "N", default_value_t = 0)]
    st_steps: usize,
    /// Sandwich training: rank of the LoRA adapters on the neighbours' linears (alpha = rank).
    #[arg(long, value_name = "R", default_value_t = StOptions::default().rank)]
    st_rank: usize,
    /// Sandwich training: the learning rate at fan-in 1; each trainable's Adam rate is LR over
    /// its fan-in (μP's rule, so that LR means the same at every width), rectified as RAdam's
    /// for the first few hundred steps.
    #[arg(long, value_name = "LR", default_value_t = StOptions::default().lr)]
    st_lr: f64,
    /// Sandwich training: calibration samples per step.
    #[arg(long, value_name = "N", default_value_t = StOptions::default().batch)]
    st_batch: usize,
    /// Sandwich training: what a sandwich's input activations are: the pruned model's, every
    /// earlier sandwich already trained (sandwiches train in model order), or the original's.
    #[arg(long, value_enum, default_value_t = EntryArg::Pruned)]
    st_entry: EntryArg,
    /// Sandwich training: also write the neighbours' trained adapters as a LoRA file in the
    /// checkpoint's naming (with alpha). With --emit-safetensors, compiling the emitted
    /// checkpoint with --lora FILE gives the same ONNX model.
    #[arg(long, value_name = "FILE")]
    st_save: Option<PathBuf>,
    /// Sandwich training: write each optimizer step's mini-batch loss to FILE (tab-separated:
    /// sandwich, step, RAdam's rectification factor, loss), as training goes.
    #[arg(long, value_name = "FILE")]
    st_log: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum FitArg {
    /// y − x ≈ W x + b, as in the paper.
    Plain,
    /// y − x ≈ W x + U silu(vec) + b.
    Conditioned,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum SelectArg {
    /// The output error of replacing each block alone.
    Output,
    /// The local fit error.
    Local,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum EntryArg {
    /// The pruned model's activations, earlier sandwiches trained.
    Pruned,
    /// The original model's activations.
    Original,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
enum TargetArg {
    /// ONNX Runtime, CUDA execution provider (uses ONNX Runtime's contrib ops).
    Cuda,
    /// Standard ONNX operators only.
    Portable,
}

fn parse_budget(text: &str) -> Result<MemoryBudget, String> {
    MemoryBudget::parse(text).map_err(|e| e.to_string())
}

fn brll_options(cli: &Cli) -> Option<BrllOptions> {
    let selection = match (&cli.replace, cli.prune) {
        (Some(list), _) => Selection::Replace(list.clone()),
        (None, Some(fraction)) => Selection::Prune(fraction),
        // --calib alone asks --plan for the ranking table.
        (None, None) if (cli.calib.is_some() || cli.calib_cond.is_some()) && cli.plan => {
            Selection::Prune(0.0)
        }
        (None, None) => return None,
    };
    let mut options = BrllOptions {
        selection,
        rule: match cli.select {
            SelectArg::Output => SelectRule::Output,
            SelectArg::Local => SelectRule::Local,
        },
        calib: cli.calib.clone(),
        verify: cli.verify,
        verify_inputs: cli.verify_inputs.clone(),
        ..BrllOptions::default()
    };
    options.synthetic.samples = cli.calib_samples;
    options.synthetic.image_tokens = cli.calib_image_tokens;
    options.synthetic.text_tokens = cli.calib_text_tokens;
    options.synthetic.seed = cli.seed;
    let calibration = &mut options.calibration;
    calibration.kind = match cli.fit {
        FitArg::Plain => FitKind::Plain,
        FitArg::Conditioned => FitKind::Conditioned,
    };
    calibration.ridge = cli.ridge;
    calibration.batch = cli.calib_batch;
    calibration.threads = cli.threads;
    calibration.provider = cli.execution_provider;
    calibration.show_progress = !cli.quiet;
    calibration.effect_samples = cli.effect_samples;
    if let Some(budget) = cli.memory_budget {
        calibration.memory_budget = budget;
    }
    Some(options)
}

/// `--st-steps` and its flags.
fn st_options(cli: &Cli) -> StOptions {
    StOptions {
        steps: cli.st_steps,
        rank: cli.st_rank,
        lr: cli.st_lr,
        batch: cli.st_batch,
        entry: match cli.st_entry {
            EntryArg::Pruned => Entry::Pruned,
            EntryArg::Original => Entry::Original,
        },
        seed: cli.seed,
        show_progress: !cli.quiet,
        log: cli.st_log.clone(),
    }
}

/// `--calib-cond` and its flags.
fn trajectories(cli: &Cli) -> fastflux::Result<Option<TrajectorySpec>> {
    let Some(cond) = &cli.calib_cond else {
        return Ok(None);
    };
    let size = cli.calib_size.as_deref().unwrap_or_default();
    Ok(Some(TrajectorySpec {
        cond: cond.clone(),
        grid: Grid::parse(size, "--calib-size")?,
        steps: cli.calib_steps,
        per_prompt: cli.calib_per_prompt,
        seed: cli.seed,
        guidance: cli.calib_guidance,
    }))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let brll = brll_options(&cli);
    let calib_cond = match trajectories(&cli) {
        Ok(spec) => spec,
        Err(e) => return fastflux::cli::fail(e),
    };
    if brll.is_none() && (calib_cond.is_some() || cli.calib_save.is_some()) {
        return fastflux::cli::fail(
            "--calib-cond and --calib-save calibrate BRLL fits: pass --prune or --replace \
             (or --plan to see the ranking)",
        );
    }
    let st = st_options(&cli);
    let options = CompileOptions {
        checkpoint: cli.checkpoint,
        output: cli.output,
        dtype: cli.dtype,
        axes_dim: cli.axes_dim,
        target: match cli.target {
            TargetArg::Cuda => Target::Cuda,
            TargetArg::Portable => Target::Portable,
        },
        show_progress: !cli.quiet,
        brll,
        loras: cli.lora,
        lora_allow_unmatched: cli.lora_allow_unmatched,
        emit_safetensors: cli.emit_safetensors,
        calib_cond,
        calib_save: cli.calib_save,
        st: Some(st),
        st_save: cli.st_save,
    };
    // `fastflux::report` renders both outcomes.
    let result = if cli.plan {
        compile::plan(&options).map(|plan| plan.to_string())
    } else {
        compile::compile(&options).map(|outcome| outcome.to_string())
    };
    fastflux::cli::finish(result)
}
