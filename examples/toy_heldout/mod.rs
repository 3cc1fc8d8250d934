//! The held-out measure of the trained toy FLUX (`../shared/toy/digits`), shared by the toy
//! benchmarks (`prune_toy`, `st_toy`): the held-out set, its scores, the removal reference and
//! the sampling that draws the PNG grids.
//!
//! Held-out set: every digit of `heldout.safetensors` (297), packed into 64 tokens × 4 channels
//! as the toy's README says, noised to `x_s = (1 − s)·x0 + s·e` at each of `levels` levels
//! `s = (k + ½)/levels`, with `e ~ N(0, 1)` from `rng::Rng` (`seed`, stream 0), conditioned on
//! its label's class. Velocity target `e − x0`. Every model is exported to f32 ONNX and run in
//! ONNX Runtime. Error: relative L2 of the velocity over the whole set against the unpruned
//! model; loss: mean squared error against `e − x0`.

#![allow(dead_code)] // each example uses its own subset

use fastflux::compile::{self, CompileOptions};
use fastflux::dtype::DType;
use fastflux::fit::brll::{BrllOptions, BrllOutcome};
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

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

pub fn get<'a>(t: &'a [Tensor], name: &str) -> &'a Tensor {
    t.iter().find(|t| t.name == name).expect(name)
}

pub fn tensor(name: &str, shape: &[usize], data: Vec<f32>) -> Tensor {
    let (name, shape) = (name.to_owned(), shape.to_vec());
    Tensor { name, shape, data }
}

/// The model inputs (in the ONNX input names) for latents `x` ([S,64,4]) at levels `s`, conditioned on `classes`.
pub fn inputs(cond: &[Tensor], x: Vec<f32>, s: Vec<f32>, classes: &[usize]) -> Vec<Tensor> {
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
pub fn pack(image: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; 256];
    for (r, c, q) in (0..8).flat_map(|r| (0..8).flat_map(move |c| (0..4).map(move |q| (r, c, q)))) {
        out[(r * 8 + c) * 4 + q] = image[(2 * r + q / 2) * 16 + 2 * c + q % 2];
    }
    out
}

fn velocity(model: &Path, inputs: &[Tensor]) -> Res<Vec<f32>> {
    Ok(run_model_file(model, inputs, 2)?.remove(0).data)
}

/// `--replace` spelling of `blocks`.
pub fn spec(blocks: &[BlockId]) -> String {
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
pub fn removal(fits: &[BlockFit]) -> Vec<BlockFit> {
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

/// The toy's held-out digits in `dir`: the 16×16 images (one after the other, as f32) and
/// their labels. The crate's reader decodes floats only; the labels are i64, read here.
pub fn heldout_digits(dir: &Path) -> Res<(Vec<f32>, Vec<i64>)> {
    let held = dir.join("heldout.safetensors");
    let (_, images) = SafetensorsFile::open_with_other_dtypes(&held)?.read_f32("images")?;
    let held_bytes = std::fs::read(&held)?;
    let labels = safetensors::SafeTensors::deserialize(&held_bytes)?
        .tensor("labels")?
        .data()
        .chunks(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
        .collect();
    Ok((images, labels))
}

/// The toy, its held-out set, the full model's velocity on it, and a folder for the models.
pub struct Toy {
    pub dir: PathBuf,
    pub folder: PathBuf,
    cond: Vec<Tensor>,
    inputs: Vec<Tensor>,
    target: Vec<f32>,
    reference: Vec<f32>,
    pub digits: usize,
    pub samples: usize,
    /// The full model's flow-matching loss on the held-out set.
    pub full_loss: f64,
    pub full: PathBuf,
}

impl Toy {
    /// Reads the toy in `dir`, builds the held-out set (`levels`, `seed`) and exports the full
    /// model into `folder`.
    pub fn open(dir: &Path, folder: &Path, levels: usize, seed: u64) -> Res<Self> {
        let cond = read_f32_tensors(&dir.join("cond.safetensors"))?;
        let (images, labels) = heldout_digits(dir)?;
        let mut rng = Rng::new(seed, 0);
        let (mut x, mut s, mut classes, mut target) = (vec![], vec![], vec![], vec![]);
        for (n, &label) in labels.iter().enumerate() {
            let x0 = pack(&images[n * 256..][..256]);
            for k in 0..levels {
                let level = (k as f32 + 0.5) / levels as f32;
                for &p in &x0 {
                    let e = rng.normal() as f32;
                    x.push((1.0 - level) * p + level * e);
                    target.push(e - p);
                }
                s.push(level);
                classes.push(label as usize);
            }
        }
        let mut toy = Self {
            dir: dir.to_owned(),
            folder: folder.to_owned(),
            inputs: inputs(&cond, x, s, &classes),
            cond,
            target,
            reference: Vec::new(),
            digits: labels.len(),
            samples: classes.len(),
            full_loss: 0.0,
            full: PathBuf::new(),
        };
        let (full, _) = toy.build("full.onnx", None, &[])?;
        toy.reference = velocity(&full, &toy.inputs)?;
        toy.full_loss = toy.loss(&toy.reference);
        toy.full = full;
        Ok(toy)
    }

    /// The compile options every toy model shares: f32, the toy's axes, written to `out` in
    /// the folder.
    pub fn options(&self, out: &str) -> CompileOptions {
        CompileOptions {
            output: Some(self.folder.join(out)),
            dtype: Some(DType::F32),
            axes_dim: Some(vec![4, 6, 6]),
            ..CompileOptions::new(self.dir.join("flux-bfl.safetensors"))
        }
    }

    /// Exports the toy to `out`, BRLL-fitted with `brll` when given, with `zero` applied
    /// (`removal`) after it.
    pub fn build(
        &self,
        out: &str,
        brll: Option<&BrllOptions>,
        zero: &[BlockFit],
    ) -> Res<(PathBuf, Option<BrllOutcome>)> {
        let opts = self.options(out);
        let mut c = compile::lift_checkpoint(&opts)?;
        let outcome = brll.map(|o| compile::fit_brll(&mut c, o)).transpose()?;
        apply_fits(&mut c.graph, zero)?;
        let path = opts.output.clone().unwrap();
        compile::export(&c, &path, &opts)?;
        Ok((path, outcome))
    }

    /// (relative L2 velocity error against the full model, flow-matching loss) of `model` on
    /// the held-out set.
    pub fn score(&self, model: &Path) -> Res<(f64, f64)> {
        let v = velocity(model, &self.inputs)?;
        Ok((relative_l2(&v, &self.reference), self.loss(&v)))
    }

    /// Mean squared error of velocities `v` against the held-out targets `e − x0`.
    fn loss(&self, v: &[f32]) -> f64 {
        let sum: f64 = v
            .iter()
            .zip(&self.target)
            .map(|(&v, &t)| f64::from(v - t).powi(2))
            .sum();
        sum / v.len() as f64
    }

    /// One digit per class 0–9: 20 uniform Euler steps from the same noise (`seed`, stream 1)
    /// at s = 1 to s = 0 (the toy's README).
    pub fn draw(&self, model: &Path, seed: u64) -> Res<Vec<f32>> {
        let mut noise_rng = Rng::new(seed, 1);
        let mut x: Vec<f32> = (0..10 * 256).map(|_| noise_rng.normal() as f32).collect();
        let classes: Vec<usize> = (0..10).collect();
        for k in 0..20 {
            let (s, next) = (1.0 - k as f32 / 20.0, 1.0 - (k + 1) as f32 / 20.0);
            let step = inputs(&self.cond, x.clone(), vec![s; 10], &classes);
            let v = velocity(model, &step)?;
            x.iter_mut().zip(&v).for_each(|(x, v)| *x += (next - s) * v);
        }
        Ok(x)
    }
}

/// Writes rows of `draw`n digits as a PNG grid.
pub fn write_rows(path: &Path, rows: &[Vec<f32>]) -> Res<()> {
    let rows: Vec<Tensor> = rows
        .iter()
        .map(|r| tensor("latent", &[10, 64, 4], r.clone()))
        .collect();
    let rows: Vec<&Tensor> = rows.iter().collect();
    write_grid(path, &rows, Grid { rows: 8, cols: 8 }, 4)?;
    Ok(())
}
