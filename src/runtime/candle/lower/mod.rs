//! IR ops → candle tensor ops: the rule of every op kind (a table, as `onnx::lower` keeps one
//! per target) and what a rule is handed. Rules use composed forms, or custom ops that bring
//! their own backward (`frozen.rs`, `chunked_attention.rs`): candle's fused softmax, layer/RMS
//! norm and rope kernels return outputs detached from the autograd graph without an error, so
//! their inputs would silently receive no gradient.

mod attention;
mod chunked_attention;
mod elementwise;
mod embedding;
mod frozen;
mod fused;
mod linear;
mod modulation;
mod norm;
mod shape;

use crate::ir::Op;
use crate::ir::op::OpKind;
use candle_core::{Result, Tensor};

/// Computes one IR node's outputs from its inputs (in slot order), in the compute type.
pub(super) type Rule = fn(&NodeCx, &[Tensor]) -> Result<Vec<Tensor>>;

/// A trainable low-rank update of a Linear's weight: `x Wᵀ` gains `scale · (x Aᵀ) Bᵀ`.
pub(super) struct LoraAdapter {
    /// `A [rank, in]`.
    pub down: Tensor,
    /// `B [out, rank]`.
    pub up: Tensor,
    /// `alpha / rank`.
    pub scale: f64,
}

/// One IR node as a rule sees it.
pub(super) struct NodeCx<'a> {
    pub op: &'a Op,
    /// The LoRA adapter on the node's weight (input 1), for the Linear kinds.
    pub lora: Option<&'a LoraAdapter>,
}

impl NodeCx<'_> {
    /// A rule was handed a node of another kind than it is registered for.
    pub fn wrong_op(&self) -> candle_core::Error {
        candle_core::Error::Msg(format!(
            "a {} node reached another op's rule",
            self.op.kind()
        ))
    }
}

/// The rule for `kind`; `None` for Input and Weight, which the driver binds itself.
pub(super) fn rule(kind: OpKind) -> Option<Rule> {
    let rule: Rule = match kind {
        OpKind::Input | OpKind::Weight => return None,
        OpKind::Cast => elementwise::cast,
        OpKind::Add => elementwise::add,
        OpKind::Clip => elementwise::clip,
        OpKind::Silu => elementwise::silu,
        OpKind::GeluTanh => elementwise::gelu_tanh,
        OpKind::Linear => linear::linear,
        OpKind::LinearResidual => linear::linear_residual,
        OpKind::LayerNorm => norm::layer_norm,
        OpKind::RmsNorm => norm::rms_norm,
        OpKind::Modulate => modulation::modulate,
        OpKind::GatedResidual => modulation::gated_residual,
        OpKind::Split => shape::split,
        OpKind::ToHeads => shape::to_heads,
        OpKind::FromHeads => shape::from_heads,
        OpKind::Concat => shape::concat,
        OpKind::SplitLike => shape::split_like,
        OpKind::Attention => attention::attention,
        OpKind::Rope => attention::rope,
        OpKind::TimestepEmbedding => embedding::timestep_embedding,
        OpKind::RopeTable => embedding::rope_table,
        OpKind::PackedRmsNorm => fused::packed_rms_norm,
        OpKind::PackedRope => fused::packed_rope,
        OpKind::PackedAttention => fused::packed_attention,
        OpKind::ModulatedLayerNorm => fused::modulated_layer_norm,
        OpKind::LinearGeluTanh => fused::linear_gelu_tanh,
    };
    Some(rule)
}

/// Whether a LoRA adapter may sit on input `slot` of a `kind` node: the matrix of a Linear.
pub(super) fn takes_lora(kind: OpKind, slot: usize) -> bool {
    matches!(kind, OpKind::Linear | OpKind::LinearGeluTanh) && slot == 1
}

/// The last axis of `x`, which every op here treats as the feature axis.
fn last_axis(x: &Tensor) -> Result<usize> {
    x.rank()
        .checked_sub(1)
        .ok_or_else(|| candle_core::Error::Msg("a scalar has no feature axis".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_op_but_inputs_and_weights_has_a_rule() {
        for kind in OpKind::ALL {
            let bound_by_driver = matches!(kind, OpKind::Input | OpKind::Weight);
            assert_eq!(rule(kind).is_some(), !bound_by_driver, "{kind}");
        }
    }
}
