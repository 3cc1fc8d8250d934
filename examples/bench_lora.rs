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
//! memory and the ratio measures fastflux, not the disk. Besides wall time it reports the CPU
//! time of the compiling thread (Linux's `/proc/thread-self/schedstat`), which other load on
//! a shared machine disturbs less.

use clap::Parser;
use fastflux::checkpoint::lora::LoraSpec;
use fastflux::compile::{CompileOptions, compile};
use fastflux::dtype::DType;
use fastflux::metrics::median;
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
        output: Some(dir.join("bench.onnx")),
        dtype: a.dtype,
        loras,
        ..CompileOptions::new(a.checkpoint.clone())
    };
    let (plain, with_lora) = (options(Vec::new()), options(vec![a.lora.clone()]));
    compile(&plain)?;
    println!("{}", compile(&with_lora)?);
    let (mut base, mut folded) = (Vec::new(), Vec::new());
    for _ in 0..a.repeat {
        base.push(timed(&plain)?);
        folded.push(timed(&with_lora)?);
    }
    let column = |runs: &[(f64, Option<f64>)], pick: fn(&(f64, Option<f64>)) -> Option<f64>| {
        runs.iter().map(pick).collect::<Option<Vec<f64>>>()
    };
    for (what, pick) in [
        (
            "wall",
            (|r| Some(r.0)) as fn(&(f64, Option<f64>)) -> Option<f64>,
        ),
        ("cpu", |r| r.1),
    ] {
        let (Some(b), Some(f)) = (column(&base, pick), column(&folded, pick)) else {
            continue;
        };
        let (bm, fm) = (median(&b), median(&f));
        println!("{what:<4} without LoRA {bm:.2} s (of {:?})", rounded(&b));
        println!("{what:<4} with LoRA    {fm:.2} s (of {:?})", rounded(&f));
        println!("{what:<4} ratio        {:.2}", fm / bm);
    }
    Ok(())
}

/// Wall time and, where Linux reports it, this thread's CPU time of one compile.
fn timed(options: &CompileOptions) -> Result<(f64, Option<f64>), fastflux::Error> {
    let (start, cpu) = (Instant::now(), thread_cpu_seconds());
    compile(options)?;
    let cpu = thread_cpu_seconds()
        .zip(cpu)
        .map(|(end, start)| end - start);
    Ok((start.elapsed().as_secs_f64(), cpu))
}

/// The first field of `schedstat`: nanoseconds this thread has run on a CPU.
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

fn rounded(times: &[f64]) -> Vec<String> {
    times.iter().map(|t| format!("{t:.2}")).collect()
}
