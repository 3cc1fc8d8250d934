//! BRLL (FastFLUX's block-wise replacement with linear layers): a block's residual branch is
//! replaced by a fitted linear map while the shortcut stays, `y = x + x Wᵀ + b`, one fitted node
//! per stream of a double block and one on the joint sequence of a single block.

use super::patch::{Patch, PatchValue, apply};
use crate::error::{Error, Result};
use crate::ir::{BlockId, Graph, Op, Weight, WeightData};
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

/// The fitted node's name: `double_blocks.{i}.brll.{img,txt}` or `single_blocks.{i}.brll`.
pub fn node_name(block: BlockId, stream: &str) -> String {
    match block {
        BlockId::Double(_) => format!("{block}.brll.{stream}"),
        BlockId::Single(_) => format!("{block}.brll"),
    }
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
        let name = node_name(fit.block, &stream.name);
        let ty = graph.ty(stream.input);
        let width = ty.last().and_then(|d| d.known()).unwrap_or(0);
        let mut weight =
            |suffix: &str, shape: Vec<usize>, data: &Arc<Vec<f32>>| -> Result<PatchValue> {
                if data.len() != shape.iter().product::<usize>() {
                    return Err(Error::Internal(format!(
                        "{name}.{suffix}: {} values for shape {shape:?}",
                        data.len()
                    )));
                }
                let w = Weight::new(
                    format!("{name}.{suffix}"),
                    shape,
                    ty.dtype,
                    WeightData::Owned(data.clone()),
                );
                Ok(patch.add(
                    Op::Weight(w),
                    format!("{name}.{suffix}"),
                    Some(fit.block),
                    &[],
                ))
            };
        let mut inputs = vec![
            PatchValue::Old(stream.input),
            weight("weight", vec![width, width], &f.weight)?,
            weight("bias", vec![width], &f.bias)?,
        ];
        if let Some(cond) = &f.cond_weight {
            let cond_width = graph
                .ty(io.condition)
                .last()
                .and_then(|d| d.known())
                .unwrap_or(0);
            inputs.push(PatchValue::Old(io.condition));
            inputs.push(weight("cond_weight", vec![width, cond_width], cond)?);
        }
        let op = Op::LinearResidual {
            conditioned: f.cond_weight.is_some(),
        };
        let out = patch.add(op, name, Some(fit.block), &inputs);
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
