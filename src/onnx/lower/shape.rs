//! Lowering the ops that only move data: Split → Split on the last axis, ToHeads → Reshape and
//! Transpose, FromHeads → Transpose and Reshape, Concat → Concat, SplitLike → Shape and two
//! Slices.

use super::registry::NodeCx;
use crate::error::Result;
use crate::ir::Op;
use crate::onnx::builder::{Attr, GraphBuilder};

/// The permutation between `[B,S,H,D]` and `[B,H,S,D]`, its own inverse.
const SWAP_HEADS_AND_TOKENS: [i64; 4] = [0, 2, 1, 3];

pub(super) fn split(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::Split { sizes } = cx.op else {
        return Err(cx.wrong_op());
    };
    let sizes: Vec<i64> = sizes.iter().map(|&s| s as i64).collect();
    let split = b.ints(&sizes);
    b.node(
        "Split",
        &[cx.inputs()[0], &split],
        &cx.outputs(),
        vec![("axis", Attr::Int(-1))],
    );
    Ok(())
}

pub(super) fn to_heads(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::ToHeads { heads } = cx.op else {
        return Err(cx.wrong_op());
    };
    let shape = b.ints(&[0, 0, *heads as i64, -1]);
    let split = cx.tmp("split");
    b.node("Reshape", &[cx.inputs()[0], &shape], &[&split], vec![]);
    b.node(
        "Transpose",
        &[&split],
        &[cx.output()],
        vec![("perm", Attr::Ints(SWAP_HEADS_AND_TOKENS.to_vec()))],
    );
    Ok(())
}

pub(super) fn from_heads(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let shape = b.ints(&[0, 0, -1]);
    let t = cx.tmp("transposed");
    b.node(
        "Transpose",
        &cx.inputs(),
        &[&t],
        vec![("perm", Attr::Ints(SWAP_HEADS_AND_TOKENS.to_vec()))],
    );
    b.node("Reshape", &[&t, &shape], &[cx.output()], vec![]);
    Ok(())
}

pub(super) fn concat(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::Concat { axis } = cx.op else {
        return Err(cx.wrong_op());
    };
    b.node(
        "Concat",
        &cx.inputs(),
        &[cx.output()],
        vec![("axis", Attr::Int(*axis as i64))],
    );
    Ok(())
}

pub(super) fn split_like(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::SplitLike { axis } = cx.op else {
        return Err(cx.wrong_op());
    };
    // The split point is a run-time extent: the `like` input's length on `axis`.
    let (ins, outs) = (cx.inputs(), cx.outputs());
    let (len, axis) = (cx.tmp("split_at"), *axis as i64);
    let (zero, end, axes) = (b.ints(&[0]), b.ints(&[i64::MAX]), b.ints(&[axis]));
    let attrs = vec![("start", Attr::Int(axis)), ("end", Attr::Int(axis + 1))];
    b.node("Shape", &[ins[1]], &[&len], attrs);
    b.node("Slice", &[ins[0], &zero, &len, &axes], &[outs[0]], vec![]);
    b.node("Slice", &[ins[0], &len, &end, &axes], &[outs[1]], vec![]);
    Ok(())
}
