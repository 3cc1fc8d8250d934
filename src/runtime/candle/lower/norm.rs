//! The norms, composed from means and square roots (candle's fused `layer_norm`/`rms_norm`
//! detach their output from the autograd graph): LayerNorm → `(x − mean) / √(var + eps)`,
//! RmsNorm → `x / √(mean(x²) + eps) · scale`.

use super::{NodeCx, last_axis};
use crate::ir::Op;
use candle_core::{Result, Tensor};

pub(super) fn layer_norm_of(x: &Tensor, eps: f32) -> Result<Tensor> {
    let axis = last_axis(x)?;
    let centred = x.broadcast_sub(&x.mean_keepdim(axis)?)?;
    let var = centred.sqr()?.mean_keepdim(axis)?;
    centred.broadcast_div(&var.affine(1.0, f64::from(eps))?.sqrt()?)
}

pub(super) fn rms_norm_of(x: &Tensor, scale: &Tensor, eps: f32) -> Result<Tensor> {
    let axis = last_axis(x)?;
    let rms = x
        .sqr()?
        .mean_keepdim(axis)?
        .affine(1.0, f64::from(eps))?
        .sqrt()?;
    x.broadcast_div(&rms)?.broadcast_mul(scale)
}

pub(super) fn layer_norm(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::LayerNorm { eps } = cx.op else {
        return Err(cx.wrong_op());
    };
    Ok(vec![layer_norm_of(&ins[0], *eps)?])
}

pub(super) fn rms_norm(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::RmsNorm { eps } = cx.op else {
        return Err(cx.wrong_op());
    };
    Ok(vec![rms_norm_of(&ins[0], &ins[1], *eps)?])
}
