//! Lowering the elementwise ops: Cast → Cast, Add → Add, Silu → `x · Sigmoid(x)`,
//! GeluTanh → `Gelu(approximate="tanh")`.

use super::registry::NodeCx;
use crate::error::Result;
use crate::ir::Op;
use crate::onnx::builder::{Attr, GraphBuilder, data_type};

pub(super) fn cast(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::Cast { to } = cx.op else {
        return Err(cx.wrong_op());
    };
    let to = data_type(*to) as i64;
    b.node(
        "Cast",
        &cx.inputs(),
        &[cx.output()],
        vec![("to", Attr::Int(to))],
    );
    Ok(())
}

pub(super) fn add(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    b.node("Add", &cx.inputs(), &[cx.output()], vec![]);
    Ok(())
}

pub(super) fn silu(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let ins = cx.inputs();
    let sig = cx.tmp("sigmoid");
    b.node("Sigmoid", &ins, &[&sig], vec![]);
    b.node("Mul", &[ins[0], &sig], &[cx.output()], vec![]);
    Ok(())
}

pub(super) fn gelu_tanh(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    b.node(
        "Gelu",
        &cx.inputs(),
        &[cx.output()],
        vec![("approximate", Attr::Str("tanh"))],
    );
    Ok(())
}
