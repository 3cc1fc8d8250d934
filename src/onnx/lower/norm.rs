//! Lowering the norms: LayerNorm → LayerNormalization with a constant unit scale, RmsNorm →
//! `x / Sqrt(ReduceMean(x·x) + eps) · scale`.

use super::registry::NodeCx;
use crate::error::Result;
use crate::ir::Op;
use crate::onnx::builder::{Attr, GraphBuilder};

pub(super) fn layer_norm(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::LayerNorm { eps } = cx.op else {
        return Err(cx.wrong_op());
    };
    let width = cx.feature_width()?;
    let ones = b.floats(
        &format!("ones[{width}]"),
        cx.dtype,
        &[width],
        &vec![1.0; width],
    );
    let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(*eps))];
    b.node(
        "LayerNormalization",
        &[cx.inputs()[0], &ones],
        &[cx.output()],
        attrs,
    );
    Ok(())
}

pub(super) fn rms_norm(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::RmsNorm { eps } = cx.op else {
        return Err(cx.wrong_op());
    };
    // x / sqrt(mean(x²) + eps) · scale, written with Mul and Div: bf16 has no Reciprocal
    // kernel, and ORT's fusion of the Pow form fails to place in bf16.
    let ins = cx.inputs();
    let [sq, ms, var, rms, normed] = ["square", "mean", "var", "rms", "normed"].map(|s| cx.tmp(s));
    let axes = b.ints(&[-1]);
    let eps = b.floats(&format!("eps[{eps:e}]"), cx.dtype, &[], &[*eps]);
    b.node("Mul", &[ins[0], ins[0]], &[&sq], vec![]);
    b.node(
        "ReduceMean",
        &[&sq, &axes],
        &[&ms],
        vec![("keepdims", Attr::Int(1))],
    );
    b.node("Add", &[&ms, &eps], &[&var], vec![]);
    b.node("Sqrt", &[&var], &[&rms], vec![]);
    b.node("Div", &[ins[0], &rms], &[&normed], vec![]);
    b.node("Mul", &[&normed, ins[1]], &[cx.output()], vec![]);
    Ok(())
}
