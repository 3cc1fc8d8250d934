//! A block whose branch a BRLL rewrite already replaced in the checkpoint (a file written by
//! `--emit-safetensors`, see `emit` and `checkpoint::brll_meta`): lifted as the fitted nodes that
//! `passes::brll` puts in its place, built by the same function, with the checkpoint's fitted
//! tensors as lazy weights. Compiling such a file gives the model that compiling its source with
//! the same fits gives.

use super::Lifter;
use crate::checkpoint::brll_meta::{node_name, streams};
use crate::error::Result;
use crate::ir::{BlockId, Value, WeightData};
use crate::passes::brll::{FittedWeights, fitted_node};
use crate::passes::{Patch, PatchValue, insert};

/// `inputs` are the block's streams in `brll_meta::streams` order; returns their outputs.
pub(crate) fn lift_replaced_block(
    l: &mut Lifter,
    block: BlockId,
    inputs: &[Value],
    silu_vec: Value,
) -> Result<Vec<Value>> {
    let cond_width = l.graph.ty(silu_vec).last().and_then(|d| d.known());
    let mut outputs = Vec::with_capacity(inputs.len());
    for (stream, &x) in streams(block).iter().zip(inputs) {
        let node = node_name(block, stream);
        let source = |suffix: &str| -> Result<WeightData> {
            let source = l.ckpt.source(&format!("{node}.{suffix}"))?;
            Ok(WeightData::Stored(source.clone()))
        };
        let data = FittedWeights {
            weight: source("weight")?,
            bias: source("bias")?,
            cond_weight: if l.ckpt.has(&format!("{node}.cond_weight")) {
                Some(source("cond_weight")?)
            } else {
                None
            },
        };
        let ty = l.graph.ty(x).clone();
        let mut patch = Patch::default();
        let out = fitted_node(
            &mut patch,
            block,
            stream,
            (PatchValue::Old(x), &ty),
            (PatchValue::Old(silu_vec), cond_width.unwrap_or(0)),
            data,
        )?;
        outputs.push(insert(&mut l.graph, patch, out)?);
    }
    Ok(outputs)
}
