//! Linear (`x Wᵀ + b`, plus a LoRA adapter's `scale · (x Aᵀ) Bᵀ` when one sits on W) and
//! LinearResidual (BRLL's `x + x Wᵀ + b [+ c Uᵀ]`, the per-sample term broadcast over tokens).

use super::frozen::frozen_product;
use super::{LoraAdapter, NodeCx};
use crate::ir::Op;
use candle_core::{Result, Tensor};

/// `x Wᵀ` for `x [… , in]` and `w [out, in]`: the leading axes flattened into rows, so that the
/// product is one 2-D matmul of a contiguous `x` with the transposed view of `w`. A frozen `w`
/// (a constant: no variable, no op) under a tracked `x` takes `frozen_product`, whose backward
/// skips the weight's gradient.
pub(super) fn matmul_transposed(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (in_features, out_features) = (w.dim(1)?, w.dim(0)?);
    let rows = x.elem_count() / in_features.max(1);
    let x2 = x.contiguous()?.reshape((rows, in_features))?;
    let product = match x.track_op() && !w.track_op() && w.device().is_cpu() {
        true => frozen_product(&x2, w)?,
        false => x2.matmul(&w.t()?)?,
    };
    let mut out_dims = dims;
    if let Some(last) = out_dims.last_mut() {
        *last = out_features;
    }
    product.reshape(out_dims)
}

/// `x Wᵀ + b`, with the adapter's low-rank term when there is one.
pub(super) fn affine_map(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    lora: Option<&LoraAdapter>,
) -> Result<Tensor> {
    let y = matmul_transposed(x, w)?.broadcast_add(b)?;
    match lora {
        None => Ok(y),
        Some(adapter) => {
            let down = matmul_transposed(x, &adapter.down)?;
            let update = matmul_transposed(&down, &adapter.up)?.affine(adapter.scale, 0.0)?;
            y.add(&update)
        }
    }
}

pub(super) fn linear(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![affine_map(&ins[0], &ins[1], &ins[2], cx.lora)?])
}

pub(super) fn linear_residual(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::LinearResidual { conditioned } = cx.op else {
        return Err(cx.wrong_op());
    };
    let x = &ins[0];
    let mut branch = matmul_transposed(x, &ins[1])?.broadcast_add(&ins[2])?;
    if *conditioned {
        let per_sample = matmul_transposed(&ins[3], &ins[4])?.unsqueeze(1)?;
        branch = branch.broadcast_add(&per_sample)?;
    }
    Ok(vec![x.add(&branch)?])
}
