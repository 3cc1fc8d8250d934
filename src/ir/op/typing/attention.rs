//! Typing the attention ops on heads `[B,H,S,D]`: Rope (with its cos/sin tables) and Attention.

use super::check::{same, width};
use crate::error::TypeError;
use crate::ir::op::OpKind;
use crate::ir::types::{Dim, TensorType};

/// x `[B,H,S,D]`, cos and sin `[S,D/2]` of x's dtype → x's type.
pub(super) fn rope(
    x: &TensorType,
    cos: &TensorType,
    sin: &TensorType,
) -> Result<TensorType, TypeError> {
    let op = OpKind::Rope;
    let half = width(op, x)? / 2;
    let table = TensorType::new(x.dtype, vec![x.shape[2].clone(), Dim::Known(half)]);
    same(op, cos, &table, "Rope cos")?;
    same(op, sin, &table, "Rope sin")?;
    Ok(x.clone())
}

/// q, k, v of one type → that type.
pub(super) fn attention(
    q: &TensorType,
    k: &TensorType,
    v: &TensorType,
) -> Result<TensorType, TypeError> {
    let op = OpKind::Attention;
    same(op, q, k, "Attention q/k")?;
    same(op, q, v, "Attention q/v")?;
    Ok(q.clone())
}
