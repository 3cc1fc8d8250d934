//! Lowering the attention ops on heads `[B,H,S,D]`: Attention → `Softmax(q kᵀ · D^-½) v` with
//! MatMuls, Rope → the pairwise rotation with Reshape, Split, Muls and Concat. (The fused forms
//! of a target, such as ONNX Runtime's MultiHeadAttention, belong in that target's file.)

use super::registry::NodeCx;
use crate::error::Result;
use crate::onnx::builder::{Attr, GraphBuilder};

pub(super) fn attention(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let ins = cx.inputs();
    let head_dim = cx.feature_width()?;
    let scale = b.floats(
        &format!("attention_scale[{head_dim}]"),
        cx.dtype,
        &[],
        &[1.0 / (head_dim as f32).sqrt()],
    );
    let [kt, scores, scaled, probs] = ["k_t", "scores", "scaled", "probs"].map(|s| cx.tmp(s));
    b.node(
        "Transpose",
        &[ins[1]],
        &[&kt],
        vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
    );
    b.node("MatMul", &[ins[0], &kt], &[&scores], vec![]);
    b.node("Mul", &[&scores, &scale], &[&scaled], vec![]);
    b.node(
        "Softmax",
        &[&scaled],
        &[&probs],
        vec![("axis", Attr::Int(-1))],
    );
    b.node("MatMul", &[&probs, ins[2]], &[cx.output()], vec![]);
    Ok(())
}

pub(super) fn rope(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    // Adjacent pairs (x0, x1) of each head rotate by the token's angle:
    // (x0 cos − x1 sin, x0 sin + x1 cos).
    let ins = cx.inputs();
    let head_dim = cx.feature_width()? as i64;
    let pairs = b.ints(&[0, 0, 0, head_dim / 2, 2]);
    let back = b.ints(&[0, 0, 0, head_dim]);
    let (axes, halves) = (b.ints(&[-1]), b.ints(&[1, 1]));
    let [pairs_t, x0, x1, cos, sin, x0c, x1s, x0s, x1c, y0, y1, y] = [
        "pairs", "x0", "x1", "cos", "sin", "x0c", "x1s", "x0s", "x1c", "y0", "y1", "y",
    ]
    .map(|s| cx.tmp(s));
    b.node("Reshape", &[ins[0], &pairs], &[&pairs_t], vec![]);
    b.node(
        "Split",
        &[&pairs_t, &halves],
        &[&x0, &x1],
        vec![("axis", Attr::Int(-1))],
    );
    b.node("Unsqueeze", &[ins[1], &axes], &[&cos], vec![]);
    b.node("Unsqueeze", &[ins[2], &axes], &[&sin], vec![]);
    b.node("Mul", &[&x0, &cos], &[&x0c], vec![]);
    b.node("Mul", &[&x1, &sin], &[&x1s], vec![]);
    b.node("Mul", &[&x0, &sin], &[&x0s], vec![]);
    b.node("Mul", &[&x1, &cos], &[&x1c], vec![]);
    b.node("Sub", &[&x0c, &x1s], &[&y0], vec![]);
    b.node("Add", &[&x0s, &x1c], &[&y1], vec![]);
    b.node("Concat", &[&y0, &y1], &[&y], vec![("axis", Attr::Int(-1))]);
    b.node("Reshape", &[&y, &back], &[cx.output()], vec![]);
    Ok(())
}
