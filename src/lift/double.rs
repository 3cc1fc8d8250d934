//! One double-stream block (`double_blocks.{i}`): image and text streams with their own weights,
//! joined only inside the attention.

use super::{Lifter, Pe};
use crate::error::Result;
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
    let p = format!("double_blocks.{i}");
    let img_mod = l.modulation(&format!("{p}.img_mod.lin"), silu_vec, 6)?;
    let txt_mod = l.modulation(&format!("{p}.txt_mod.lin"), silu_vec, 6)?;

    // Attention branch: per-stream projections, one attention over cat(txt, img).
    let qkv_of = |l: &mut Lifter, s: &str, x: Value, m: &[Value]| -> Result<[Value; 3]> {
        let a = l.modulated_norm(&format!("{p}.{s}_attn.pre"), x, m[0], m[1])?;
        let qkv = l.linear(&format!("{p}.{s}_attn.qkv"), a)?;
        l.heads_qkv(
            qkv,
            &format!("{p}.{s}_attn.qkv"),
            &format!("{p}.{s}_attn.norm"),
        )
    };
    let img_qkv = qkv_of(l, "img", img, &img_mod)?;
    let txt_qkv = qkv_of(l, "txt", txt, &txt_mod)?;
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

    let img = stream_tail(l, &format!("{p}.img"), img, img_attn, &img_mod)?;
    let txt = stream_tail(l, &format!("{p}.txt"), txt, txt_attn, &txt_mod)?;
    Ok((img, txt))
}

/// The rest of one stream: attention output projection and MLP, each a gated residual update.
/// `m` holds the stream's six modulation vectors (shift, scale, gate for attention, then MLP).
fn stream_tail(l: &mut Lifter, stream: &str, x: Value, attn: Value, m: &[Value]) -> Result<Value> {
    let proj = l.linear(&format!("{stream}_attn.proj"), attn)?;
    let x = l.op(
        Op::GatedResidual,
        format!("{stream}_attn.residual"),
        &[x, m[2], proj],
    )?;
    let a = l.modulated_norm(&format!("{stream}_mlp.pre"), x, m[3], m[4])?;
    let hidden = l.linear(&format!("{stream}_mlp.0"), a)?;
    let hidden = l.op(Op::GeluTanh, format!("{stream}_mlp.1"), &[hidden])?;
    let out = l.linear(&format!("{stream}_mlp.2"), hidden)?;
    l.op(
        Op::GatedResidual,
        format!("{stream}_mlp.residual"),
        &[x, m[5], out],
    )
}
