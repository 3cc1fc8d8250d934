//! Sampling with the staged original, reloading every stage each step versus keeping the
//! stages loaded (`StagedRunner::keep_loaded`, ONNX Runtime threads not spinning), against the compiled model in one session:
//! rounds alternate the three so that machine load hits them alike; medians are printed.
//!
//! cargo run --release --example staged_sampling -- ../shared/toy/digits --axes-dim 4,6,6

use clap::Parser;
use fastflux::compile::{CompileOptions, compile, prepare};
use fastflux::dtype::DType;
use fastflux::inputs::{Conditioning, Signature};
use fastflux::metrics::median;
use fastflux::runtime::staged::StagedRunner;
use fastflux::runtime::{ExecutionProvider, OrtBackend};
use fastflux::sample::{
    Denoiser, Grid, OnnxDenoiser, SampleSpec, Schedule, StagedDenoiser, sample,
};
use indicatif::ProgressBar;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    /// A folder with `flux-bfl.safetensors` and `prompts.safetensors` (the toy's).
    toy: PathBuf,
    #[arg(long, value_delimiter = ',')]
    axes_dim: Option<Vec<usize>>,
    #[arg(long, default_value = "8x8")]
    size: String,
    #[arg(long, default_value_t = 20)]
    steps: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn main() -> fastflux::Result<()> {
    let a = Args::parse();
    let options = CompileOptions {
        dtype: Some(DType::F32),
        axes_dim: a.axes_dim.clone(),
        output: Some(std::env::temp_dir().join("staged_sampling.onnx")),
        ..CompileOptions::new(a.toy.join("flux-bfl.safetensors"))
    };
    compile(&options)?;
    let compiled = prepare(&options)?;
    let signature = Signature::of(&compiled.ckpt.config);
    let cond = Conditioning::load(&a.toy.join("prompts.safetensors"), &signature)?;
    let spec = SampleSpec {
        grid: Grid::parse(&a.size, "--size")?,
        steps: a.steps,
        seed: 0,
        guidance: None,
        schedule: Schedule::for_model(signature.guidance),
    };
    let model = options.output.clone().unwrap();
    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    let names = [
        "staged, reloaded each step",
        "staged, kept loaded",
        "compiled .onnx",
    ];
    for _ in 0..a.rounds {
        for (k, t) in times.iter_mut().enumerate() {
            let start = Instant::now();
            let mut denoiser: Box<dyn Denoiser> = match k {
                2 => Box::new(OnnxDenoiser::open(
                    &model,
                    a.threads,
                    ExecutionProvider::Cpu,
                    16,
                )?),
                _ => {
                    let (graph, ckpt) = (&compiled.graph, &compiled.ckpt);
                    let runner = match k {
                        0 => StagedRunner::new(graph, ckpt, 16, a.threads),
                        _ => {
                            let backend = OrtBackend::cpu(a.threads).without_spinning();
                            StagedRunner::with_backend(graph, ckpt, backend, 16).keep_loaded()
                        }
                    };
                    Box::new(StagedDenoiser::new(runner, signature))
                }
            };
            sample(
                denoiser.as_mut(),
                &cond,
                &spec,
                &ProgressBar::hidden(),
                |_| Ok(()),
            )?;
            t.push(start.elapsed().as_secs_f64());
        }
    }
    for (name, t) in names.iter().zip(&times) {
        println!(
            "{name:<28} median {:.2} s over {} rounds ({} prompts x {} steps, load included)",
            median(t),
            a.rounds,
            cond.prompts,
            a.steps
        );
    }
    let _ = std::fs::remove_file(&model);
    let _ = std::fs::remove_file(model.with_extension("onnx.data"));
    Ok(())
}
