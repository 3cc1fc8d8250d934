//! The attention ops on heads `[B,H,S,D]`: Attention → `softmax(q kᵀ · D^-½) v` in chunks of
//! query rows (`chunked_attention.rs`); Rope → the pairwise rotation by narrows, products and a
//! cat (candle's `rope_i` detaches its output).

use super::NodeCx;
use super::chunked_attention::attention_of;
use candle_core::{Result, Tensor};

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
