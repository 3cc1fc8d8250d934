//! The CUDA target's ModulatedLayerNorm: `(1 + scale)·LN(x) + shift` as one
//! `LayerNormalization` whose scale is `1 + scale` and bias `shift`, both unsqueezed to
//! `[B,1,C]` so that they broadcast over the tokens. The per-token Mul and Add of Modulate are
//! gone; what remains outside the norm works on the `[B,C]` vectors.

use crate::error::Result;
use crate::ir::Op;
use crate::onnx::builder::{Attr, GraphBuilder};
use crate::onnx::lower::registry::NodeCx;

pub(super) fn modulated_layer_norm(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::ModulatedLayerNorm { eps } = cx.op else {
        return Err(cx.wrong_op());
    };
    let ins = cx.inputs();
    let axes = b.ints(&[1]);
    let one = b.floats("one", cx.dtype, &[], &[1.0]);
    let [shift, scale, gain] = ["shift", "scale", "gain"].map(|s| cx.tmp(s));
    b.node("Unsqueeze", &[ins[1], &axes], &[&shift], vec![]);
    b.node("Unsqueeze", &[ins[2], &axes], &[&scale], vec![]);
    b.node("Add", &[&scale, &one], &[&gain], vec![]);
    let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(*eps))];
    b.node(
        "LayerNormalization",
        &[ins[0], &gain, &shift],
        &[cx.output()],
        attrs,
    );
    Ok(())
}
