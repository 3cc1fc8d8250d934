//! Output effect of replacing one block: how far the model's output moves from the original's on
//! the calibration inputs when that block alone is replaced by its fit. `--prune` chooses blocks
//! by it (`--select output`).
//!
//! It rides on the ranking pass, which runs the original model stage by stage. Right after block
//! `b` is fitted, a copy of every live activation is appended on the batch axis, with `b`'s
//! outputs replaced by the fit's prediction: a *variant*. Every later stage then runs the
//! original samples and all variants in one go, so a stage is loaded once and the prefix before
//! `b` is never rerun. The extra cost is one run of each later stage per variant: for `K`
//! blocks, `K(K−1)/2` block runs over the calibration set (plus the final layer `K` times);
//! memory holds one copy of the live activations per variant in flight.

use crate::error::{Error, Result};
use crate::ir::{BlockId, Dim, Graph};
use crate::metrics::relative_l2;
use crate::runtime::staged::{Env, Stage};
use crate::tensor::Tensor;

/// The variants appended so far: which block each replaces, in batch order after the original.
pub struct Variants {
    /// Samples of the original inputs, `n`.
    samples: usize,
    /// Samples each variant carries, `m ≤ n`: the first `m` of the original's. Variant `i`
    /// occupies samples `n + i·m .. n + (i+1)·m`.
    per_variant: usize,
    blocks: Vec<BlockId>,
}

impl Variants {
    /// Variants of the first `per_variant` of `samples` samples (0 or more than `samples`: all).
    pub fn new(samples: usize, per_variant: usize) -> Self {
        let per_variant = match per_variant {
            0 => samples,
            m => m.min(samples),
        };
        Self {
            samples,
            per_variant,
            blocks: Vec::new(),
        }
    }

    /// Samples each variant carries.
    pub fn per_variant(&self) -> usize {
        self.per_variant
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Appends a variant in which `block` is replaced: every batched value of `env` gets a copy
    /// of its first `per_variant` original samples, except the block's outputs, which get
    /// `replaced` (value, the fit's prediction on those samples).
    pub fn add(
        &mut self,
        graph: &Graph,
        env: &mut Env,
        block: BlockId,
        replaced: Vec<(crate::ir::Value, Vec<f32>)>,
    ) -> Result<()> {
        let n = self.per_variant;
        for (&v, t) in env.iter_mut() {
            if !batched(graph, v) {
                continue;
            }
            let per_sample: usize = t.shape[1..].iter().product();
            let copy = match replaced.iter().find(|(r, _)| *r == v) {
                Some((_, data)) => data.clone(),
                None => t.data[..n * per_sample].to_vec(),
            };
            if copy.len() != n * per_sample {
                return Err(Error::Internal(format!(
                    "variant {block}: {} values where {} were expected",
                    copy.len(),
                    n * per_sample
                )));
            }
            t.data.extend_from_slice(&copy);
            t.shape[0] += n;
        }
        self.blocks.push(block);
        Ok(())
    }

    /// The relative L2 error of each variant's `output` against the original's (on the same
    /// samples), by block.
    pub fn effects(&self, output: &Tensor) -> Result<Vec<(BlockId, f64)>> {
        let (n, m) = (self.samples, self.per_variant);
        let per_sample: usize = output.shape[1..].iter().product();
        let expected = n + m * self.blocks.len();
        if output.data.len() != expected * per_sample {
            return Err(Error::Internal(format!(
                "the output holds {} samples, expected {expected} ({} variants of {m} after {n})",
                output.shape[0],
                self.blocks.len()
            )));
        }
        let reference = &output.data[..m * per_sample];
        Ok(self
            .blocks
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                let start = (n + i * m) * per_sample;
                let variant = &output.data[start..start + m * per_sample];
                (b, relative_l2(variant, reference))
            })
            .collect())
    }
}

/// Whether `v` carries one row per sample (the runner stacks samples on the batch axis `B`).
pub fn batched(graph: &Graph, v: crate::ir::Value) -> bool {
    graph.ty(v).shape.first() == Some(&Dim::sym("B"))
}

/// The first `n` samples of `t` (a batched tensor).
pub fn first_samples(t: &Tensor, n: usize) -> Tensor {
    let per_sample: usize = t.shape[1..].iter().product();
    let mut shape = t.shape.clone();
    shape[0] = n;
    Tensor {
        name: t.name.clone(),
        shape,
        data: t.data[..n * per_sample].to_vec(),
    }
}

/// What measuring the output effect of every block in `fit_blocks` costs on top of the ranking
/// pass, in runs of one stage over the calibration set: each variant runs every stage after its
/// block once. Returns (extra block runs, extra runs of the stages around the blocks).
pub fn extra_runs(stages: &[Stage], fit_blocks: &[BlockId]) -> (usize, usize) {
    let (mut blocks, mut others, mut live) = (0, 0, 0);
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

/// Chunks of `batch` samples the ranking pass runs, variants of `per_variant` samples included
/// (for the progress bar).
pub fn chunks(
    stages: &[Stage],
    fit_blocks: &[BlockId],
    (samples, per_variant): (usize, usize),
    batch: usize,
) -> u64 {
    let mut live = 0;
    let mut total = 0u64;
    for stage in stages {
        total += (samples + per_variant * live).div_ceil(batch) as u64;
        if stage.block.is_some_and(|b| fit_blocks.contains(&b)) {
            live += 1;
        }
    }
    total
}
