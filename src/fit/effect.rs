//! Output effect of replacing one block: how far the model's output moves from the original's on
//! the calibration inputs when that block alone is replaced by its fit. `--prune` chooses blocks
//! by it (`--select output`).
//!
//! It runs after the ranking pass has fitted every block, over the effect samples in *groups*
//! whose activations fit the memory budget. Each group walks the original model stage by stage;
//! right after block `b`'s stage, a copy of the group's live activations is appended on the
//! batch axis with `b`'s outputs replaced by the fit's prediction: a *variant*. Every later stage
//! then runs the original group and all its variants in one go, so a stage is loaded once per
//! group and the prefix before `b` is never rerun. For `K` blocks that is `K(K−1)/2` extra block
//! runs over the effect samples, plus the original walk of each group once (`extra_runs`).
//!
//! Memory: the group's activations, variants included, are spilled (`runtime::spill`), so the
//! process holds one stage run's chunk; the group size bounds the scratch files, which the
//! kernel keeps in its page cache while it can: `group · (K+1) · held bytes ≤ budget`. The
//! effect is the relative L2 error accumulated over every group's output rows, so it does not
//! depend on how the samples were grouped.

use crate::error::{Error, Result};
use crate::inputs::InputSet;
use crate::ir::{BlockId, Graph, Value};
use crate::metrics::relative_l2_of_sums;
use crate::passes::brll::BlockFit;
use crate::runtime::spill::SpilledEnv;
use crate::runtime::staged::{Activations, Stage, StagedRunner, batched};
use crate::tensor::Tensor;

/// How the effect samples are walked: `samples` of them, `group` at a time.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct EffectPlan {
    pub samples: usize,
    pub group: usize,
}

impl EffectPlan {
    pub fn groups(&self) -> usize {
        self.samples.div_ceil(self.group.max(1))
    }

    /// The sample ranges of the groups, in order.
    fn ranges(&self) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
        let group = self.group.max(1);
        (0..self.samples)
            .step_by(group)
            .map(move |s| s..(s + group).min(self.samples))
    }
}

/// The output effect of every block in `fits` on the first `plan.samples` samples of `inputs`,
/// by block, in the order of `fits`. `predict` gives a fitted stream's output from its input and
/// the block's condition (the fitted node as ONNX Runtime computes it).
pub fn measure(
    graph: &Graph,
    runner: &StagedRunner,
    inputs: &InputSet,
    fits: &[BlockFit],
    plan: EffectPlan,
    predict: &dyn Fn(&Tensor, &Tensor, &crate::passes::brll::StreamFit) -> Vec<f32>,
) -> Result<Vec<(BlockId, f64)>> {
    let (_, latent) = graph
        .outputs
        .first()
        .ok_or_else(|| Error::Internal("the model has no output".into()))?;
    let mut sums = vec![(0.0f64, 0.0f64); fits.len()];
    for rows in plan.ranges() {
        let group = inputs.slice(rows.start, rows.end);
        let mut env = SpilledEnv::default();
        runner.load_inputs_into(&group.tensors, &mut env)?;
        let mut variants: Vec<BlockId> = Vec::new();
        for k in 0..runner.stages().len() {
            runner.run_stage(k, &mut env)?;
            let fit = runner.stages()[k]
                .block
                .and_then(|b| fits.iter().find(|f| f.block == b));
            if let Some(fit) = fit {
                add_variant(graph, runner, &mut env, group.samples, fit, predict)?;
                variants.push(fit.block);
            }
            runner.release(k, &mut env);
        }
        if variants.len() != fits.len() {
            return Err(Error::Internal(format!(
                "{} of {} fitted blocks were met walking the model",
                variants.len(),
                fits.len()
            )));
        }
        accumulate(&env, *latent, group.samples, &variants, fits, &mut sums)?;
    }
    Ok(fits
        .iter()
        .zip(&sums)
        .map(|(f, &(diff, norm))| (f.block, relative_l2_of_sums(diff, norm)))
        .collect())
}

/// Appends a variant of the group's `m` original samples to every batched value of `env`: a copy
/// of its first `m` rows, except the fitted block's stream outputs, which get the fit's
/// prediction on those rows. Goes `runner.batch()` rows at a time.
fn add_variant(
    graph: &Graph,
    runner: &StagedRunner,
    env: &mut SpilledEnv,
    m: usize,
    fit: &BlockFit,
    predict: &dyn Fn(&Tensor, &Tensor, &crate::passes::brll::StreamFit) -> Vec<f32>,
) -> Result<()> {
    let io = &graph.block_io[&fit.block];
    let chunk = runner.batch();
    for v in env.values() {
        if !batched(graph, v) {
            continue;
        }
        let stream = io
            .streams
            .iter()
            .zip(&fit.streams)
            .find(|(s, _)| s.output == v);
        // No rows: the output's name (the runner feeds stages by it) and row shape.
        let template = env.read(v, Some(0..0))?;
        for start in (0..m).step_by(chunk) {
            let rows = start..(start + chunk).min(m);
            let copy = match stream {
                None => env.read(v, Some(rows))?,
                Some((s, f)) => {
                    let x = env.read(s.input, Some(rows.clone()))?;
                    let cond = env.read(io.condition, Some(rows))?;
                    Tensor {
                        name: template.name.clone(),
                        data: predict(&x, &cond, f),
                        shape: x.shape,
                    }
                }
            };
            env.append(v, copy, true)?;
        }
    }
    Ok(())
}

/// Adds each variant's squared distance to the original output, and the original's squared
/// norm, over the group's `m` samples, `m` rows at a time.
fn accumulate(
    env: &SpilledEnv,
    latent: Value,
    m: usize,
    variants: &[BlockId],
    fits: &[BlockFit],
    sums: &mut [(f64, f64)],
) -> Result<()> {
    let reference = env.read(latent, Some(0..m))?;
    for (i, block) in variants.iter().enumerate() {
        let slot = fits
            .iter()
            .position(|f| f.block == *block)
            .ok_or_else(|| Error::Internal(format!("variant {block} has no fit")))?;
        let start = m * (i + 1);
        let variant = env.read(latent, Some(start..start + m))?;
        let (diff, norm) = &mut sums[slot];
        for (&x, &y) in variant.data.iter().zip(&reference.data) {
            *diff += (f64::from(x) - f64::from(y)).powi(2);
            *norm += f64::from(y) * f64::from(y);
        }
    }
    Ok(())
}

/// What measuring the output effect of every block in `fit_blocks` costs on top of the ranking
/// pass, in runs of one stage over the effect samples: each group walks the original once, and
/// each variant runs every stage after its block once. Returns (extra block runs, extra runs of
/// the stages around the blocks).
pub fn extra_runs(stages: &[Stage], fit_blocks: &[BlockId]) -> (usize, usize) {
    let (mut blocks, mut others, mut live) = (0, 0, 1);
    for stage in stages {
        match stage.block {
            Some(_) => blocks += live,
            None => others += live,
        }
        if stage.block.is_some_and(|b| fit_blocks.contains(&b)) {
            live += 1;
        }
    }
    (blocks, others)
}

/// Chunks of `batch` samples the effect pass runs, variants included (for the progress bar).
pub fn chunks(stages: &[Stage], fit_blocks: &[BlockId], plan: EffectPlan, batch: usize) -> u64 {
    plan.ranges()
        .map(|rows| {
            let mut live = 1;
            let mut total = 0u64;
            for stage in stages {
                total += (rows.len() * live).div_ceil(batch.max(1)) as u64;
                if stage.block.is_some_and(|b| fit_blocks.contains(&b)) {
                    live += 1;
                }
            }
            total
        })
        .sum()
}
