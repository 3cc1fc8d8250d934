//! The fused kinds a target's rewrite makes before its ONNX lowering (`onnx::lower::fuse`),
//! lowered as the ops they stand for: PackedRmsNorm, PackedRope and PackedAttention on heads
//! packed in the last axis `[B,S,H·D]`, ModulatedLayerNorm, LinearGeluTanh.

use super::NodeCx;
use super::attention::rotate_pairs;
use super::chunked_attention::attention_of;
use super::linear::affine_map;
use super::modulation::modulate_of;
use super::norm::{layer_norm_of, rms_norm_of};
use super::shape::{merge_heads, split_heads};
use crate::ir::Op;
use candle_core::{Result, Tensor};

pub(super) fn packed_rms_norm(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::PackedRmsNorm { heads, eps } = cx.op else {
        return Err(cx.wrong_op());
    };
    let (b, s, width) = ins[0].dims3()?;
    let per_head = ins[0].reshape((b, s, *heads, width / heads))?;
    Ok(vec![
        rms_norm_of(&per_head, &ins[1], *eps)?.reshape((b, s, width))?,
    ])
}

pub(super) fn packed_rope(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::PackedRope { heads } = cx.op else {
        return Err(cx.wrong_op());
    };
    let (b, s, width) = ins[0].dims3()?;
    let half = width / heads / 2;
    let pairs = ins[0].contiguous()?.reshape((b, s, *heads, half, 2))?;
    let cos = ins[1].reshape((s, 1, half, 1))?;
    let sin = ins[2].reshape((s, 1, half, 1))?;
    Ok(vec![
        rotate_pairs(&pairs, &cos, &sin)?.reshape((b, s, width))?,
    ])
}

pub(super) fn packed_attention(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::PackedAttention { heads } = cx.op else {
        return Err(cx.wrong_op());
    };
    let [q, k, v] = [0, 1, 2].map(|i| split_heads(&ins[i], *heads));
    Ok(vec![merge_heads(&attention_of(&q?, &k?, &v?)?)?])
}

pub(super) fn modulated_layer_norm(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::ModulatedLayerNorm { eps } = cx.op else {
        return Err(cx.wrong_op());
    };
    let normed = layer_norm_of(&ins[0], *eps)?;
    Ok(vec![modulate_of(&normed, &ins[1], &ins[2])?])
}

pub(super) fn linear_gelu_tanh(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    Ok(vec![
        affine_map(&ins[0], &ins[1], &ins[2], cx.lora)?.gelu()?,
    ])
}
