//! One single-stream block (`single_blocks.{i}`) on the joint sequence `cat(txt, img)`:
//! attention and MLP computed in parallel from one fused projection.

use super::{Lifter, Pe};
use crate::error::Result;
use crate::generation::flux1::NAMES;
use crate::generation::table::{Role, Stream};
use crate::ir::{Op, Value};

pub(crate) fn lift_single_block(
    l: &mut Lifter,
    i: usize,
    x: Value,
    silu_vec: Value,
    pe: Pe,
) -> Result<Value> {
    // Parameters are named by the naming table; the nodes between them after the block's path.
    let p = format!("{}.{i}", NAMES.single.bfl);
    let (h, mlp) = (l.ckpt.config.hidden, l.ckpt.config.mlp_hidden);
    let m = l.modulation(
        &NAMES.module(Role::Modulation(Stream::Joint), i)?,
        silu_vec,
        3,
    )?;
    let a = l.modulated_norm(&format!("{p}.pre"), x, m[0], m[1])?;
    let linear1 = NAMES.module(Role::FusedIn, i)?;
    let fused = l.linear(&linear1, a)?;
    let parts = l.op_n(
        Op::Split {
            sizes: vec![3 * h, mlp],
        },
        format!("{linear1}.split"),
        &[fused],
    )?;
    let norms = [
        NAMES.module(Role::QueryNorm(Stream::Joint), i)?,
        NAMES.module(Role::KeyNorm(Stream::Joint), i)?,
    ];
    let qkv = l.heads_qkv(parts[0], &format!("{p}.qkv"), &norms)?;
    let attn = l.attention(&format!("{p}.attn"), qkv, pe)?;
    let act = l.op(Op::GeluTanh, format!("{p}.mlp_act"), &[parts[1]])?;
    let linear2 = NAMES.module(Role::FusedOut, i)?;
    let cat = l.op(
        Op::Concat { axis: 2 },
        format!("{linear2}.input"),
        &[attn, act],
    )?;
    let out = l.linear(&linear2, cat)?;
    l.op(Op::GatedResidual, format!("{p}.residual"), &[x, m[2], out])
}
