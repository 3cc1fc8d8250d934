//! `fastflux-sample`: samples a compiled FLUX model (or a checkpoint, staged) with FLUX.1's
//! flow-matching Euler sampler.

use clap::Parser;
use fastflux::checkpoint::FluxCheckpoint;
use fastflux::error::{Error, Result};
use fastflux::inputs::Conditioning;
use fastflux::ir::Graph;
use fastflux::lift::{self, LiftOptions};
use fastflux::metrics::median;
use fastflux::passes::retype;
use fastflux::runtime::ExecutionProvider;
use fastflux::sample::euler::resolve_guidance;
use fastflux::sample::{
    Denoiser, Grid, OnnxDenoiser, SampleSpec, Schedule, StagedDenoiser, png, sample,
};
use fastflux::tensor::write_f32_tensors;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const EXAMPLES: &str = "\
Examples:
  fastflux-sample fastflux.onnx --cond prompts.safetensors --steps 28 --size 64x64 --seed 0 -o latents.safetensors
  fastflux-sample toy.onnx --cond shared/toy/digits/prompts.safetensors --steps 20 --size 8x8 -o toy.safetensors --png toy.png";

/// Samples a FLUX transformer compiled to ONNX, one sample per prompt row of the conditioning
/// file, and writes the final latents (decode them with the model's VAE).
#[derive(Parser, Debug)]
#[command(name = "fastflux-sample", version, after_help = EXAMPLES)]
struct Cli {
    /// The compiled model (OUT.onnx, its weights in OUT.onnx.data beside it), or a checkpoint
    /// (a .safetensors file or a diffusers folder): the original, run stage by stage in f32.
    model: PathBuf,
    /// A checkpoint's RoPE axes widths, e.g. 16,56,56 (as fastflux-compile --axes-dim).
    #[arg(long, value_name = "A,B,C", value_delimiter = ',')]
    axes_dim: Option<Vec<usize>>,
    /// The prompts: `encoder_hidden_states [P,L,ctx]` and `pooled_projections [P,vec]`, one row
    /// per prompt (the T5 and pooled CLIP outputs of the pipeline's `encode_prompt`).
    #[arg(long, value_name = "COND.safetensors")]
    cond: PathBuf,
    /// Euler steps.
    #[arg(long, value_name = "N", default_value_t = 28)]
    steps: usize,
    /// Image tokens as rows x columns of the packed latent grid (64x64 for a 1024×1024 image).
    #[arg(long, value_name = "HxW")]
    size: String,
    /// Seed of the starting noise (prompt row p draws from stream p).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to write the final latents, `latents [P,N,C]`.
    #[arg(short, long, value_name = "OUT.safetensors")]
    output: PathBuf,
    /// The guidance value, for models with a guidance embedding [default: 3.5].
    #[arg(long, value_name = "G")]
    guidance: Option<f32>,
    /// The sigma schedule [default: dev (time-shifted) for models with a guidance embedding,
    /// schnell (unshifted) otherwise].
    #[arg(long, value_name = "dev|schnell")]
    schedule: Option<Schedule>,
    /// Also draw the samples as a grey PNG grid (models whose latents are images, as the toy's).
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
    /// Pixels per latent pixel in --png.
    #[arg(long, value_name = "N", default_value_t = 4)]
    png_scale: usize,
    /// Prompts per ONNX Runtime call (memory grows with it).
    #[arg(long, value_name = "N", default_value_t = 16)]
    batch: usize,
    /// ONNX Runtime intra-op threads [default: one per core].
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// ONNX Runtime's execution provider: `cuda`, `cpu`, or `auto` (CUDA when the loaded ONNX
    /// Runtime has it, else the CPU).
    #[arg(long, value_name = "auto|cpu|cuda", default_value = "auto")]
    execution_provider: ExecutionProvider,
    /// No progress bar.
    #[arg(short, long)]
    quiet: bool,
}

fn run(cli: &Cli) -> Result<String> {
    let grid = Grid::parse(&cli.size, "--size")?;
    if cli.steps == 0 {
        return Err(Error::Usage(
            "--steps 0: sampling needs at least 1 step".into(),
        ));
    }
    for path in std::iter::once(&cli.output).chain(&cli.png) {
        if [&cli.model, &cli.cond].iter().any(|p| same_file(p, path)) {
            return Err(Error::Usage(format!(
                "output {} would overwrite an input; choose another path",
                path.display()
            )));
        }
    }
    let load_start = Instant::now();
    let original: (FluxCheckpoint, Graph);
    let mut model: Box<dyn Denoiser + '_> = match is_onnx(&cli.model) {
        true => Box::new(OnnxDenoiser::open(
            &cli.model,
            cli.threads,
            cli.execution_provider,
            cli.batch,
        )?),
        false => {
            let ckpt = FluxCheckpoint::open(&cli.model, cli.axes_dim.clone())?;
            let dtype = lift::default_dtype(&ckpt);
            let graph = retype::to_f32(&lift::lift(&ckpt, LiftOptions { dtype })?)?;
            original = (ckpt, graph);
            let (ckpt, graph) = (&original.0, &original.1);
            let staged = StagedDenoiser::original(
                graph,
                ckpt,
                cli.threads,
                cli.execution_provider,
                cli.batch,
            );
            Box::new(staged?)
        }
    };
    let load_seconds = load_start.elapsed().as_secs_f64();
    let signature = model.signature();
    let guidance =
        resolve_guidance(&signature, cli.guidance).map_err(|e| Error::file(&cli.model, e))?;
    if cli.png.is_some()
        && let Some(why) = png::refuse_channels(signature.in_channels)
    {
        return Err(Error::file(&cli.model, why));
    }
    let cond = Conditioning::load(&cli.cond, &signature)?;
    let schedule = cli
        .schedule
        .unwrap_or(Schedule::for_model(signature.guidance));
    let spec = SampleSpec {
        grid,
        steps: cli.steps,
        seed: cli.seed,
        guidance,
        schedule,
    };
    let bar = if cli.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cli.steps as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("sampling {bar:30} {pos}/{len} steps ({per_sec}, eta {eta})")
            .expect("valid template"),
    );
    let sampled = sample(model.as_mut(), &cond, &spec, &bar, |_| Ok(()))?;
    bar.finish_and_clear();

    let mut metadata = BTreeMap::new();
    let sigmas: Vec<String> = sampled.sigmas.iter().map(|s| s.to_string()).collect();
    for (k, v) in [
        ("fastflux.steps", cli.steps.to_string()),
        ("fastflux.size", grid.to_string()),
        ("fastflux.seed", cli.seed.to_string()),
        ("fastflux.schedule", format!("{schedule:?}")),
        ("fastflux.sigmas", sigmas.join(",")),
        (
            "fastflux.guidance",
            guidance.map_or("none (no guidance embedding)".into(), |g| g.to_string()),
        ),
    ] {
        metadata.insert(k.to_string(), v);
    }
    write_f32_tensors(
        &cli.output,
        std::slice::from_ref(&sampled.latents),
        &metadata,
    )?;
    if let Some(path) = &cli.png
        && let Err(e) = png::write_grid(path, &[&sampled.latents], grid, cli.png_scale)
    {
        let _ = std::fs::remove_file(&cli.output);
        return Err(e);
    }

    let mut report = String::new();
    let ms = |s: f64| format!("{:.2} ms", s * 1e3);
    for (k, s) in sampled.step_seconds.iter().enumerate() {
        report += &format!(
            "step {:>3}/{}  sigma {:.4} -> {:.4}  {}\n",
            k + 1,
            cli.steps,
            sampled.sigmas[k],
            sampled.sigmas[k + 1],
            ms(*s)
        );
    }
    let total: f64 = sampled.step_seconds.iter().sum();
    report += &format!(
        "total {:.3} s for {} steps x {} prompts at {grid} image tokens ({} per step, median {}; \
         {})\n",
        total,
        cli.steps,
        cond.prompts,
        ms(total / cli.steps as f64),
        ms(median(&sampled.step_seconds)),
        match is_onnx(&cli.model) {
            true => format!("session load {load_seconds:.2} s not included"),
            false => "the original, staged: its stages load during the steps".into(),
        }
    );
    report += &format!(
        "wrote {} (latents [{}, {}, {}]), schedule {schedule}{}",
        cli.output.display(),
        cond.prompts,
        grid.tokens(),
        signature.in_channels,
        match guidance {
            Some(g) => format!(", guidance {g}"),
            None => String::new(),
        }
    );
    if let Some(path) = &cli.png {
        report += &format!("\nwrote {}", path.display());
    }
    Ok(report)
}

/// A compiled model (`.onnx`) rather than a checkpoint.
fn is_onnx(path: &std::path::Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    fastflux::cli::finish(run(&cli))
}
