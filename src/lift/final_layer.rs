//! The final layer: adaptive LayerNorm (shift first, then scale) and the output projection,
//! then the cast back to the float32 the ONNX contract promises.

use super::Lifter;
use crate::dtype::DType;
use crate::error::Result;
use crate::ir::{Op, Value};

pub(crate) fn lift_final_layer(l: &mut Lifter, img: Value, silu_vec: Value) -> Result<Value> {
    let m = l.modulation("final_layer.adaLN_modulation.1", silu_vec, 2)?;
    let a = l.modulated_norm("final_layer.pre", img, m[0], m[1])?;
    let out = l.linear("final_layer.linear", a)?;
    if l.dtype == DType::F32 {
        return Ok(out);
    }
    l.op(
        Op::Cast { to: DType::F32 },
        "final_layer.linear.cast",
        &[out],
    )
}
