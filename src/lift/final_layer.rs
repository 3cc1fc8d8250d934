//! The final layer: adaptive LayerNorm (shift first, then scale) and the output projection,
//! then the cast back to the float32 the ONNX contract promises.

use super::Lifter;
use crate::dtype::DType;
use crate::error::Result;
use crate::generation::flux1::NAMES;
use crate::generation::table::Role;
use crate::ir::{Op, Value};

pub(crate) fn lift_final_layer(l: &mut Lifter, img: Value, silu_vec: Value) -> Result<Value> {
    let m = l.modulation(&NAMES.top(Role::FinalModulation)?, silu_vec, 2)?;
    let a = l.modulated_norm("final_layer.pre", img, m[0], m[1])?;
    let linear = NAMES.top(Role::FinalLinear)?;
    let out = l.linear(&linear, a)?;
    if l.dtype == DType::F32 {
        return Ok(out);
    }
    l.op(
        Op::Cast { to: DType::F32 },
        format!("{linear}.cast"),
        &[out],
    )
}
