//! BRLL (FastFLUX's block-wise replacement with linear layers): a block's residual branch is
//! replaced by a fitted linear map while the shortcut stays, `y = x + x Wᵀ + b`, one fitted node
//! per stream of a double block and one on the joint sequence of a single block.

use super::patch::{Patch, PatchValue, apply};
use crate::checkpoint::brll_meta::node_name;
use crate::error::{Error, Result};
use crate::ir::{BlockId, Graph, Op, TensorType, Weight, WeightData};
use std::sync::Arc;

/// A fitted replacement for one stream of one block.
#[derive(Clone, Debug)]
pub struct StreamFit {
    /// `img` or `txt` of a double block, `x` of a single block (as in `BlockIo`).
    pub stream: String,
    /// `[out, in]`, row-major.
    pub weight: Arc<Vec<f32>>,
    pub bias: Arc<Vec<f32>>,
    /// `[out, cond]`: the conditioned fit's map of `silu(vec)`; `None` for the plain fit.
    pub cond_weight: Option<Arc<Vec<f32>>>,
    /// Relative error of the fit on the calibration data.
    pub relative_error: f64,
}

#[derive(Clone, Debug)]
pub struct BlockFit {
    pub block: BlockId,
    pub streams: Vec<StreamFit>,
}

/// Where the weights of one fitted node come from: values just fitted (this pass), or the
/// tensors of a checkpoint that already holds the rewrite (the lifter, reading a file that
/// `--emit-safetensors` wrote). Either way the node is built by `fitted_node`.
pub struct FittedWeights {
    pub weight: WeightData,
    pub bias: WeightData,
    pub cond_weight: Option<WeightData>,
}

impl From<&StreamFit> for FittedWeights {
    fn from(f: &StreamFit) -> Self {
        Self {
            weight: WeightData::Owned(f.weight.clone()),
            bias: WeightData::Owned(f.bias.clone()),
            cond_weight: f.cond_weight.clone().map(WeightData::Owned),
        }
    }
}

/// Adds the fitted node of stream `stream` of `block` to `patch`, reading `input` (of type
/// `ty`) and, for a conditioned fit, `condition` (`silu(vec)`, `cond_width` wide):
///
/// ```text
/// LinearResidual(x, @<name>.weight, @<name>.bias [, condition, @<name>.cond_weight])
/// ```
///
/// Returns the node's output. Weights are typed like `input`.
pub fn fitted_node(
    patch: &mut Patch,
    block: BlockId,
    stream: &str,
    (input, ty): (PatchValue, &TensorType),
    (condition, cond_width): (PatchValue, usize),
    data: FittedWeights,
) -> Result<PatchValue> {
    let name = node_name(block, stream);
    let width = ty.last().and_then(|d| d.known()).unwrap_or(0);
    let mut weight = |suffix: &str, shape: Vec<usize>, data: WeightData| -> Result<PatchValue> {
        let found = match &data {
            WeightData::Owned(values) => vec![values.len()],
            WeightData::Stored(source) => source.shape.clone(),
        };
        let fits = match &data {
            WeightData::Owned(values) => values.len() == shape.iter().product::<usize>(),
            WeightData::Stored(source) => source.shape == shape,
        };
        if !fits {
            return Err(Error::Internal(format!(
                "{name}.{suffix}: {found:?} does not fit shape {shape:?}"
            )));
        }
        let w = Weight::new(format!("{name}.{suffix}"), shape, ty.dtype, data);
        Ok(patch.add(Op::Weight(w), format!("{name}.{suffix}"), Some(block), &[]))
    };
    let conditioned = data.cond_weight.is_some();
    let mut inputs = vec![
        input,
        weight("weight", vec![width, width], data.weight)?,
        weight("bias", vec![width], data.bias)?,
    ];
    if let Some(cond) = data.cond_weight {
        inputs.push(condition);
        inputs.push(weight("cond_weight", vec![width, cond_width], cond)?);
    }
    Ok(patch.add(
        Op::LinearResidual { conditioned },
        name,
        Some(block),
        &inputs,
    ))
}

// Matched, per stream s of the block (from the lifter's `BlockIo`):
//
//     x_s ──▶ [every node tagged with the block] ──▶ y_s
//
// Rewritten:
//
//     y_s = LinearResidual(x_s, @<block>.brll.<s>.weight, @<block>.brll.<s>.bias
//                          [, silu(vec), @<block>.brll.<s>.cond_weight])
//
// The branch's nodes and weights lose their last use and are removed by `apply`.
pub fn replace_block(graph: &Graph, fit: &BlockFit) -> Result<Patch> {
    let io = graph
        .block_io
        .get(&fit.block)
        .ok_or_else(|| Error::Usage(format!("{} is not in the model", fit.block)))?;
    let cond_width = graph
        .ty(io.condition)
        .last()
        .and_then(|d| d.known())
        .unwrap_or(0);
    let mut patch = Patch::default();
    for stream in &io.streams {
        let f = fit
            .streams
            .iter()
            .find(|f| f.stream == stream.name)
            .ok_or_else(|| {
                Error::Internal(format!(
                    "no fit for stream `{}` of {}",
                    stream.name, fit.block
                ))
            })?;
        let out = fitted_node(
            &mut patch,
            fit.block,
            &stream.name,
            (PatchValue::Old(stream.input), graph.ty(stream.input)),
            (PatchValue::Old(io.condition), cond_width),
            f.into(),
        )?;
        patch.replace(stream.output, out);
    }
    Ok(patch)
}

/// Replaces every fitted block; returns how many nodes were removed.
pub fn apply_fits(graph: &mut Graph, fits: &[BlockFit]) -> Result<usize> {
    let mut removed = 0;
    for fit in fits {
        let patch = replace_block(graph, fit)?;
        removed += apply(graph, patch)?;
    }
    Ok(removed)
}
