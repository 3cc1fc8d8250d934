//! What one sampling step of the staged original costs, stage by stage: the model runs as
//! trajectory calibration (`--calib-cond`) runs it, retyped to f32 on ONNX Runtime's CPU
//! kernels, each stage lowered and loaded on its own, for one step at a chosen grid and text
//! length. Prints each stage's time (lowering + session creation + run) and extrapolates a
//! calibration of `--prompts` prompts × `--steps` steps for a model of `--full-double` and
//! `--full-single` blocks of the same width (FLUX.1-dev: 19 and 38).
//!
//! cargo run --release --example synth_checkpoint -- --double 1 --single 1 -o /tmp/dev-1-1.safetensors
//! cargo run --release --example sample_cost -- /tmp/dev-1-1.safetensors --size 64x64 --text 512

use clap::Parser;
use fastflux::checkpoint::FluxCheckpoint;
use fastflux::inputs::{Conditioning, Signature};
use fastflux::ir::BlockId;
use fastflux::lift::{self, LiftOptions};
use fastflux::passes::retype;
use fastflux::rng::Rng;
use fastflux::runtime::staged::StagedRunner;
use fastflux::sample::{Grid, SampleSpec, Schedule};
use fastflux::tensor::Tensor;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
struct Args {
    checkpoint: PathBuf,
    /// Image tokens, rows x columns.
    #[arg(long, default_value = "64x64")]
    size: String,
    /// Text tokens (FLUX.1-dev's pipeline pads T5 to 512).
    #[arg(long, default_value_t = 512)]
    text: usize,
    #[arg(long, default_value_t = 0)]
    threads: usize,
    #[arg(long, value_delimiter = ',')]
    axes_dim: Option<Vec<usize>>,
    /// Extrapolation: prompts, steps, and the full model's block counts.
    #[arg(long, default_value_t = 20)]
    prompts: usize,
    #[arg(long, default_value_t = 28)]
    steps: usize,
    #[arg(long, default_value_t = 19)]
    full_double: usize,
    #[arg(long, default_value_t = 38)]
    full_single: usize,
}

fn main() -> fastflux::Result<()> {
    let a = Args::parse();
    let grid = Grid::parse(&a.size, "--size")?;
    let ckpt = FluxCheckpoint::open(&a.checkpoint, a.axes_dim.clone())?;
    let dtype = lift::default_dtype(&ckpt);
    let graph = retype::to_f32(&lift::lift(&ckpt, LiftOptions { dtype })?)?;
    let signature = Signature::of(&ckpt.config);
    let mut rng = Rng::new(0, 99);
    let mut normal = |name: &str, shape: Vec<usize>, std: f32| Tensor {
        name: name.into(),
        data: (0..shape.iter().product())
            .map(|_| rng.normal() as f32 * std)
            .collect(),
        shape,
    };
    let cond = Conditioning {
        prompts: 1,
        text_tokens: a.text,
        text: normal(
            "encoder_hidden_states",
            vec![1, a.text, signature.context_dim],
            0.2,
        ),
        pooled: normal("pooled_projections", vec![1, signature.pooled_dim], 1.0),
    };
    // One step's inputs, as the sampler builds them, taken from a one-step run's observer.
    let spec = SampleSpec {
        grid,
        steps: 1,
        seed: 0,
        guidance: None,
        schedule: Schedule::for_model(signature.guidance),
    };
    let mut inputs = Vec::new();
    let mut capture = Capture(signature, &mut inputs);
    fastflux::sample::sample(
        &mut capture,
        &cond,
        &spec,
        &indicatif::ProgressBar::hidden(),
        |_| Ok(()),
    )?;
    let runner = StagedRunner::new(&graph, &ckpt, 1, a.threads);
    let mut env = runner.load_inputs(&inputs)?;
    let (mut double, mut single, mut other) = (Vec::new(), Vec::new(), 0.0);
    for k in 0..runner.stages().len() {
        let start = Instant::now();
        runner.run_stage(k, &mut env)?;
        runner.release(k, &mut env);
        let s = start.elapsed().as_secs_f64();
        let block = runner.stages()[k].block;
        println!(
            "stage {k:>2} {:<18} {s:8.2} s",
            block.map_or("(around blocks)".into(), |b| b.to_string())
        );
        match block {
            Some(BlockId::Double(_)) => double.push(s),
            Some(BlockId::Single(_)) => single.push(s),
            None => other += s,
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (d, s) = (mean(&double), mean(&single));
    let step = a.full_double as f64 * d + a.full_single as f64 * s + other;
    let total = step * (a.prompts * a.steps) as f64;
    println!(
        "per block: double {d:.2} s, single {s:.2} s, the rest {other:.2} s ({grid} image + {} \
         text tokens, 1 prompt)",
        a.text
    );
    println!(
        "estimate: one step of a {}+{}-block model {step:.0} s; {} prompts x {} steps = {:.1} h",
        a.full_double,
        a.full_single,
        a.prompts,
        a.steps,
        total / 3600.0
    );
    Ok(())
}

/// A stand-in model that keeps the inputs of the step it is asked about.
struct Capture<'a>(Signature, &'a mut Vec<Tensor>);

impl fastflux::sample::Denoiser for Capture<'_> {
    fn signature(&self) -> Signature {
        self.0
    }

    fn velocity(&mut self, inputs: &[Tensor]) -> fastflux::Result<Tensor> {
        *self.1 = inputs.to_vec();
        Ok(Tensor {
            name: "latent".into(),
            shape: inputs[0].shape.clone(),
            data: vec![0.0; inputs[0].data.len()],
        })
    }
}
