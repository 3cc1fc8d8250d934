//! What BRLL buys at inference and costs at compile time, on one checkpoint: compiles it unpruned
//! and with `--prune` (f32, synthetic calibration), timing the compile phases, then measures the
//! ONNX Runtime CPU latency of both models in this one process, interleaved, and prints the
//! medians and their ratio.
//!
//! ```text
//! cargo run --release --example synth_checkpoint -- --hidden 512 --heads 4 --double 4 --single 8 \
//!     --in-channels 64 --context 256 --pooled 128 -o /tmp/mid.safetensors
//! ORT_DYLIB_PATH=... cargo run --release --example brll_latency -- /tmp/mid.safetensors
//! ```
//!
//! The compiles are the library's steps (`compile::lift_checkpoint`, `fit_brll`, `export`).
//! Calibration + fit time is the wall time of `compile::fit_brll` (ranking every block,
//! then the sequential fits of the chosen ones), the part a pruned compile adds to an unpruned
//! one. Latency: batch 1, `--image-tokens` image and `--text-tokens` text tokens (synthetic
//! inputs), `--threads` intra-op threads, `--warmup` untimed runs of each model, then `--repeat`
//! rounds each running the unpruned and the pruned model once (the order alternating by round).

use clap::Parser;
use fastflux::compile::{self, CompileOptions, Compiled};
use fastflux::dtype::DType;
use fastflux::fit::brll::{BrllOptions, Selection};
use fastflux::inputs::{InputSet, SyntheticSpec};
use fastflux::metrics::{median, relative_l2};
use fastflux::onnx::{Target, to_embedded_bytes};
use fastflux::runtime::LoadedModel;
use std::path::PathBuf;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Compile time and ONNX Runtime CPU latency of a checkpoint, unpruned and BRLL-pruned.
#[derive(Parser, Debug)]
struct Args {
    checkpoint: PathBuf,
    #[arg(long, default_value_t = 0.2)]
    prune: f64,
    #[arg(long, default_value_t = 16)]
    calib_samples: usize,
    #[arg(long, default_value_t = 512)]
    calib_image_tokens: usize,
    #[arg(long, default_value_t = 64)]
    calib_text_tokens: usize,
    /// Latency inputs: image and text tokens (batch 1).
    #[arg(long, default_value_t = 512)]
    image_tokens: usize,
    #[arg(long, default_value_t = 64)]
    text_tokens: usize,
    /// ONNX Runtime intra-op threads, for calibration and for the latency runs.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    #[arg(long, default_value_t = 10)]
    repeat: usize,
    /// Where the compiled models go (a temporary folder by default).
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

fn main() -> Res<()> {
    let a = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = a.out_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let options = |out: &str| CompileOptions {
        output: Some(dir.join(out)),
        dtype: Some(DType::F32),
        ..CompileOptions::new(a.checkpoint.clone())
    };
    let mut brll_options = BrllOptions {
        selection: Selection::Prune(a.prune),
        ..Default::default()
    };
    brll_options.synthetic = SyntheticSpec {
        samples: a.calib_samples,
        image_tokens: a.calib_image_tokens,
        text_tokens: a.calib_text_tokens,
        seed: 0,
    };
    brll_options.calibration.threads = a.threads;
    // A first lift warms the page cache, so that neither timed compile pays for the disk.
    drop(compile::lift_checkpoint(&options("warm.onnx"))?);

    let compile = |out: &str, prune: bool| -> Res<(Compiled, [f64; 4], usize)> {
        let opts = options(out);
        let t0 = Instant::now();
        let mut c = compile::lift_checkpoint(&opts)?;
        let t1 = Instant::now();
        if prune {
            let outcome = compile::fit_brll(&mut c, &brll_options)?;
            let blocks: Vec<String> = outcome
                .replaced
                .iter()
                .map(|r| format!("{} (fit error {:.3})", r.block, r.fit_error))
                .collect();
            println!("replaced: {}", blocks.join(", "));
        }
        let t2 = Instant::now();
        let summary = compile::export(&c, opts.output.as_ref().unwrap(), &opts)?;
        let t3 = Instant::now();
        let secs = |x: Instant, y: Instant| (y - x).as_secs_f64();
        let times = [secs(t0, t1), secs(t1, t2), secs(t2, t3), secs(t0, t3)];
        Ok((c, times, summary.parameters))
    };
    let (full, t_full, p_full) = compile("full.onnx", false)?;
    let (pruned, t_pruned, p_pruned) = compile("pruned.onnx", true)?;
    println!(
        "\n| compile (f32) | lift (s) | calibration + fit (s) | export (s) | total (s) | parameters |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for (name, t, p) in [
        ("unpruned", t_full, p_full),
        ("--prune", t_pruned, p_pruned),
    ] {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {p} |",
            t[0], t[1], t[2], t[3]
        );
    }
    println!(
        "pruned minus unpruned compile: {:.2} s; parameters {:.3}× of unpruned",
        t_pruned[3] - t_full[3],
        p_pruned as f64 / p_full as f64
    );

    let load = |c: &Compiled| -> Res<LoadedModel> {
        let bytes = to_embedded_bytes(&c.graph, &c.ckpt, Target::Cuda)?;
        Ok(LoadedModel::from_bytes(&bytes, a.threads)?)
    };
    let mut models = [load(&full)?, load(&pruned)?];
    let spec = SyntheticSpec {
        samples: 1,
        image_tokens: a.image_tokens,
        text_tokens: a.text_tokens,
        seed: 1,
    };
    let inputs = InputSet::synthetic(&full.ckpt.config, &spec)?.tensors;
    let mut outputs = Vec::new();
    for m in &mut models {
        for _ in 0..a.warmup.max(1) {
            outputs.push(m.run(&inputs)?.remove(0).data);
        }
    }
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..a.repeat {
        for k in [round % 2, 1 - round % 2] {
            let t = Instant::now();
            models[k].run(&inputs)?;
            times[k].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    let (u, p) = (median(&times[0]), median(&times[1]));
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "\nONNX Runtime CPU, f32, batch 1, {} image + {} text tokens, {} threads, {} interleaved runs each:",
        a.image_tokens, a.text_tokens, a.threads, a.repeat
    );
    println!("\n| model | median (ms) | min (ms) |\n| --- | --- | --- |");
    println!("| unpruned | {u:.1} | {:.1} |", min(&times[0]));
    println!("| --prune {} | {p:.1} | {:.1} |", a.prune, min(&times[1]));
    println!("latency ratio pruned/unpruned (medians): {:.3}", p / u);
    let first_pruned = a.warmup.max(1);
    println!(
        "output rel. L2 of pruned vs unpruned on this input: {:.4}",
        relative_l2(&outputs[first_pruned], &outputs[0])
    );
    Ok(())
}
