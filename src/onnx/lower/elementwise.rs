//! Lowering the elementwise ops: Cast → Cast, Add → Add, Clip → Clip (f16 and f32 only),
//! Silu → `x · Sigmoid(x)`, GeluTanh → `Gelu(approximate="tanh")`.

use super::registry::NodeCx;
use crate::dtype::DType;
use crate::error::{Error, Result};
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

/// `Clip(x, −limit, limit)`. ONNX Runtime's CUDA EP has no bf16 kernel for Clip, so a bf16
/// Clip is refused here rather than shipped as a model whose node falls back to the CPU.
pub(super) fn clip(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::Clip { limit } = cx.op else {
        return Err(cx.wrong_op());
    };
    if cx.dtype == DType::BF16 {
        return Err(Error::Internal(format!(
            "`{}`: a bf16 Clip has no CUDA kernel in ONNX Runtime",
            cx.output()
        )));
    }
    let low = b.floats(&format!("clip_min[{limit}]"), cx.dtype, &[], &[-limit]);
    let high = b.floats(&format!("clip_max[{limit}]"), cx.dtype, &[], &[*limit]);
    b.node(
        "Clip",
        &[cx.inputs()[0], &low, &high],
        &[cx.output()],
        vec![],
    );
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
