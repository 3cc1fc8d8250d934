//! What folding a LoRA costs: compiles the same checkpoint without and with `--lora`, in the
//! same process and alternating, and prints the median wall time of each and their ratio.
//!
//! ```text
//! cargo run --release --example synth_checkpoint -- --hidden 1024 --heads 8 --double 4 --single 8 \
//!     --context 512 --pooled 256 -o /tmp/mid.safetensors
//! cargo run --release --example synth_lora -- /tmp/mid.safetensors --rank 16 -o /tmp/mid-lora.safetensors
//! cargo run --release --example bench_lora -- /tmp/mid.safetensors /tmp/mid-lora.safetensors
//! ```
//!
//! A first, untimed compile warms the page cache, so both variants read the checkpoint from
//! memory and the ratio measures fastflux, not the disk.

use clap::Parser;
use fastflux::checkpoint::lora::LoraSpec;
use fastflux::compile::{CompileOptions, compile};
use fastflux::dtype::DType;
use fastflux::onnx::Target;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Time compiling a checkpoint with and without a LoRA folded in.
#[derive(Parser, Debug)]
struct Args {
    checkpoint: PathBuf,
    /// The LoRA, as `--lora` takes it: FILE[:SCALE].
    lora: LoraSpec,
    /// Timed compiles of each variant.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Export type [default: the checkpoint's].
    #[arg(long)]
    dtype: Option<DType>,
    /// Where the models are written (a temporary folder by default).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(a: Args) -> Result<(), Box<dyn std::error::Error>> {
    let tmp = tempfile::tempdir()?;
    let dir = a.out_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let options = |loras: Vec<LoraSpec>| CompileOptions {
        checkpoint: a.checkpoint.clone(),
        output: Some(dir.join("bench.onnx")),
        dtype: a.dtype,
        axes_dim: None,
        target: Target::Cuda,
        show_progress: false,
        loras,
        lora_allow_unmatched: false,
    };
    let (plain, with_lora) = (options(Vec::new()), options(vec![a.lora.clone()]));
    compile(&plain)?;
    println!("{}", compile(&with_lora)?);
    let (mut base, mut folded) = (Vec::new(), Vec::new());
    for _ in 0..a.repeat {
        base.push(timed(&plain)?);
        folded.push(timed(&with_lora)?);
    }
    let (b, f) = (median(&mut base), median(&mut folded));
    println!("without LoRA: {b:.2} s (median of {:?})", rounded(&base));
    println!("with LoRA:    {f:.2} s (median of {:?})", rounded(&folded));
    println!("ratio:        {:.2}", f / b);
    Ok(())
}

fn timed(options: &CompileOptions) -> Result<f64, fastflux::Error> {
    let start = Instant::now();
    compile(options)?;
    Ok(start.elapsed().as_secs_f64())
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn rounded(times: &[f64]) -> Vec<String> {
    times.iter().map(|t| format!("{t:.2}")).collect()
}
