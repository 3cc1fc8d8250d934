//! The elementwise ops: Cast → nothing (a lowered piece computes in one type, see `Lowered`),
//! Add, Clip → clamp, Silu, GeluTanh → `Tensor::gelu` (the tanh form; candle_nn's
//! `Activation::Gelu` is the erf GELU, which FLUX does not use).

use super::NodeCx;
use crate::ir::Op;
use candle_core::{Result, Tensor};

pub(super) fn cast(_: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![ins[0].clone()])
}

pub(super) fn add(_: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![ins[0].broadcast_add(&ins[1])?])
}

pub(super) fn clip(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::Clip { limit } = cx.op else {
        return Err(cx.wrong_op());
    };
    let limit = f64::from(*limit);
    Ok(vec![ins[0].clamp(-limit, limit)?])
}

pub(super) fn silu(_: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![ins[0].silu()?])
}

pub(super) fn gelu_tanh(_: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![ins[0].gelu()?])
}
