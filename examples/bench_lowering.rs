//! The cuda lowering against the portable one on ONNX Runtime's CPU provider, in f32: peak
//! resident memory and latency of one forward pass at a long sequence, and the agreement of the
//! two outputs.
//!
//! ```text
//! cargo run --release --example synth_checkpoint -- --hidden 256 --heads 2 --double 1 --single 1 \
//!     --dtype f32 -o /tmp/long.safetensors
//! cargo run --release --example bench_lowering -- /tmp/long.safetensors --image-tokens 4096 --text-tokens 512
//! cargo run --release --example bench_lowering -- /tmp/mid.safetensors --in-process \
//!     --image-tokens 512 --text-tokens 64 --repeat 20 [--baseline today-embedded.onnx]
//! ```
//!
//! By default each lowering runs in a child process of its own (this program with `--child`), so
//! that each one's peak resident set (`VmHWM`, which covers the lift, the serialized model, the
//! session and the run) is its own; the children run one after the other, `--rounds` times in
//! alternating order, and each reports the median of its `--repeat` timed runs after `--warmup`
//! untimed ones. `--in-process` instead loads both models into this one process and times
//! interleaved runs (the order alternating by round): same-run latency ratios with no process
//! start in between, and no memory figures. Inputs are synthetic (`inputs::SyntheticSpec`, seed
//! 1), batch 1.

use clap::Parser;
use fastflux::compile::{self, CompileOptions, Compiled};
use fastflux::dtype::DType;
use fastflux::inputs::{InputSet, SyntheticSpec};
use fastflux::metrics::{cosine, median, relative_l2};
use fastflux::onnx::{Target, to_embedded_bytes};
use fastflux::runtime::LoadedModel;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const TARGETS: [(Target, &str); 2] = [(Target::Cuda, "cuda"), (Target::Portable, "portable")];

/// Memory and latency of a checkpoint's cuda and portable lowerings on ONNX Runtime's CPU provider.
#[derive(Parser, Debug)]
struct Args {
    checkpoint: PathBuf,
    #[arg(long, default_value_t = 4096)]
    image_tokens: usize,
    #[arg(long, default_value_t = 512)]
    text_tokens: usize,
    /// ONNX Runtime intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Child-process rounds (each runs both lowerings, in alternating order).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Both models in this process, interleaved runs; no memory figures.
    #[arg(long)]
    in_process: bool,
    /// With `--in-process`: a third model, an ONNX file with every weight embedded (e.g. the
    /// same checkpoint compiled by an earlier build, to compare with the lowering of that day).
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Internal: run one lowering (`cuda` or `portable`) and write its output to `--output`.
    #[arg(long, hide = true)]
    child: Option<String>,
    #[arg(long, hide = true)]
    output: Option<PathBuf>,
}

fn lift(a: &Args) -> Res<Compiled> {
    let options = CompileOptions {
        dtype: Some(DType::F32),
        ..CompileOptions::new(a.checkpoint.clone())
    };
    Ok(compile::lift_checkpoint(&options)?)
}

fn inputs(a: &Args, c: &Compiled) -> Res<Vec<fastflux::tensor::Tensor>> {
    let spec = SyntheticSpec {
        samples: 1,
        image_tokens: a.image_tokens,
        text_tokens: a.text_tokens,
        seed: 1,
    };
    Ok(InputSet::synthetic(&c.ckpt.config, &spec)?.tensors)
}

fn load(a: &Args, c: &Compiled, target: Target) -> Res<LoadedModel> {
    let bytes = to_embedded_bytes(&c.graph, &c.ckpt, target)?;
    Ok(LoadedModel::from_bytes(&bytes, a.threads)?)
}

/// This process's peak resident set in KiB (`VmHWM` of /proc/self/status).
fn peak_rss_kib() -> Res<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .ok_or("VmHWM without a value")?
        .parse()?)
}

fn target_named(name: &str) -> Res<Target> {
    TARGETS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(t, _)| *t)
        .ok_or_else(|| format!("no target `{name}`").into())
}

/// One lowering, one process: prints `median_ms=… peak_kib=…` and writes the output as f32.
fn child(a: &Args, name: &str, output: &Path) -> Res<()> {
    let c = lift(a)?;
    let inputs = inputs(a, &c)?;
    let mut model = load(a, &c, target_named(name)?)?;
    let mut out = Vec::new();
    for _ in 0..a.warmup {
        out = model.run(&inputs)?.remove(0).data;
    }
    let mut times = Vec::new();
    for _ in 0..a.repeat.max(1) {
        let t = Instant::now();
        out = model.run(&inputs)?.remove(0).data;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let bytes: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(output, bytes)?;
    println!(
        "median_ms={:.3} peak_kib={}",
        median(&times),
        peak_rss_kib()?
    );
    Ok(())
}

fn field(line: &str, key: &str) -> Res<f64> {
    let value = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key))
        .ok_or_else(|| format!("child printed no {key}: {line}"))?;
    Ok(value.parse()?)
}

fn read_f32(path: &Path) -> Res<Vec<f32>> {
    Ok(std::fs::read(path)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

fn in_children(a: &Args) -> Res<()> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    // Per target: latency medians and peaks over the rounds.
    let mut ms = [Vec::new(), Vec::new()];
    let mut peaks = [Vec::new(), Vec::new()];
    for round in 0..a.rounds.max(1) {
        for k in [round % 2, 1 - round % 2] {
            let (_, name) = TARGETS[k];
            let out = dir.path().join(format!("{name}.f32"));
            let status = Command::new(&exe)
                .arg(&a.checkpoint)
                .args(["--child", name, "--output"])
                .arg(&out)
                .args(["--image-tokens", &a.image_tokens.to_string()])
                .args(["--text-tokens", &a.text_tokens.to_string()])
                .args(["--threads", &a.threads.to_string()])
                .args(["--warmup", &a.warmup.to_string()])
                .args(["--repeat", &a.repeat.to_string()])
                .output()?;
            if !status.status.success() {
                return Err(format!(
                    "the {name} child failed: {}",
                    String::from_utf8_lossy(&status.stderr)
                )
                .into());
            }
            let line = String::from_utf8_lossy(&status.stdout).trim().to_string();
            ms[k].push(field(&line, "median_ms=")?);
            peaks[k].push(field(&line, "peak_kib=")? / 1024.0);
            eprintln!("round {round}: {name}: {line}");
        }
    }
    let cuda = read_f32(&dir.path().join("cuda.f32"))?;
    let portable = read_f32(&dir.path().join("portable.f32"))?;
    println!(
        "\nONNX Runtime CPU, f32, batch 1, {} image + {} text tokens, {} threads; each lowering in \
         its own process, {} round(s), median of {} runs after {} warm-up:",
        a.image_tokens, a.text_tokens, a.threads, a.rounds, a.repeat, a.warmup
    );
    println!("\n| lowering | peak RSS (MiB) | latency (ms) |\n| --- | --- | --- |");
    for (k, (_, name)) in TARGETS.iter().enumerate() {
        println!(
            "| {name} | {:.0} | {:.0} |",
            median(&peaks[k]),
            median(&ms[k])
        );
    }
    println!(
        "cuda/portable: peak RSS {:.3}, latency {:.3}",
        median(&peaks[0]) / median(&peaks[1]),
        median(&ms[0]) / median(&ms[1])
    );
    agreement(&cuda, &portable, "portable");
    Ok(())
}

fn agreement(cuda: &[f32], other: &[f32], other_name: &str) {
    println!(
        "outputs: relative L2 of cuda vs {other_name} {:.3e}, cosine {:.9}",
        relative_l2(cuda, other),
        cosine(cuda, other)
    );
}

fn in_one_process(a: &Args) -> Res<()> {
    let c = lift(a)?;
    let inputs = inputs(a, &c)?;
    let mut names = vec!["cuda".to_string(), "portable".to_string()];
    let mut models = vec![load(a, &c, Target::Cuda)?, load(a, &c, Target::Portable)?];
    if let Some(file) = &a.baseline {
        models.push(LoadedModel::from_bytes(&std::fs::read(file)?, a.threads)?);
        names.push(format!("baseline `{}`", file.display()));
    }
    let mut outputs = Vec::new();
    for m in &mut models {
        let mut out = Vec::new();
        for _ in 0..a.warmup.max(1) {
            out = m.run(&inputs)?.remove(0).data;
        }
        outputs.push(out);
    }
    let n = models.len();
    let mut times = vec![Vec::new(); n];
    for round in 0..a.repeat.max(1) {
        // Each round runs every model once, starting one further along each time.
        for j in 0..n {
            let k = (round + j) % n;
            let t = Instant::now();
            models[k].run(&inputs)?;
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "\nONNX Runtime CPU, f32, batch 1, {} image + {} text tokens, {} threads, {} interleaved \
         runs each after {} warm-up:",
        a.image_tokens,
        a.text_tokens,
        a.threads,
        a.repeat,
        a.warmup.max(1)
    );
    println!("\n| lowering | median (ms) | min (ms) |\n| --- | --- | --- |");
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    for (k, name) in names.iter().enumerate() {
        println!(
            "| {name} | {:.1} | {:.1} |",
            median(&times[k]),
            min(&times[k])
        );
    }
    for k in 1..n {
        let ratios: Vec<f64> = times[0].iter().zip(&times[k]).map(|(c, p)| c / p).collect();
        println!(
            "cuda/{}: latency ratio of medians {:.3}, median of per-round ratios {:.3}",
            names[k],
            median(&times[0]) / median(&times[k]),
            median(&ratios)
        );
        agreement(&outputs[0], &outputs[k], &names[k]);
    }
    Ok(())
}

fn main() -> Res<()> {
    let a = Args::parse();
    match (&a.child, &a.output) {
        (Some(name), Some(out)) => child(&a, name, out),
        (Some(_), None) => Err("--child needs --output".into()),
        _ if a.in_process => in_one_process(&a),
        _ => in_children(&a),
    }
}
