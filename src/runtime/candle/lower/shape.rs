//! The ops that only move data: Split → narrows of the last axis, ToHeads → reshape and
//! transpose, FromHeads → transpose and reshape, Concat → cat, SplitLike → two narrows at the
//! `like` input's extent. Transposed results are made contiguous here: candle's batched matmul
//! does not take every transposed view.

use super::{NodeCx, last_axis};
use crate::ir::Op;
use candle_core::{Result, Tensor};

pub(super) fn split(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::Split { sizes } = cx.op else {
        return Err(cx.wrong_op());
    };
    let axis = last_axis(&ins[0])?;
    let mut start = 0;
    sizes
        .iter()
        .map(|&size| {
            let part = ins[0].narrow(axis, start, size);
            start += size;
            part
        })
        .collect()
}

/// `[B,S,H·D]` → `[B,H,S,D]`, contiguous.
pub(super) fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, s, width) = x.dims3()?;
    x.reshape((b, s, heads, width / heads))?
        .transpose(1, 2)?
        .contiguous()
}

/// `[B,H,S,D]` → `[B,S,H·D]`.
pub(super) fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    x.transpose(1, 2)?.contiguous()?.reshape((b, s, h * d))
}

pub(super) fn to_heads(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::ToHeads { heads } = cx.op else {
        return Err(cx.wrong_op());
    };
    Ok(vec![split_heads(&ins[0], *heads)?])
}

pub(super) fn from_heads(_: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![merge_heads(&ins[0])?])
}

pub(super) fn concat(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::Concat { axis } = cx.op else {
        return Err(cx.wrong_op());
    };
    Ok(vec![Tensor::cat(ins, *axis)?])
}

pub(super) fn split_like(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::SplitLike { axis } = cx.op else {
        return Err(cx.wrong_op());
    };
    let (x, axis) = (&ins[0], *axis);
    let (total, at) = (x.dim(axis)?, ins[1].dim(axis)?);
    if at > total {
        candle_core::bail!("split after {at} entries of an axis of {total}");
    }
    Ok(vec![
        x.narrow(axis, 0, at)?,
        x.narrow(axis, at, total - at)?,
    ])
}
