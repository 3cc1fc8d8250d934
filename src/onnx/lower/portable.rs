//! The standard-ONNX rules (opset 20), for any runtime: every IR op's lowering, with `x Wᵀ` as
//! a Transpose of the weight and a MatMul. Other targets start from this table.

use super::registry::Registry;
use super::{attention, elementwise, embedding, linear, modulation, norm, shape};
use crate::ir::op::OpKind;
use crate::onnx::builder::{Attr, GraphBuilder};

pub(super) fn registry() -> Registry {
    Registry::default()
        .with(OpKind::Cast, elementwise::cast)
        .with(OpKind::Add, elementwise::add)
        .with(OpKind::Clip, elementwise::clip)
        .with(OpKind::Silu, elementwise::silu)
        .with(OpKind::GeluTanh, elementwise::gelu_tanh)
        .with(OpKind::Linear, |b, cx| {
            linear::linear(b, cx, transposed_matmul)
        })
        .with(OpKind::LinearResidual, |b, cx| {
            linear::linear_residual(b, cx, transposed_matmul)
        })
        .with(OpKind::LayerNorm, norm::layer_norm)
        .with(OpKind::RmsNorm, norm::rms_norm)
        .with(OpKind::Modulate, modulation::modulate)
        .with(OpKind::GatedResidual, modulation::gated_residual)
        .with(OpKind::Split, shape::split)
        .with(OpKind::ToHeads, shape::to_heads)
        .with(OpKind::FromHeads, shape::from_heads)
        .with(OpKind::Concat, shape::concat)
        .with(OpKind::SplitLike, shape::split_like)
        .with(OpKind::Attention, attention::attention)
        .with(OpKind::Rope, attention::rope)
        .with(OpKind::TimestepEmbedding, embedding::timestep_embedding)
        .with(OpKind::RopeTable, embedding::rope_table)
}

/// `x Wᵀ` in standard ONNX: the weight transposed in the graph, then a MatMul.
fn transposed_matmul(
    b: &mut GraphBuilder,
    x: &str,
    w: &str,
    out: &str,
    tmp: &dyn Fn(&str) -> String,
) {
    let wt = tmp("weight_t");
    b.node(
        "Transpose",
        &[w],
        &[&wt],
        vec![("perm", Attr::Ints(vec![1, 0]))],
    );
    b.node("MatMul", &[x, &wt], &[out], vec![]);
}
