//! The attention ops on heads `[B,H,S,D]`: Attention → `softmax(q kᵀ · D^-½) v`, with the
//! softmax composed (candle's `softmax_last_dim` and its CPU flash attention detach their
//! output from the autograd graph); Rope → the pairwise rotation by narrows, products and a cat
//! (candle's `rope_i` detaches too).

use super::NodeCx;
use candle_core::{D, Result, Tensor};

/// `softmax` over the last axis. The row maximum is subtracted for range only: softmax does not
/// depend on it, so it is taken out of the autograd graph.
fn softmax_last(x: &Tensor) -> Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    let exp = shifted.exp()?;
    exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)
}

/// `softmax(q kᵀ / √D) v` for q, k, v `[B,H,S,D]`.
pub(super) fn attention_of(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let head_dim = q.dim(D::Minus1)?;
    let kt = k.transpose(2, 3)?.contiguous()?;
    let scores = q
        .contiguous()?
        .matmul(&kt)?
        .affine(1.0 / (head_dim as f64).sqrt(), 0.0)?;
    softmax_last(&scores)?.matmul(&v.contiguous()?)
}

/// Rotates adjacent pairs: `pairs [… , D/2, 2]` holds (x0, x1) per pair, `cos` and `sin` are
/// shaped to broadcast against `[… , D/2, 1]`; returns (x0 cos − x1 sin, x0 sin + x1 cos) in
/// the same pair layout.
pub(super) fn rotate_pairs(pairs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let axis = pairs.rank() - 1;
    let (x0, x1) = (pairs.narrow(axis, 0, 1)?, pairs.narrow(axis, 1, 1)?);
    let y0 = x0.broadcast_mul(cos)?.sub(&x1.broadcast_mul(sin)?)?;
    let y1 = x0.broadcast_mul(sin)?.add(&x1.broadcast_mul(cos)?)?;
    Tensor::cat(&[y0, y1], axis)
}

pub(super) fn attention(_: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![attention_of(&ins[0], &ins[1], &ins[2])?])
}

pub(super) fn rope(_: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let (b, h, s, d) = ins[0].dims4()?;
    let pairs = ins[0].contiguous()?.reshape((b, h, s, d / 2, 2))?;
    let cos = ins[1].reshape((s, d / 2, 1))?;
    let sin = ins[2].reshape((s, d / 2, 1))?;
    Ok(vec![
        rotate_pairs(&pairs, &cos, &sin)?.reshape((b, h, s, d))?,
    ])
}
