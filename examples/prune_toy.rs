//! `--prune 0.2` on the trained toy FLUX (`../shared/toy/digits`), measured on held-out digits:
//! velocity error against the full model and flow-matching loss, for every calibration source ×
//! selection rule, against two references: the best pair found by trying every pair (with the
//! same calibration), and removing the chosen blocks outright. Also draws the PNG grid.
//!
//! ```text
//! cargo run --release --example prune_toy -- ../shared/toy/digits --png docs/toy-prune.png
//! ```
//!
//! Held-out set: every digit of `heldout.safetensors` (297), packed into 64 tokens × 4 channels
//! as the toy's README says, noised to `x_s = (1 − s)·x0 + s·e` at each of `--levels` levels
//! `s = (k + ½)/levels`, with `e ~ N(0, 1)` from `rng::Rng` (`--seed`), conditioned on its
//! label's class. Velocity target `e − x0`. Every model is exported to f32 ONNX and run in ONNX
//! Runtime. Error: relative L2 of the velocity over the whole set against the unpruned model;
//! loss: mean squared error against `e − x0`.

use clap::Parser;
use fastflux::compile::{self, CompileOptions};
use fastflux::dtype::DType;
use fastflux::fit::brll::{BrllOptions, Selection};
use fastflux::fit::select::SelectRule;
use fastflux::io::safetensors::SafetensorsFile;
use fastflux::ir::BlockId;
use fastflux::metrics::relative_l2;
use fastflux::passes::brll::{BlockFit, StreamFit, apply_fits};
use fastflux::rng::Rng;
use fastflux::runtime::run_model_file;
use fastflux::sample::Grid;
use fastflux::sample::png::write_grid;
use fastflux::tensor::{Tensor, read_f32_tensors};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

#[derive(Parser, Debug)]
struct Args {
    /// The toy's folder.
    #[arg(default_value = "../shared/toy/digits")]
    toy: PathBuf,
    #[arg(long, default_value_t = 0.2)]
    prune: f64,
    /// Noise levels per held-out digit.
    #[arg(long, default_value_t = 4)]
    levels: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Calibration sources to measure (comma-separated): `synthetic` (the default inputs),
    /// `train` (the toy's train.safetensors), or `NAME=FILE`, a set in the `--calib` format (e.g.
    /// the trajectories `--calib-cond ... --calib-save FILE` wrote).
    #[arg(long, value_delimiter = ',', default_value = "synthetic,train")]
    sources: Vec<String>,
    /// The sources (by name) to try every pair with [default: all].
    #[arg(long, value_delimiter = ',')]
    pairs: Option<Vec<String>>,
    /// Draw the grid (full, blocks removed, --prune with the defaults) to this PNG.
    #[arg(long)]
    png: Option<PathBuf>,
    #[arg(long)]
    out_dir: Option<PathBuf>,
}

fn get<'a>(t: &'a [Tensor], name: &str) -> &'a Tensor {
    t.iter().find(|t| t.name == name).expect(name)
}

fn tensor(name: &str, shape: &[usize], data: Vec<f32>) -> Tensor {
    let (name, shape) = (name.to_owned(), shape.to_vec());
    Tensor { name, shape, data }
}

/// The model inputs for latents `x` ([S,64,4]) at levels `s`, conditioned on `classes`.
fn inputs(cond: &[Tensor], x: Vec<f32>, s: Vec<f32>, classes: &[usize]) -> Vec<Tensor> {
    let (txt, pooled) = (get(cond, "txt"), get(cond, "pooled"));
    let (l, ctx, p) = (txt.shape[1], txt.shape[2], pooled.shape[1]);
    let pick = |t: &Tensor, w: usize| -> Vec<f32> {
        classes
            .iter()
            .flat_map(|&k| t.data[k * w..][..w].to_vec())
            .collect()
    };
    let n = classes.len();
    vec![
        tensor("hidden_states", &[n, 64, 4], x),
        tensor("encoder_hidden_states", &[n, l, ctx], pick(txt, l * ctx)),
        tensor("pooled_projections", &[n, p], pick(pooled, p)),
        tensor("timestep", &[n], s),
        tensor("img_ids", &[64, 3], get(cond, "img_ids").data.clone()),
        tensor("txt_ids", &[l, 3], get(cond, "txt_ids").data.clone()),
    ]
}

/// Token r·8+c, channel 2i+j ← pixel (2r+i, 2c+j) (the toy's README).
fn pack(image: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; 256];
    for (r, c, q) in (0..8).flat_map(|r| (0..8).flat_map(move |c| (0..4).map(move |q| (r, c, q)))) {
        out[(r * 8 + c) * 4 + q] = image[(2 * r + q / 2) * 16 + 2 * c + q % 2];
    }
    out
}

fn velocity(model: &Path, inputs: &[Tensor]) -> Res<Vec<f32>> {
    Ok(run_model_file(model, inputs, 2)?.remove(0).data)
}

/// 20 uniform Euler steps from noise `x` at s = 1 to s = 0 (the toy's README).
fn draw(model: &Path, cond: &[Tensor], mut x: Vec<f32>, classes: &[usize]) -> Res<Vec<f32>> {
    for k in 0..20 {
        let (s, next) = (1.0 - k as f32 / 20.0, 1.0 - (k + 1) as f32 / 20.0);
        let v = velocity(
            model,
            &inputs(cond, x.clone(), vec![s; classes.len()], classes),
        )?;
        x.iter_mut().zip(&v).for_each(|(x, v)| *x += (next - s) * v);
    }
    Ok(x)
}

fn spec(blocks: &[BlockId]) -> String {
    let names: Vec<String> = blocks
        .iter()
        .map(|b| match b {
            BlockId::Double(i) => format!("double.{i}"),
            BlockId::Single(i) => format!("single.{i}"),
        })
        .collect();
    names.join(",")
}

/// Identity replacements (zero `W`, `b`) shaped like `fits`: the blocks removed outright.
fn removal(fits: &[BlockFit]) -> Vec<BlockFit> {
    let zero = |s: &StreamFit| StreamFit {
        stream: s.stream.clone(),
        weight: Arc::new(vec![0.0; s.weight.len()]),
        bias: Arc::new(vec![0.0; s.bias.len()]),
        cond_weight: None,
        relative_error: 1.0,
    };
    let one = |f: &BlockFit| BlockFit {
        block: f.block,
        streams: f.streams.iter().map(zero).collect(),
    };
    fits.iter().map(one).collect()
}

struct Held {
    inputs: Vec<Tensor>,
    target: Vec<f32>,
}

/// (relative L2 velocity error against the full model, flow-matching loss).
fn score(model: &Path, held: &Held, reference: &[f32]) -> Res<(f64, f64)> {
    let v = velocity(model, &held.inputs)?;
    let loss = v
        .iter()
        .zip(&held.target)
        .map(|(&v, &t)| f64::from(v - t).powi(2))
        .sum::<f64>()
        / v.len() as f64;
    Ok((relative_l2(&v, reference), loss))
}

fn main() -> Res<()> {
    let a = Args::parse();
    let tmp = tempfile::tempdir()?;
    let dir = a.out_dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let cond = read_f32_tensors(&a.toy.join("cond.safetensors"))?;
    let held_bytes = std::fs::read(a.toy.join("heldout.safetensors"))?;
    let held_file = safetensors::SafeTensors::deserialize(&held_bytes)?;
    let (_, images) = SafetensorsFile::open_with_other_dtypes(&a.toy.join("heldout.safetensors"))?
        .read_f32("images")?;
    let labels: Vec<i64> = held_file
        .tensor("labels")?
        .data()
        .chunks(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut rng = Rng::new(a.seed, 0);
    let (mut x, mut s, mut classes, mut target) = (vec![], vec![], vec![], vec![]);
    for (n, &label) in labels.iter().enumerate() {
        let x0 = pack(&images[n * 256..][..256]);
        for k in 0..a.levels {
            let level = (k as f32 + 0.5) / a.levels as f32;
            for &p in &x0 {
                let e = rng.normal() as f32;
                x.push((1.0 - level) * p + level * e);
                target.push(e - p);
            }
            s.push(level);
            classes.push(label as usize);
        }
    }
    let held = Held {
        inputs: inputs(&cond, x, s, &classes),
        target,
    };
    let mut noise_rng = Rng::new(a.seed, 1);
    let noise: Vec<f32> = (0..10 * 256).map(|_| noise_rng.normal() as f32).collect();
    let columns: Vec<usize> = (0..10).collect();

    let base = |out: &str| CompileOptions {
        output: Some(dir.join(out)),
        dtype: Some(DType::F32),
        axes_dim: Some(vec![4, 6, 6]),
        ..CompileOptions::new(a.toy.join("flux-bfl.safetensors"))
    };
    let build = |out: &str, brll: Option<&BrllOptions>, zero: &[BlockFit]| -> Res<_> {
        let opts = base(out);
        let mut c = compile::lift_checkpoint(&opts)?;
        let outcome = brll.map(|o| compile::fit_brll(&mut c, o)).transpose()?;
        apply_fits(&mut c.graph, zero)?;
        let path = opts.output.clone().unwrap();
        compile::export(&c, &path, &opts)?;
        Ok((path, outcome))
    };
    let options = |source: &str, selection: Selection, rule: SelectRule| -> Res<BrllOptions> {
        let mut o = BrllOptions {
            selection,
            rule,
            ..Default::default()
        };
        match source.split_once('=') {
            _ if source == "synthetic" => {}
            _ if source == "train" => o.calib = Some(a.toy.join("train.safetensors")),
            Some((_, file)) => o.calib = Some(PathBuf::from(file)),
            None => return Err(format!("unknown calibration source `{source}`").into()),
        }
        o.calibration.threads = 2;
        Ok(o)
    };

    let (full, _) = build("full.onnx", None, &[])?;
    let reference = velocity(&full, &held.inputs)?;
    let (_, full_loss) = score(&full, &held, &reference)?;
    println!(
        "held-out: {} digits x {} noise levels (k+1/2)/{} = {} samples, seed {}",
        labels.len(),
        a.levels,
        a.levels,
        classes.len(),
        a.seed
    );
    println!("full model: flow-matching loss {full_loss:.4}\n");
    println!("| calibration | selection | blocks | velocity error | FM loss | ranking (s) |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut grid: Vec<Vec<f32>> = vec![draw(&full, &cond, noise.clone(), &columns)?];
    let mut grid_labels = vec!["full".to_owned()];
    for source in &a.sources {
        let name = source.split_once('=').map_or(source.as_str(), |(n, _)| n);
        let mut default_fits = Vec::new();
        let mut pooled = Vec::new();
        for (label, rule) in [
            ("local fit", SelectRule::Local),
            ("output effect", SelectRule::Output),
        ] {
            let o = options(source, Selection::Prune(a.prune), rule)?;
            let (model, outcome) = build("pruned.onnx", Some(&o), &[])?;
            let outcome = outcome.expect("fitted");
            let blocks: Vec<BlockId> = outcome.replaced.iter().map(|r| r.block).collect();
            let (err, loss) = score(&model, &held, &reference)?;
            let seconds = outcome.ranking.as_ref().map_or(0.0, |r| r.seconds);
            println!(
                "| {name} | {label} | {} | {err:.4} | {loss:.4} | {seconds:.1} |",
                spec(&blocks)
            );
            if rule == SelectRule::Local {
                // The rule before this one: the lowest fit error pooled over a block's streams.
                let mut reports: Vec<_> = outcome.ranking.as_ref().unwrap().reports.clone();
                reports.sort_by(|a, b| a.fit_error.total_cmp(&b.fit_error));
                pooled = reports.iter().take(blocks.len()).map(|r| r.block).collect();
                pooled.sort();
            }
            if rule == SelectRule::default() {
                default_fits = outcome.replaced.iter().map(|r| r.fit.clone()).collect();
                grid.push(draw(&model, &cond, noise.clone(), &columns)?);
                grid_labels.push(format!("--prune {} ({name} calibration)", a.prune));
            }
        }
        let o = options(source, Selection::Replace(spec(&pooled)), SelectRule::Local)?;
        let (model, _) = build("pooled.onnx", Some(&o), &[])?;
        let (err, loss) = score(&model, &held, &reference)?;
        println!(
            "| {name} | local fit, pooled over streams (the old rule) | {} | {err:.4} | {loss:.4} | - |",
            spec(&pooled)
        );
        let zero = removal(&default_fits);
        let removed: Vec<BlockId> = zero.iter().map(|f| f.block).collect();
        let (model, _) = build("removed.onnx", None, &zero)?;
        let (err, loss) = score(&model, &held, &reference)?;
        println!(
            "| {name} | removed outright (output rule's blocks) | {} | {err:.4} | {loss:.4} | - |",
            spec(&removed)
        );
        if source == "synthetic" {
            grid.insert(1, draw(&model, &cond, noise.clone(), &columns)?);
            grid_labels.insert(1, format!("{} removed outright", spec(&removed)));
        }
        if a.pairs
            .as_ref()
            .is_some_and(|p| !p.iter().any(|p| p == name))
        {
            continue;
        }
        let start = Instant::now();
        let all: Vec<BlockId> = (0..2)
            .map(BlockId::Double)
            .chain((0..6).map(BlockId::Single))
            .collect();
        let mut pairs = Vec::new();
        for i in 0..all.len() {
            for j in i + 1..all.len() {
                let pair = [all[i], all[j]];
                let o = options(source, Selection::Replace(spec(&pair)), SelectRule::Local)?;
                let (model, _) = build("pair.onnx", Some(&o), &[])?;
                pairs.push((score(&model, &held, &reference)?, pair));
            }
        }
        pairs.sort_by(|a, b| a.0.0.total_cmp(&b.0.0));
        let ((err, loss), pair) = pairs[0];
        println!(
            "| {name} | best of all {} pairs ({:.0} s) | {} | {err:.4} | {loss:.4} | - |",
            pairs.len(),
            start.elapsed().as_secs_f64(),
            spec(&pair)
        );
        let listed: Vec<String> = pairs
            .iter()
            .map(|((e, _), p)| format!("{} {e:.4}", spec(p)))
            .collect();
        eprintln!("{name}: every pair, best first: {}", listed.join("; "));
    }
    if let Some(path) = &a.png {
        let rows: Vec<Tensor> = grid
            .iter()
            .map(|r| tensor("latent", &[10, 64, 4], r.clone()))
            .collect();
        let rows: Vec<&Tensor> = rows.iter().collect();
        write_grid(path, &rows, Grid { rows: 8, cols: 8 }, 4)?;
        println!(
            "\nwrote {}: columns digits 0-9, 20 Euler steps from the same noise (seed {}); rows: {}",
            path.display(),
            a.seed,
            grid_labels.join("; ")
        );
    }
    Ok(())
}
