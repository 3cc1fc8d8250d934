//! One single-stream block (`single_blocks.{i}`) on the joint sequence `cat(txt, img)`:
//! attention and MLP computed in parallel from one fused projection.

use super::{Lifter, Pe};
use crate::error::Result;
use crate::ir::{Op, Value};

pub(crate) fn lift_single_block(
    l: &mut Lifter,
    i: usize,
    x: Value,
    silu_vec: Value,
    pe: Pe,
) -> Result<Value> {
    let p = format!("single_blocks.{i}");
    let (h, mlp) = (l.ckpt.config.hidden, l.ckpt.config.mlp_hidden);
    let m = l.modulation(&format!("{p}.modulation.lin"), silu_vec, 3)?;
    let a = l.modulated_norm(&format!("{p}.pre"), x, m[0], m[1])?;
    let fused = l.linear(&format!("{p}.linear1"), a)?;
    let parts = l.op_n(
        Op::Split {
            sizes: vec![3 * h, mlp],
        },
        format!("{p}.linear1.split"),
        &[fused],
    )?;
    let qkv = l.heads_qkv(parts[0], &format!("{p}.qkv"), &format!("{p}.norm"))?;
    let attn = l.attention(&format!("{p}.attn"), qkv, pe)?;
    let act = l.op(Op::GeluTanh, format!("{p}.mlp_act"), &[parts[1]])?;
    let cat = l.op(
        Op::Concat { axis: 2 },
        format!("{p}.linear2.input"),
        &[attn, act],
    )?;
    let out = l.linear(&format!("{p}.linear2"), cat)?;
    l.op(Op::GatedResidual, format!("{p}.residual"), &[x, m[2], out])
}
