//! The CUDA target's ops on packed heads `[B,S,H·D]`, each one ONNX Runtime contrib node:
//! PackedRmsNorm → `BranchwiseRMSNorm(num_branches=H)`, PackedRope → `RotaryEmbedding`
//! (`interleaved=1`, the per-token tables as its cache, positions 0..S−1), PackedAttention →
//! `MultiHeadAttention` with separate Q, K, V (scale 1/√D, its default).

use crate::error::Result;
use crate::ir::Op;
use crate::onnx::builder::{Attr, CONTRIB_DOMAIN, GraphBuilder};
use crate::onnx::lower::registry::NodeCx;

pub(super) fn rms_norm(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::PackedRmsNorm { heads, eps } = cx.op else {
        return Err(cx.wrong_op());
    };
    let attrs = vec![
        ("num_branches", Attr::Int(*heads as i64)),
        ("epsilon", Attr::Float(*eps)),
    ];
    b.node_in(
        "BranchwiseRMSNorm",
        CONTRIB_DOMAIN,
        &cx.inputs(),
        &[cx.output()],
        attrs,
    );
    Ok(())
}

pub(super) fn rope(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::PackedRope { heads } = cx.op else {
        return Err(cx.wrong_op());
    };
    // The cache holds one row per token of this call, so token s reads row s: a position_ids
    // of shape [1] is the offset of the first token, 0.
    let ins = cx.inputs();
    let first_position = b.ints(&[0]);
    let attrs = vec![
        ("num_heads", Attr::Int(*heads as i64)),
        ("interleaved", Attr::Int(1)),
    ];
    b.node_in(
        "RotaryEmbedding",
        CONTRIB_DOMAIN,
        &[ins[0], &first_position, ins[1], ins[2]],
        &[cx.output()],
        attrs,
    );
    Ok(())
}

pub(super) fn attention(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::PackedAttention { heads } = cx.op else {
        return Err(cx.wrong_op());
    };
    b.node_in(
        "MultiHeadAttention",
        CONTRIB_DOMAIN,
        &cx.inputs(),
        &[cx.output()],
        vec![("num_heads", Attr::Int(*heads as i64))],
    );
    Ok(())
}
