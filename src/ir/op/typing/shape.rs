//! Typing the ops that only move data: Split, ToHeads, FromHeads, Concat and SplitLike.

use super::check::{misfit, same, width};
use crate::error::TypeError;
use crate::ir::op::OpKind;
use crate::ir::types::{Dim, TensorType};

/// The last axis cut into consecutive parts of `sizes`, which must add up to its width.
pub(super) fn split(x: &TensorType, sizes: &[usize]) -> Result<Vec<TensorType>, TypeError> {
    let op = OpKind::Split;
    if sizes.iter().sum::<usize>() != width(op, x)? {
        return Err(misfit(
            op,
            format!("Split {sizes:?} does not add up to {x}"),
        ));
    }
    Ok(sizes.iter().map(|&s| x.with_last(s)).collect())
}

/// `[B,S,H·D]` → `[B,H,S,D]`.
pub(super) fn to_heads(x: &TensorType, heads: usize) -> Result<TensorType, TypeError> {
    let op = OpKind::ToHeads;
    let w = width(op, x)?;
    if x.rank() != 3 || w % heads != 0 {
        return Err(misfit(
            op,
            format!("ToHeads: {x} does not split into {heads} heads"),
        ));
    }
    let s = &x.shape;
    Ok(TensorType::new(
        x.dtype,
        vec![
            s[0].clone(),
            Dim::Known(heads),
            s[1].clone(),
            Dim::Known(w / heads),
        ],
    ))
}

/// `[B,H,S,D]` → `[B,S,H·D]`, with H and D known.
pub(super) fn from_heads(x: &TensorType) -> Result<TensorType, TypeError> {
    let s = &x.shape;
    match (
        s.len(),
        s.get(1).and_then(Dim::known),
        s.get(3).and_then(Dim::known),
    ) {
        (4, Some(h), Some(d)) => Ok(TensorType::new(
            x.dtype,
            vec![s[0].clone(), s[2].clone(), Dim::Known(h * d)],
        )),
        _ => Err(misfit(
            OpKind::FromHeads,
            format!("FromHeads: {x} is not [B,H,S,D]"),
        )),
    }
}

/// `a` and `b` end to end along `axis`; they must agree on every other axis and the dtype.
pub(super) fn concat(a: &TensorType, b: &TensorType, axis: usize) -> Result<TensorType, TypeError> {
    let mut joined = a.clone();
    joined.shape[axis] = a.shape[axis].plus(&b.shape[axis]);
    let mut b_like = b.clone();
    b_like.shape[axis] = a.shape[axis].clone();
    same(OpKind::Concat, a, &b_like, "Concat")?;
    Ok(joined)
}

/// `x` cut along `axis` after as many entries as `like` has there: the inverse of Concat, so a
/// symbolic extent `L+N` splits into `L` and `N`.
pub(super) fn split_like(
    x: &TensorType,
    like: &TensorType,
    axis: usize,
) -> Result<Vec<TensorType>, TypeError> {
    let head = like.shape[axis].clone();
    let tail = match &x.shape[axis] {
        Dim::Sym(s) => s.strip_prefix(&format!("{head}+")).map(Dim::sym),
        Dim::Known(n) => head.known().map(|h| Dim::Known(n - h)),
    }
    .ok_or_else(|| {
        misfit(
            OpKind::SplitLike,
            format!("SplitLike: cannot split {x} after {head}"),
        )
    })?;
    let (mut first, mut second) = (x.clone(), x.clone());
    first.shape[axis] = head;
    second.shape[axis] = tail;
    Ok(vec![first, second])
}
