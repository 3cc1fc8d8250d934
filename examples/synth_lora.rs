//! Synthetic LoRA generator: a random kohya-format LoRA (`lora_unet_…lora_down/lora_up/.alpha`)
//! for a given FLUX checkpoint, covering every linear layer of its double and single blocks at
//! one rank. It exists to measure what folding costs at scale (see `bench_lora`).
//!
//! ```text
//! cargo run --release --example synth_lora -- /tmp/mid.safetensors --rank 16 -o /tmp/mid-lora.safetensors
//! ```
//!
//! Only the checkpoint's header is read (through fastflux's own reader, so the layer list is
//! the one the compiler sees); values come from a seeded PRNG, `down` N(0, 1/in), `up` small,
//! so the folded model stays near the base one.

use clap::Parser;
use fastflux::checkpoint::FluxCheckpoint;
use fastflux::dtype::DType;
use fastflux::io::{AtomicFile, SafetensorsWriter, TensorEntry};
use fastflux::rng::Rng;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

/// Generate a random kohya-format LoRA covering the blocks' linear layers of a FLUX checkpoint.
#[derive(Parser, Debug)]
struct Args {
    /// The checkpoint the LoRA is for (any naming fastflux reads).
    checkpoint: PathBuf,
    #[arg(short, long)]
    output: PathBuf,
    #[arg(long, default_value_t = 16)]
    rank: usize,
    /// kohya's alpha (the delta is scaled by alpha/rank).
    #[arg(long, default_value_t = 8.0)]
    alpha: f32,
    /// RoPE axes, when the head width is not FLUX's 128.
    #[arg(long, value_delimiter = ',')]
    axes_dim: Option<Vec<usize>>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
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
    let ckpt = FluxCheckpoint::open(&a.checkpoint, a.axes_dim.clone())?;
    let mut rng = Rng::new(a.seed, 0);
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut covered = 0usize;
    for (name, shape) in ckpt.config.parameters() {
        let in_blocks = name.starts_with("double_blocks.") || name.starts_with("single_blocks.");
        let (Some(module), &[out, inp]) = (name.strip_suffix(".weight"), shape.as_slice()) else {
            continue;
        };
        if !in_blocks {
            continue;
        }
        // uniform[-1,1) has variance 1/3: down ~ 1/√in keeps A·x near unit scale.
        let down_scale = (3.0 / inp as f32).sqrt();
        let down: Vec<f32> = (0..a.rank * inp)
            .map(|_| (2.0 * rng.uniform() as f32 - 1.0) * down_scale)
            .collect();
        let up: Vec<f32> = (0..out * a.rank)
            .map(|_| (2.0 * rng.uniform() as f32 - 1.0) * 1e-3)
            .collect();
        let key = format!("lora_unet_{}", module.replace('.', "_"));
        tensors.push((
            format!("{key}.lora_down.weight"),
            vec![a.rank, inp],
            bytes(&down),
        ));
        tensors.push((
            format!("{key}.lora_up.weight"),
            vec![out, a.rank],
            bytes(&up),
        ));
        tensors.push((format!("{key}.alpha"), vec![], bytes(&[a.alpha])));
        covered += 1;
    }
    // By name, as the safetensors library orders tensors of one type.
    tensors.sort_by(|x, y| x.0.cmp(&y.0));
    let entries: Vec<TensorEntry> = tensors
        .iter()
        .map(|(name, shape, _)| TensorEntry {
            name: name.clone(),
            dtype: DType::F32,
            shape: shape.clone(),
        })
        .collect();
    let target = AtomicFile::new(&a.output)?;
    let mut out = SafetensorsWriter::create(target, &entries, &BTreeMap::new())?;
    for (_, _, data) in &tensors {
        out.write(data)?;
    }
    out.finish()?;
    println!(
        "wrote {}: {covered} linear layers at rank {}, alpha {}",
        a.output.display(),
        a.rank,
        a.alpha
    );
    Ok(())
}

fn bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
