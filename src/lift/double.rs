//! One double-stream block (`double_blocks.{i}`): image and text streams with their own weights,
//! joined only inside the attention.

use super::{Lifter, Pe};
use crate::error::Result;
use crate::generation::flux1::NAMES;
use crate::generation::table::{Role, Stream};
use crate::ir::{Op, Value};

/// Returns the block's (img, txt).
pub(crate) fn lift_double_block(
    l: &mut Lifter,
    i: usize,
    img: Value,
    txt: Value,
    silu_vec: Value,
    pe: Pe,
) -> Result<(Value, Value)> {
    // Parameters are named by the naming table; the nodes between them after the block's path.
    let p = format!("{}.{i}", NAMES.double.bfl);
    let img_mod = l.modulation(
        &NAMES.module(Role::Modulation(Stream::Img), i)?,
        silu_vec,
        6,
    )?;
    let txt_mod = l.modulation(
        &NAMES.module(Role::Modulation(Stream::Txt), i)?,
        silu_vec,
        6,
    )?;

    // Attention branch: per-stream projections, one attention over cat(txt, img).
    let qkv_of = |l: &mut Lifter, s: Stream, x: Value, m: &[Value]| -> Result<[Value; 3]> {
        let a = l.modulated_norm(&format!("{p}.{}_attn.pre", name(s)), x, m[0], m[1])?;
        let qkv_module = NAMES.module(Role::Qkv(s), i)?;
        let qkv = l.linear(&qkv_module, a)?;
        let norms = [
            NAMES.module(Role::QueryNorm(s), i)?,
            NAMES.module(Role::KeyNorm(s), i)?,
        ];
        l.heads_qkv(qkv, &qkv_module, &norms)
    };
    let img_qkv = qkv_of(l, Stream::Img, img, &img_mod)?;
    let txt_qkv = qkv_of(l, Stream::Txt, txt, &txt_mod)?;
    let mut joint = [img_qkv[0]; 3];
    for (j, which) in ["q", "k", "v"].into_iter().enumerate() {
        joint[j] = l.op(
            Op::Concat { axis: 2 },
            format!("{p}.attn.{which}"),
            &[txt_qkv[j], img_qkv[j]],
        )?;
    }
    let attn = l.attention(&format!("{p}.attn"), joint, pe)?;
    let parts = l.op_n(
        Op::SplitLike { axis: 1 },
        format!("{p}.attn.split"),
        &[attn, txt],
    )?;
    let (txt_attn, img_attn) = (parts[0], parts[1]);

    let img = stream_tail(l, (i, Stream::Img), img, img_attn, &img_mod)?;
    let txt = stream_tail(l, (i, Stream::Txt), txt, txt_attn, &txt_mod)?;
    Ok((img, txt))
}

/// How the lifter's node names spell a double block's stream.
fn name(s: Stream) -> &'static str {
    match s {
        Stream::Img => "img",
        Stream::Txt => "txt",
        Stream::Joint => "joint",
    }
}

/// The rest of one stream of block `i`: attention output projection and MLP, each a gated
/// residual update. `m` holds the stream's six modulation vectors (shift, scale, gate for
/// attention, then MLP).
fn stream_tail(
    l: &mut Lifter,
    (i, s): (usize, Stream),
    x: Value,
    attn: Value,
    m: &[Value],
) -> Result<Value> {
    let stream = format!("{}.{i}.{}", NAMES.double.bfl, name(s));
    let proj = l.linear(&NAMES.module(Role::Proj(s), i)?, attn)?;
    let x = l.op(
        Op::GatedResidual,
        format!("{stream}_attn.residual"),
        &[x, m[2], proj],
    )?;
    let a = l.modulated_norm(&format!("{stream}_mlp.pre"), x, m[3], m[4])?;
    let hidden = l.linear(&NAMES.module(Role::MlpIn(s), i)?, a)?;
    let hidden = l.op(Op::GeluTanh, format!("{stream}_mlp.1"), &[hidden])?;
    let out = l.linear(&NAMES.module(Role::MlpOut(s), i)?, hidden)?;
    l.op(
        Op::GatedResidual,
        format!("{stream}_mlp.residual"),
        &[x, m[5], out],
    )
}
