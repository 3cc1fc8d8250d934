//! The adaLN ops, whose per-sample vectors `[B,h]` broadcast over the tokens: Modulate →
//! `x·(1 + scale) + shift`, GatedResidual → `x + gate·branch`.

use super::NodeCx;
use candle_core::{Result, Tensor};

pub(super) fn modulate_of(x: &Tensor, shift: &Tensor, scale: &Tensor) -> Result<Tensor> {
    let gain = scale.unsqueeze(1)?.affine(1.0, 1.0)?;
    x.broadcast_mul(&gain)?.broadcast_add(&shift.unsqueeze(1)?)
}

pub(super) fn modulate(_: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![modulate_of(&ins[0], &ins[1], &ins[2])?])
}

pub(super) fn gated_residual(_: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let gated = ins[1].unsqueeze(1)?.broadcast_mul(&ins[2])?;
    Ok(vec![ins[0].add(&gated)?])
}
