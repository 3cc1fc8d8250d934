//! Synthetic FLUX.1 checkpoint generator.
//!
//! Writes a random, FLUX-shaped transformer checkpoint in the original Black Forest Labs (BFL)
//! tensor naming (`double_blocks.N.img_attn.qkv.weight`, ...) as one `.safetensors` file, at any
//! width and depth. It exists so the compiler can be tested and benchmarked at full scale without
//! downloading real weights.
//!
//! ```text
//! cargo run --release --example synth_checkpoint -- --hidden 3072 --heads 24 --double 10 --single 19 -o big.safetensors
//! ```
//!
//! The file is streamed through fastflux's `io::SafetensorsWriter`: the header is written first
//! (every size is known up front), then each tensor is generated chunk by chunk and handed to a
//! writer thread, so a 12 GB checkpoint needs only a few MiB of memory. Values come from a self-contained PRNG seeded by `--seed` and the
//! tensor name, so the same flags always give a byte-identical file, and the values do not depend
//! on `--prefix` or on the order tensors are generated in.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use fastflux::io::{AtomicFile, SafetensorsWriter, TensorEntry};
use fastflux::rng::Rng;
use half::{bf16, f16};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DType {
    Bf16,
    F16,
    F32,
}

impl DType {
    fn stored(self) -> fastflux::dtype::DType {
        match self {
            DType::Bf16 => fastflux::dtype::DType::BF16,
            DType::F16 => fastflux::dtype::DType::F16,
            DType::F32 => fastflux::dtype::DType::F32,
        }
    }

    /// The safetensors dtype tag and the bytes per element.
    fn tag_size(self) -> (&'static str, u64) {
        match self {
            DType::Bf16 => ("BF16", 2),
            DType::F16 => ("F16", 2),
            DType::F32 => ("F32", 4),
        }
    }
}

/// Generate a random FLUX.1 transformer checkpoint (BFL naming) as one .safetensors file.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Output path; written to a temporary name in the same folder, then renamed.
    #[arg(short, long)]
    output: PathBuf,
    /// Hidden size (model width).
    #[arg(long, default_value_t = 3072)]
    hidden: u64,
    /// Attention heads; must divide --hidden.
    #[arg(long, default_value_t = 24)]
    heads: u64,
    /// MLP width as a multiple of --hidden.
    #[arg(long, default_value_t = 4.0)]
    mlp_ratio: f64,
    /// Number of double-stream blocks.
    #[arg(long, default_value_t = 19)]
    double: u64,
    /// Number of single-stream blocks.
    #[arg(long, default_value_t = 38)]
    single: u64,
    /// Latent channels per packed image token.
    #[arg(long, default_value_t = 64)]
    in_channels: u64,
    /// Text-encoder (T5) feature size.
    #[arg(long, default_value_t = 4096)]
    context: u64,
    /// Pooled text (CLIP) vector size.
    #[arg(long, default_value_t = 768)]
    pooled: u64,
    /// Omit the guidance embedder (FLUX.1-schnell style).
    #[arg(long)]
    no_guidance: bool,
    /// Storage dtype of every tensor.
    #[arg(long, value_enum, default_value_t = DType::Bf16)]
    dtype: DType,
    /// String prepended to every tensor name, e.g. `model.diffusion_model.` for ComfyUI.
    #[arg(long, default_value = "")]
    prefix: String,
    /// PRNG seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

struct Spec {
    /// Name without `--prefix`; the PRNG is seeded from this so values ignore the prefix.
    name: String,
    shape: Vec<u64>,
    /// Values are drawn as mean + std · N(0, 1) (approximately; see `fastflux::rng::Rng::approx_normal`).
    mean: f32,
    std: f32,
}

impl Spec {
    fn new(name: String, shape: &[u64], mean: f32, std: f32) -> Self {
        Spec {
            name,
            shape: shape.to_vec(),
            mean,
            std,
        }
    }

    fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// The full BFL tensor list for the given flags, sorted by name like the safetensors library.
fn tensor_list(a: &Args) -> Vec<Spec> {
    let (h, c) = (a.hidden, a.in_channels);
    let hd = h / a.heads;
    // Python's int(hidden * mlp_ratio), as in the reference implementation.
    let m = (h as f64 * a.mlp_ratio) as u64;
    let mut v = Vec::new();
    // Weights N(0, 1/fan_in) keep activations near unit scale layer after layer; biases N(0, 0.02²)
    // stay small next to the matmul; RMSNorm scales 1 + N(0, 0.05²) are near identity.
    let linear = |v: &mut Vec<Spec>, name: String, out: u64, fan_in: u64| {
        let std = 1.0 / (fan_in as f32).sqrt();
        v.push(Spec::new(
            format!("{name}.weight"),
            &[out, fan_in],
            0.0,
            std,
        ));
        v.push(Spec::new(format!("{name}.bias"), &[out], 0.0, 0.02));
    };
    let scale = |v: &mut Vec<Spec>, name: String| v.push(Spec::new(name, &[hd], 1.0, 0.05));

    linear(&mut v, "img_in".into(), h, c);
    linear(&mut v, "txt_in".into(), h, a.context);
    // 256 = size of the sinusoidal timestep/guidance embedding.
    let mut embedders = vec![("time_in", 256), ("vector_in", a.pooled)];
    if !a.no_guidance {
        embedders.push(("guidance_in", 256));
    }
    for (e, fan_in) in embedders {
        linear(&mut v, format!("{e}.in_layer"), h, fan_in);
        linear(&mut v, format!("{e}.out_layer"), h, h);
    }
    for i in 0..a.double {
        for s in ["img", "txt"] {
            let p = format!("double_blocks.{i}.{s}");
            linear(&mut v, format!("{p}_mod.lin"), 6 * h, h);
            linear(&mut v, format!("{p}_attn.qkv"), 3 * h, h);
            scale(&mut v, format!("{p}_attn.norm.query_norm.scale"));
            scale(&mut v, format!("{p}_attn.norm.key_norm.scale"));
            linear(&mut v, format!("{p}_attn.proj"), h, h);
            linear(&mut v, format!("{p}_mlp.0"), m, h);
            linear(&mut v, format!("{p}_mlp.2"), h, m);
        }
    }
    for i in 0..a.single {
        let p = format!("single_blocks.{i}");
        linear(&mut v, format!("{p}.modulation.lin"), 3 * h, h);
        linear(&mut v, format!("{p}.linear1"), 3 * h + m, h);
        linear(&mut v, format!("{p}.linear2"), h, h + m);
        scale(&mut v, format!("{p}.norm.query_norm.scale"));
        scale(&mut v, format!("{p}.norm.key_norm.scale"));
    }
    linear(&mut v, "final_layer.adaLN_modulation.1".into(), 2 * h, h);
    linear(&mut v, "final_layer.linear".into(), c, h);

    // A common prefix does not change the order, so sorting the bare names is enough.
    v.sort_by(|x, y| x.name.cmp(&y.name));
    v
}

/// FNV-1a, so each tensor's stream depends only on its own name, not on generation order.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Elements per chunk: 1 Mi = 2–4 MiB. At most a few chunks are alive at once, whatever the size.
const CHUNK: u64 = 1 << 20;

/// Fills `buf` with encoded samples; monomorphised per dtype so the hot loop has no branches.
fn fill<const N: usize>(buf: &mut [u8], mut x: impl FnMut() -> f32, enc: impl Fn(f32) -> [u8; N]) {
    for out in buf.chunks_exact_mut(N) {
        out.copy_from_slice(&enc(x()));
    }
}

/// Generates one tensor chunk by chunk, reusing buffers from `free` and sending them to `out`.
/// Returns false if the writer thread has stopped (it failed; the error comes from its join).
fn gen_tensor(s: &Spec, a: &Args, free: &Receiver<Vec<u8>>, out: &SyncSender<Vec<u8>>) -> bool {
    let mut rng = Rng::new(a.seed, fnv1a(&s.name));
    let mut left = s.numel();
    while left > 0 {
        let n = left.min(CHUNK);
        let mut buf = free.try_recv().unwrap_or_default();
        buf.resize((n * a.dtype.tag_size().1) as usize, 0);
        let sample = || s.mean + s.std * rng.approx_normal();
        match a.dtype {
            DType::Bf16 => fill(&mut buf, sample, |x| bf16::from_f32(x).to_le_bytes()),
            DType::F16 => fill(&mut buf, sample, |x| f16::from_f32(x).to_le_bytes()),
            DType::F32 => fill(&mut buf, sample, f32::to_le_bytes),
        }
        if out.send(buf).is_err() {
            return false;
        }
        left -= n;
    }
    true
}

/// The header metadata: the flags the file was generated with.
fn metadata(a: &Args) -> BTreeMap<String, String> {
    let (tag, _) = a.dtype.tag_size();
    [
        ("format", "pt".to_owned()),
        ("generator", "fastflux synth_checkpoint".to_owned()),
        ("hidden", a.hidden.to_string()),
        ("heads", a.heads.to_string()),
        ("mlp_ratio", a.mlp_ratio.to_string()),
        ("double", a.double.to_string()),
        ("single", a.single.to_string()),
        ("in_channels", a.in_channels.to_string()),
        ("context", a.context.to_string()),
        ("pooled", a.pooled.to_string()),
        ("guidance", (!a.no_guidance).to_string()),
        ("dtype", tag.to_lowercase()),
        ("prefix", a.prefix.clone()),
        ("seed", a.seed.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Writes the whole checkpoint under a temporary name, then renames it to `--output`.
fn write_file(a: &Args, specs: &[Spec]) -> Result<u64, Box<dyn Error>> {
    let dtype = a.dtype.stored();
    let entries: Vec<TensorEntry> = specs
        .iter()
        .map(|s| TensorEntry {
            name: format!("{}{}", a.prefix, s.name),
            dtype,
            shape: s.shape.iter().map(|&d| d as usize).collect(),
        })
        .collect();
    let mut w = SafetensorsWriter::create(AtomicFile::new(&a.output)?, &entries, &metadata(a))?;
    // A second thread does the write() calls, so time blocked in the kernel (page-cache copies,
    // dirty-page throttling) overlaps with generating the next chunk instead of adding to it.
    let (out, chunks) = mpsc::sync_channel::<Vec<u8>>(2);
    let (recycle, free) = mpsc::channel();
    let writer = thread::spawn(move || -> fastflux::Result<SafetensorsWriter> {
        for buf in chunks {
            w.write(&buf)?;
            recycle.send(buf).ok();
        }
        Ok(w)
    });
    specs.iter().all(|s| gen_tensor(s, a, &free, &out)); // stops early if the writer failed
    drop(out);
    let w = writer.join().expect("writer thread panicked")?;
    // Checks the size, syncs to disk and renames: a crash never leaves a truncated file under
    // the final name, and a failure leaves no temporary behind.
    Ok(w.finish()?)
}

fn main() -> ExitCode {
    let result = run(Args::parse());
    if let Err(e) = &result {
        eprintln!("error: {e}");
    }
    ExitCode::from(u8::from(result.is_err()))
}

fn run(a: Args) -> Result<(), Box<dyn Error>> {
    let dims = [a.hidden, a.heads, a.in_channels, a.context, a.pooled];
    let m = a.hidden as f64 * a.mlp_ratio;
    if dims.contains(&0) || !a.hidden.is_multiple_of(a.heads) || !(1.0..1e12).contains(&m) {
        return Err("sizes must be positive, --hidden divisible by --heads, MLP width ≥ 1".into());
    }
    let start = Instant::now();
    let specs = tensor_list(&a);
    let params: u64 = specs.iter().map(Spec::numel).sum();

    // An existing directory is refused before anything is written (by `AtomicFile::new`).
    let bytes = write_file(&a, &specs)?;

    let (n, secs) = (specs.len(), start.elapsed().as_secs_f64());
    let mbps = bytes as f64 / 1e6 / secs.max(1e-9);
    let out = a.output.display();
    println!(
        "{out}: {n} tensors, {params} parameters, {bytes} bytes, {secs:.2} s ({mbps:.0} MB/s)"
    );
    Ok(())
}
