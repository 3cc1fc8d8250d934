//! Training one sandwich: its piece lowered to candle with the trainable tensors, rectified
//! Adam (`rates`) over seeded mini-batches of the calibration samples (read from their spilled
//! rows), the loss at the exit measured over every sample before and after, and the trained
//! values read back.

use super::data::SandwichData;
use super::rates::SandwichAdam;
use super::sandwich::Sandwich;
use super::{Entry, SandwichReport, StOptions};
use crate::checkpoint::lora::Adapter;
use crate::error::{Error, Result};
use crate::ir::TensorStore;
use crate::rng::Rng;
use crate::runtime::candle::{Lowered, Trainables, from_host, to_host};
use crate::runtime::spill::{Held, Rows};
use candle_core::{DType, Device, Tensor as CandleTensor};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

/// A trained sandwich.
pub struct Trained {
    pub report: SandwichReport,
    pub adapters: Vec<Adapter>,
    pub fitted: Vec<(String, Arc<Vec<f32>>)>,
    /// The trained piece's outputs on every sample (spilled), in its output order: what the
    /// next sandwich's entry is walked from with `Entry::Pruned` (empty with `Entry::Original`).
    pub exits: Vec<Held>,
}

/// The RNG streams of one sandwich's adapters and mini-batch order.
const INIT_STREAM: u64 = 0x5354_0000;
const ORDER_STREAM: u64 = 0x5354_8000;

pub fn train(
    weights: &dyn TensorStore,
    data: &SandwichData,
    trainables: &Trainables,
    sandwich: &Sandwich,
    index: usize,
    options: &StOptions,
    device: &Device,
) -> Result<Trained> {
    let start = Instant::now();
    let mut init = Rng::new(options.seed, INIT_STREAM + index as u64);
    let lowered = Lowered::new(
        &data.piece,
        weights,
        trainables,
        device,
        DType::F32,
        &mut init,
    )?;
    let vars: Vec<_> = lowered.params().iter().map(|p| p.var.clone()).collect();
    let trainable_parameters = vars.iter().map(|v| v.elem_count()).sum();
    let batches = Batches::new(data, options.batch);
    let loss_before = batches.mean_loss(&lowered, device)?;
    let start_values = vars
        .iter()
        .map(|v| v.as_tensor().copy())
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(candle_error)?;

    let mut optimizer = SandwichAdam::new(lowered.params(), trainables, options)?;
    let mut log = StepLog::open(options, sandwich)?;
    let mut curve = Vec::with_capacity(options.steps);
    let bar = progress(sandwich, options);
    let mut order = Rng::new(options.seed, ORDER_STREAM + index as u64);
    let mut queue: Vec<usize> = Vec::new();
    let training = Instant::now();
    for step in 0..options.steps {
        if queue.len() < options.batch {
            queue = shuffled(batches.samples, &mut order);
        }
        let rows: Vec<usize> = queue.drain(..options.batch).collect();
        let loss = batches.loss(&lowered, device, &rows)?;
        let factor = optimizer.rectification();
        optimizer.backward_step(&loss)?;
        let value = loss.to_scalar::<f32>().map_err(candle_error)?;
        curve.push(f64::from(value));
        log.write(step, factor, value)?;
        if !value.is_finite() {
            return Err(Error::Usage(format!(
                "sandwich training of {sandwich} diverged (loss {value}): lower --st-lr"
            )));
        }
        bar.set_message(format!("loss {value:.4e}"));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let step_seconds = training.elapsed().as_secs_f64();
    let mut loss_after = batches.mean_loss(&lowered, device)?;
    // Training that ends above where it started (too high a learning rate, or Adam's
    // normalised steps on the near-zero gradients of an exact fit) would ship a model worse
    // than plain BRLL on the very data it trained on: the sandwich keeps its starting point,
    // whose loss is the one measured before training.
    let reverted_from = (loss_after > loss_before).then_some(loss_after);
    if reverted_from.is_some() {
        for (var, value) in vars.iter().zip(&start_values) {
            var.set(value).map_err(candle_error)?;
        }
        loss_after = loss_before;
    }
    let exits = match options.entry {
        Entry::Pruned => batches.outputs(&lowered, device)?,
        Entry::Original => Vec::new(),
    };

    let adapters = super::adapters(&lowered)?;
    let fitted = lowered
        .full_values()?
        .into_iter()
        .map(|(name, values)| (name, Arc::new(values)))
        .collect();
    Ok(Trained {
        report: SandwichReport {
            sandwich: sandwich.clone(),
            loss_before,
            loss_after,
            steps: options.steps,
            trainable_parameters,
            seconds: start.elapsed().as_secs_f64(),
            step_seconds,
            reverted_from,
            curve,
        },
        adapters,
        fitted,
        exits,
    })
}

/// The sandwich's data cut into candle tensors by sample.
struct Batches<'a> {
    data: &'a SandwichData,
    samples: usize,
    batch: usize,
}

impl<'a> Batches<'a> {
    fn new(data: &'a SandwichData, batch: usize) -> Self {
        let samples = data.entry.iter().find_map(Held::samples).unwrap_or(1);
        Self {
            data,
            samples,
            batch,
        }
    }

    /// The piece's outputs on samples `rows`.
    fn forward(
        &self,
        lowered: &Lowered,
        device: &Device,
        rows: &[usize],
    ) -> Result<Vec<CandleTensor>> {
        let inputs = self
            .data
            .entry
            .iter()
            .map(|held| from_host(&held.gather(rows)?, device, DType::F32))
            .collect::<Result<Vec<_>>>()?;
        lowered.forward(&inputs)
    }

    /// Sum over the exits of the mean squared error on samples `rows`.
    fn loss(&self, lowered: &Lowered, device: &Device, rows: &[usize]) -> Result<CandleTensor> {
        let outputs = self.forward(lowered, device, rows)?;
        let mut total: Option<CandleTensor> = None;
        for (out, target) in outputs.iter().zip(&self.data.targets) {
            let target = from_host(&target.gather(rows)?, device, DType::F32)?;
            let mse = out
                .sub(&target)
                .and_then(|d| d.sqr())
                .and_then(|d| d.mean_all())
                .map_err(candle_error)?;
            total = Some(match total {
                Some(t) => t.add(&mse).map_err(candle_error)?,
                None => mse,
            });
        }
        total.ok_or_else(|| Error::Internal("a sandwich with no exit".into()))
    }

    /// The loss over every sample, batch by batch, weighted by batch size.
    fn mean_loss(&self, lowered: &Lowered, device: &Device) -> Result<f64> {
        let mut sum = 0.0;
        for rows in self.chunks() {
            let loss = self.loss(lowered, device, &rows)?;
            let value = loss.detach().to_scalar::<f32>().map_err(candle_error)?;
            sum += f64::from(value) * rows.len() as f64;
        }
        Ok(sum / self.samples as f64)
    }

    /// The piece's outputs on every sample, spilled batch by batch.
    fn outputs(&self, lowered: &Lowered, device: &Device) -> Result<Vec<Held>> {
        let mut spilled: Vec<Rows> = Vec::new();
        for rows in self.chunks() {
            let outputs = self.forward(lowered, device, &rows)?;
            for (k, out) in outputs.iter().enumerate() {
                let out = to_host(self.data.targets[k].name(), &out.detach())?;
                match spilled.get_mut(k) {
                    Some(acc) => acc.push(&out)?,
                    None => spilled.push(Rows::spill(&out)?),
                }
            }
        }
        Ok(spilled.into_iter().map(Held::Rows).collect())
    }

    fn chunks(&self) -> impl Iterator<Item = Vec<usize>> + '_ {
        (0..self.samples)
            .step_by(self.batch)
            .map(|s| (s..(s + self.batch).min(self.samples)).collect())
    }
}

/// A seeded permutation of `0..n` (Fisher–Yates).
fn shuffled(n: usize, rng: &mut Rng) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = ((rng.uniform() * (i + 1) as f64) as usize).min(i);
        order.swap(i, j);
    }
    order
}

fn progress(sandwich: &Sandwich, options: &StOptions) -> ProgressBar {
    let bar = match options.show_progress {
        true => ProgressBar::new(options.steps as u64),
        false => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "ST {sandwich} {{bar:30}} {{pos}}/{{len}} steps ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .expect("valid template"),
    );
    bar
}

/// `--st-log`: one line per step, appended to the file `run` started.
struct StepLog {
    file: Option<(
        std::io::BufWriter<std::fs::File>,
        String,
        std::path::PathBuf,
    )>,
}

impl StepLog {
    fn open(options: &StOptions, sandwich: &Sandwich) -> Result<Self> {
        let Some(path) = &options.log else {
            return Ok(Self { file: None });
        };
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        Ok(Self {
            file: Some((
                std::io::BufWriter::new(file),
                sandwich.to_string(),
                path.clone(),
            )),
        })
    }

    fn write(&mut self, step: usize, factor: f64, loss: f32) -> Result<()> {
        let Some((file, name, path)) = &mut self.file else {
            return Ok(());
        };
        writeln!(file, "{name}\t{}\t{factor:.4}\t{loss:.6e}", step + 1)
            .and_then(|()| file.flush())
            .map_err(|e| Error::io(path, e))
    }
}

fn candle_error(e: candle_core::Error) -> Error {
    crate::runtime::candle::candle_error("sandwich training", e)
}
