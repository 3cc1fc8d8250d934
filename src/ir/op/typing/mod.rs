//! Typing an op's outputs from its inputs' types: the arity check and the dispatch to one rule
//! per op or op family, each in the file of its family.

mod attention;
mod check;
mod embedding;
mod linear;
mod modulation;
mod norm;
mod packed;
mod shape;

use super::Op;
use crate::error::TypeError;
use crate::ir::types::{Dim, TensorType};

impl Op {
    /// Types the outputs from the inputs' types, or says what does not fit.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, TypeError> {
        let kind = self.kind();
        let expected = arity(self);
        if inputs.len() != expected {
            return Err(TypeError::Arity {
                op: kind.name(),
                expected,
                got: inputs.len(),
            });
        }
        let one = |ty: Result<TensorType, TypeError>| ty.map(|ty| vec![ty]);
        let i = inputs;
        match self {
            Op::Input { ty, .. } => Ok(vec![ty.clone()]),
            Op::Weight(w) => Ok(vec![TensorType::new(
                w.dtype,
                w.shape.iter().map(|&d| Dim::Known(d)).collect(),
            )]),
            Op::Cast { to } => Ok(vec![i[0].with_dtype(*to)]),
            // Elementwise on one tensor: the output is typed as the input.
            Op::LayerNorm { .. } | Op::Clip { .. } | Op::Silu | Op::GeluTanh => {
                Ok(vec![i[0].clone()])
            }
            Op::Linear | Op::LinearGeluTanh => one(linear::linear(kind, i[0], i[1], i[2])),
            Op::LinearResidual { conditioned } => {
                let condition = conditioned.then(|| (i[3], i[4]));
                one(linear::linear_residual(i[0], i[1], i[2], condition))
            }
            Op::RmsNorm { .. } => one(norm::rms_norm(i[0], i[1])),
            Op::Modulate | Op::ModulatedLayerNorm { .. } => {
                one(modulation::modulate(kind, i[0], i[1], i[2]))
            }
            Op::GatedResidual => one(modulation::gated_residual(i[0], i[1], i[2])),
            Op::Add => {
                check::same(kind, i[0], i[1], "Add")?;
                Ok(vec![i[0].clone()])
            }
            Op::Split { sizes } => shape::split(i[0], sizes),
            Op::ToHeads { heads } => one(shape::to_heads(i[0], *heads)),
            Op::FromHeads => one(shape::from_heads(i[0])),
            Op::Concat { axis } => one(shape::concat(i[0], i[1], *axis)),
            Op::SplitLike { axis } => shape::split_like(i[0], i[1], *axis),
            Op::Rope => one(attention::rope(i[0], i[1], i[2])),
            Op::Attention => one(attention::attention(i[0], i[1], i[2])),
            Op::TimestepEmbedding { dim, .. } => one(embedding::timestep_embedding(i[0], *dim)),
            Op::RopeTable { axes_dim, .. } => embedding::rope_table(i[0], axes_dim),
            Op::PackedRmsNorm { heads, .. } => one(packed::rms_norm(i[0], i[1], *heads)),
            Op::PackedRope { heads } => one(packed::rope(i[0], i[1], i[2], *heads)),
            Op::PackedAttention { heads } => one(packed::attention(i[0], i[1], i[2], *heads)),
        }
    }
}

/// How many inputs an op takes.
fn arity(op: &Op) -> usize {
    match op {
        Op::Input { .. } | Op::Weight(_) => 0,
        Op::Cast { .. }
        | Op::LayerNorm { .. }
        | Op::Clip { .. }
        | Op::Silu
        | Op::GeluTanh
        | Op::Split { .. }
        | Op::ToHeads { .. }
        | Op::FromHeads
        | Op::TimestepEmbedding { .. }
        | Op::RopeTable { .. } => 1,
        Op::RmsNorm { .. }
        | Op::PackedRmsNorm { .. }
        | Op::Add
        | Op::Concat { .. }
        | Op::SplitLike { .. } => 2,
        Op::Linear
        | Op::LinearGeluTanh
        | Op::Modulate
        | Op::ModulatedLayerNorm { .. }
        | Op::GatedResidual
        | Op::Rope
        | Op::PackedRope { .. }
        | Op::Attention
        | Op::PackedAttention { .. } => 3,
        Op::LinearResidual { conditioned } => {
            if *conditioned {
                5
            } else {
                3
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn ty(dims: &[usize]) -> TensorType {
        TensorType::new(DType::F32, dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    #[test]
    fn a_wrong_arity_names_the_op_and_both_counts() {
        let x = ty(&[1, 4, 8]);
        let err = Op::Linear.infer(&[&x]).unwrap_err();
        assert_eq!(err.to_string(), "Linear takes 3 inputs, got 1");
        assert_eq!(err.op(), "Linear");
    }

    #[test]
    fn a_misfit_keeps_the_old_message() {
        let (x, w, b) = (ty(&[1, 4, 8]), ty(&[16, 7]), ty(&[16]));
        let err = Op::Linear.infer(&[&x, &w, &b]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Linear: x f32[1,4,8], weight f32[16,7], bias f32[16] do not fit"
        );
        let (x, shift) = (ty(&[1, 4, 8]), ty(&[1, 7]));
        let err = Op::Modulate.infer(&[&x, &shift, &shift]).unwrap_err();
        assert_eq!(err.to_string(), "per-sample vector: f32[1,7] vs f32[1,8]");
        assert_eq!(err.op(), "Modulate");
    }

    #[test]
    fn a_feature_axis_of_unknown_width_is_refused() {
        let x = TensorType::new(DType::F32, vec![Dim::Known(1), Dim::sym("N")]);
        let err = Op::Split { sizes: vec![1] }.infer(&[&x]).unwrap_err();
        assert_eq!(err.to_string(), "f32[1,N] has no known last axis");
        assert_eq!(err.op(), "Split");
    }
}
