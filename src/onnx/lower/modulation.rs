//! Lowering the adaLN ops, whose per-sample vectors `[B,h]` are unsqueezed to broadcast over
//! the tokens: Modulate → `x·(1 + scale) + shift`, GatedResidual → `x + gate·branch`.

use super::registry::NodeCx;
use crate::error::Result;
use crate::onnx::builder::GraphBuilder;

pub(super) fn modulate(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let ins = cx.inputs();
    let axes = b.ints(&[1]);
    let one = b.floats("one", cx.dtype, &[], &[1.0]);
    let [shift, scale, gain, scaled] = ["shift", "scale", "gain", "scaled"].map(|s| cx.tmp(s));
    b.node("Unsqueeze", &[ins[1], &axes], &[&shift], vec![]);
    b.node("Unsqueeze", &[ins[2], &axes], &[&scale], vec![]);
    b.node("Add", &[&scale, &one], &[&gain], vec![]);
    b.node("Mul", &[ins[0], &gain], &[&scaled], vec![]);
    b.node("Add", &[&scaled, &shift], &[cx.output()], vec![]);
    Ok(())
}

pub(super) fn gated_residual(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let ins = cx.inputs();
    let axes = b.ints(&[1]);
    let (gate, gated) = (cx.tmp("gate"), cx.tmp("gated"));
    b.node("Unsqueeze", &[ins[1], &axes], &[&gate], vec![]);
    b.node("Mul", &[&gate, ins[2]], &[&gated], vec![]);
    b.node("Add", &[ins[0], &gated], &[cx.output()], vec![]);
    Ok(())
}
