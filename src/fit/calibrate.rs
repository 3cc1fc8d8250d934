//! Calibration: runs the model block by block (by default in ONNX Runtime) on calibration inputs, fits each
//! block's linear replacement from the block's captured input and output, and — when fitting
//! for real — carries the replaced blocks' outputs forward, so that every later fit sees the
//! activations the pruned model will feed it.
//!
//! The activations between stages are spilled (`runtime::spill`) and read back a chunk of
//! samples at a time, the normal equations accumulated chunk by chunk: the process holds one
//! stage run's chunk (`--calib-batch`, fewer where the memory budget says so), however many
//! samples and blocks there are.

use super::effect;
use super::lstsq::NormalEquations;
pub use super::memory::{Limits, MemoryPlan};
use crate::checkpoint::FluxCheckpoint;
use crate::error::{Error, Result};
use crate::inputs::InputSet;
use crate::ir::{BlockId, Graph, Op, Stream, Value};
use crate::metrics::cosine;
use crate::passes::brll::{BlockFit, StreamFit};
use crate::runtime::spill::SpilledEnv;
use crate::runtime::staged::{Activations, StagedRunner};
use crate::runtime::{ExecutionProvider, MemoryBudget, OrtBackend};
use crate::tensor::Tensor;
use faer::{Accum, MatMut, MatRef, Par};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum FitKind {
    /// `y − x ≈ W x + b` (the paper's replacement).
    Plain,
    /// `y − x ≈ W x + U silu(vec) + b`: the map may depend on the noise level and prompt.
    Conditioned,
}

#[derive(Clone, Debug)]
pub struct CalibrationOptions {
    pub kind: FitKind,
    /// Relative ridge of the normal equations (see `lstsq::DEFAULT_RIDGE`).
    pub ridge: f64,
    /// Samples per stage run.
    pub batch: usize,
    /// ONNX Runtime intra-op threads (0 = one per physical core).
    pub threads: usize,
    /// Where ONNX Runtime runs the stages.
    pub provider: ExecutionProvider,
    pub show_progress: bool,
    /// Calibration samples the output effect is measured on (0 = all; see `effect`).
    pub effect_samples: usize,
    /// `--memory-budget`: bounds the samples per stage run and the output effect's groups.
    pub memory_budget: MemoryBudget,
}

impl CalibrationOptions {
    /// What the memory plan reads of these options.
    pub fn limits(&self) -> Limits {
        Limits {
            budget: self.memory_budget,
            batch: self.batch,
            effect_samples: self.effect_samples,
        }
    }
}

/// What calibration learned about one block.
#[derive(Clone, Debug)]
pub struct BlockReport {
    pub block: BlockId,
    /// `Σ‖y − x − fit‖² / Σ‖y − x‖²` over the block's streams.
    pub fit_error: f64,
    /// Mean cosine similarity of a token's input and output: near 1, the block changes little.
    pub cosine: f64,
    /// Parameters of the branch minus those of the fitted nodes.
    pub params_saved: i64,
    /// Relative L2 error of the model's output, on the calibration inputs, when this block
    /// alone is replaced by its fit (`effect`); `None` when not measured.
    pub output_effect: Option<f64>,
    pub fit: BlockFit,
}

impl BlockReport {
    /// The local score `--select local` ranks by: the worst stream's fit error, so that a
    /// well-fitting text stream cannot hide a poorly fitting image stream.
    pub fn worst_stream_error(&self) -> f64 {
        self.fit
            .streams
            .iter()
            .map(|s| s.relative_error)
            .fold(0.0, f64::max)
    }
}

/// Fits every block on the original model's activations: the ranking `--prune` chooses from.
/// With `measure_effect`, also each block's output effect (see `effect`).
pub fn rank_blocks(
    graph: &Graph,
    ckpt: &FluxCheckpoint,
    inputs: &InputSet,
    options: &CalibrationOptions,
    measure_effect: bool,
) -> Result<Vec<BlockReport>> {
    let all: BTreeSet<BlockId> = graph.blocks();
    let pass = if measure_effect {
        Pass::RankWithEffect
    } else {
        Pass::Rank
    };
    calibrate(graph, ckpt, inputs, options, &all, pass)
}

/// Fits the `chosen` blocks in model order, each on the activations that the model with the
/// earlier chosen blocks already replaced produces.
pub fn fit_sequentially(
    graph: &Graph,
    ckpt: &FluxCheckpoint,
    inputs: &InputSet,
    chosen: &BTreeSet<BlockId>,
    options: &CalibrationOptions,
) -> Result<Vec<BlockReport>> {
    calibrate(graph, ckpt, inputs, options, chosen, Pass::Sequential)
}

#[derive(Copy, Clone, PartialEq, Eq)]
enum Pass {
    /// Fit on the original activations.
    Rank,
    /// The same, and measure each block's output effect through variants.
    RankWithEffect,
    /// Fit, then carry the fit's prediction forward.
    Sequential,
}

fn calibrate(
    graph: &Graph,
    ckpt: &FluxCheckpoint,
    inputs: &InputSet,
    options: &CalibrationOptions,
    fit_blocks: &BTreeSet<BlockId>,
    pass: Pass,
) -> Result<Vec<BlockReport>> {
    let effect_over = (pass == Pass::RankWithEffect).then_some(fit_blocks.len());
    let memory = MemoryPlan::new(graph, inputs, options.limits(), effect_over);
    let runner = staged_runner(graph, ckpt, options, inputs)?;
    let n = inputs.samples;
    let bar = progress_bar(options, runner.chunks(n), "calibrating");
    let runner = runner.with_progress(bar.clone());
    let mut env = SpilledEnv::default();
    runner.load_inputs_into(&inputs.tensors, &mut env)?;
    let mut reports = Vec::new();
    for k in 0..runner.stages().len() {
        let block = runner.stages()[k].block;
        bar.set_message(block.map(|b| b.to_string()).unwrap_or_default());
        runner.run_stage(k, &mut env)?;
        if let Some(block) = block.filter(|b| fit_blocks.contains(b)) {
            let io = &graph.block_io[&block];
            let mut streams = Vec::new();
            let (mut residual, mut unexplained, mut cosines, mut tokens) = (0.0, 0.0, 0.0, 0usize);
            for stream in &io.streams {
                let stats = fit_stream(&env, stream, io.condition, n, runner.batch(), options)?;
                residual += stats.residual;
                unexplained += stats.fit.relative_error * stats.residual;
                cosines += stats.cosine_sum;
                tokens += stats.tokens;
                streams.push(StreamFit {
                    stream: stream.name.clone(),
                    weight: Arc::new(stats.fit.weight),
                    bias: Arc::new(stats.fit.bias),
                    cond_weight: (options.kind == FitKind::Conditioned)
                        .then(|| Arc::new(stats.fit.cond_weight)),
                    relative_error: stats.fit.relative_error,
                });
            }
            let fit = BlockFit { block, streams };
            if pass == Pass::Sequential {
                for (stream, f) in io.streams.iter().zip(&fit.streams) {
                    replace_with_prediction(&mut env, stream, io.condition, f, runner.batch())?;
                }
            }
            reports.push(BlockReport {
                block,
                fit_error: if residual > 0.0 {
                    unexplained / residual
                } else {
                    0.0
                },
                cosine: cosines / tokens.max(1) as f64,
                params_saved: branch_params(graph, block) as i64 - fitted_params(&fit) as i64,
                output_effect: None,
                fit,
            });
        }
        runner.release(k, &mut env);
    }
    bar.finish_and_clear();
    drop(env);
    if let Some(plan) = memory.effect.filter(|_| !reports.is_empty()) {
        let fits: Vec<BlockFit> = reports.iter().map(|r| r.fit.clone()).collect();
        let blocks: Vec<BlockId> = fits.iter().map(|f| f.block).collect();
        let total = effect::chunks(runner.stages(), &blocks, plan, runner.batch());
        let bar = progress_bar(options, total, "output effect");
        let runner = runner.with_progress(bar.clone());
        let effects = effect::measure(graph, &runner, inputs, &fits, plan, &predict)?;
        bar.finish_and_clear();
        for (block, effect) in effects {
            if let Some(r) = reports.iter_mut().find(|r| r.block == block) {
                r.output_effect = Some(effect);
            }
        }
    }
    Ok(reports)
}

fn progress_bar(options: &CalibrationOptions, total: u64, what: &str) -> ProgressBar {
    let bar = match options.show_progress {
        true => ProgressBar::new(total),
        false => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{what} {{bar:30}} {{pos}}/{{len}} stage runs ({{per_sec}}, eta {{eta}}) {{msg}}"
        ))
        .expect("valid template"),
    );
    bar
}

/// The runner calibration, verification and sandwich training's walks use: ONNX Runtime as
/// `options` configure it, as many samples of `inputs` per stage run as the budget allows.
pub(crate) fn staged_runner<'a>(
    graph: &'a Graph,
    ckpt: &'a FluxCheckpoint,
    options: &CalibrationOptions,
    inputs: &InputSet,
) -> Result<StagedRunner<'a>> {
    let backend = OrtBackend::new(options.threads, options.provider)?;
    let batch = MemoryPlan::new(graph, inputs, options.limits(), None).batch;
    Ok(StagedRunner::with_backend(graph, ckpt, backend, batch))
}

/// Replaces the values of `stream`'s output in `env` by the fit's prediction from its input,
/// `chunk` samples at a time: what the pruned model feeds the blocks after it.
fn replace_with_prediction(
    env: &mut SpilledEnv,
    stream: &Stream,
    condition: Value,
    fit: &StreamFit,
    chunk: usize,
) -> Result<()> {
    let samples = env
        .samples(stream.input)
        .ok_or_else(|| Error::Internal(format!("stream {} has no input", stream.name)))?;
    // The runner feeds stages by tensor name: the prediction keeps the output's.
    let name = env.read(stream.output, Some(0..0))?.name;
    env.retain(&|v| *v != stream.output);
    for start in (0..samples).step_by(chunk.max(1)) {
        let rows = start..(start + chunk.max(1)).min(samples);
        let x = env.read(stream.input, Some(rows.clone()))?;
        let cond = env.read(condition, Some(rows))?;
        let predicted = Tensor {
            name: name.clone(),
            data: predict(&x, &cond, fit),
            shape: x.shape.clone(),
        };
        env.append(stream.output, predicted, true)?;
    }
    Ok(())
}

struct StreamStats {
    fit: super::lstsq::LinearFit,
    residual: f64,
    cosine_sum: f64,
    tokens: usize,
}

/// Accumulates one stream's normal equations over its `samples` samples, read `chunk` samples
/// at a time, and solves them.
fn fit_stream(
    env: &SpilledEnv,
    stream: &Stream,
    condition: Value,
    samples: usize,
    chunk: usize,
    options: &CalibrationOptions,
) -> Result<StreamStats> {
    let width = row_width(env, stream.input)?;
    let cond_width = match options.kind {
        FitKind::Conditioned => row_width(env, condition)?,
        FitKind::Plain => 0,
    };
    let mut equations = NormalEquations::new(width, cond_width, width);
    let (mut residual, mut cosine_sum, mut tokens) = (0.0f64, 0.0f64, 0usize);
    let mut r = Vec::new();
    for start in (0..samples).step_by(chunk.max(1)) {
        let range = start..(start + chunk.max(1)).min(samples);
        let (x, y) = (
            env.read(stream.input, Some(range.clone()))?,
            env.read(stream.output, Some(range.clone()))?,
        );
        let cond = env.read(condition, Some(range.clone()))?;
        let rows = x.data.len() / range.len() / width;
        let cond_row = cond.data.len() / range.len();
        for s in 0..range.len() {
            let span = s * rows * width..(s + 1) * rows * width;
            let (xs, ys) = (&x.data[span.clone()], &y.data[span]);
            r.clear();
            for (&x, &y) in xs.iter().zip(ys) {
                let d = y - x;
                residual += f64::from(d) * f64::from(d);
                r.push(d);
            }
            for (xt, yt) in xs.chunks_exact(width).zip(ys.chunks_exact(width)) {
                cosine_sum += cosine(xt, yt);
            }
            let c = &cond.data[s * cond_row..s * cond_row + cond_width];
            equations.accumulate_with_shared_condition(xs, c, &r, rows);
            tokens += rows;
        }
    }
    let fit = equations.solve(options.ridge)?;
    Ok(StreamStats {
        fit,
        residual,
        cosine_sum,
        tokens,
    })
}

/// The width of `v`'s rows (its last axis), read off its shape without reading a row.
fn row_width(env: &SpilledEnv, v: Value) -> Result<usize> {
    let shape = env.read(v, Some(0..0))?.shape;
    shape
        .last()
        .copied()
        .ok_or_else(|| Error::Internal(format!("`{v:?}` has no axes")))
}

/// The fitted node's output `x + x Wᵀ + b (+ c Uᵀ)` for every sample, as ONNX Runtime would
/// compute it after the rewrite.
pub fn predict(x: &Tensor, cond: &Tensor, fit: &StreamFit) -> Vec<f32> {
    let (samples, width) = (x.shape[0], x.shape[x.shape.len() - 1]);
    let rows = x.data.len() / width;
    let mut out = x.data.clone();
    let w = MatRef::from_row_major_slice(fit.weight.as_slice(), width, width);
    let xs = MatRef::from_row_major_slice(x.data.as_slice(), rows, width);
    let dst = MatMut::from_row_major_slice_mut(out.as_mut_slice(), rows, width);
    matmul(dst, xs, w.transpose());
    let per_sample = rows / samples;
    let mut shift = vec![0f32; samples * width];
    for s in 0..samples {
        shift[s * width..(s + 1) * width].copy_from_slice(&fit.bias);
    }
    if let Some(u) = &fit.cond_weight {
        let k = cond.shape[1];
        let u = MatRef::from_row_major_slice(u.as_slice(), width, k);
        let c = MatRef::from_row_major_slice(cond.data.as_slice(), samples, k);
        matmul(
            MatMut::from_row_major_slice_mut(shift.as_mut_slice(), samples, width),
            c,
            u.transpose(),
        );
    }
    for (row, values) in out.chunks_exact_mut(width).enumerate() {
        let s = row / per_sample;
        for (v, add) in values.iter_mut().zip(&shift[s * width..(s + 1) * width]) {
            *v += add;
        }
    }
    out
}

/// `dst += lhs · rhs` (dst starts as x, so the shortcut is included).
fn matmul(dst: MatMut<'_, f32>, lhs: MatRef<'_, f32>, rhs: MatRef<'_, f32>) {
    faer::linalg::matmul::matmul(dst, Accum::Add, lhs, rhs, 1.0, Par::rayon(0));
}

fn branch_params(graph: &Graph, block: BlockId) -> usize {
    graph
        .graph
        .node_weights()
        .filter(|n| n.block == Some(block))
        .filter_map(|n| match &n.op {
            Op::Weight(w) => Some(w.numel()),
            _ => None,
        })
        .sum()
}

fn fitted_params(fit: &BlockFit) -> usize {
    fit.streams
        .iter()
        .map(|s| s.weight.len() + s.bias.len() + s.cond_weight.as_ref().map_or(0, |u| u.len()))
        .sum()
}
