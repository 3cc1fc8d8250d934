//! The IR's operators: FLUX's own vocabulary (Linear, LayerNorm, RmsNorm, Modulate, Rope,
//! Attention …), their kinds and dump attributes. The rules that type their outputs are in
//! `typing/`, one file per op family; lowering to ONNX happens elsewhere.

mod typing;

use super::types::TensorType;
use super::weight::Weight;
use crate::dtype::DType;
use std::fmt;

#[derive(Clone, Debug)]
pub enum Op {
    /// A model input.
    Input {
        name: String,
        ty: TensorType,
    },
    Weight(Weight),
    Cast {
        to: DType,
    },
    /// `x Wᵀ + b` over the last axis: (x `[…, in]`, w `[out, in]`, b `[out]`).
    Linear,
    /// A residual branch replaced by a fitted linear map (BRLL): `x + x Wᵀ + b`, and when
    /// `conditioned`, `+ c Uᵀ` broadcast over the tokens: (x `[B,S,h]`, w `[h,h]`, b `[h]`
    /// [, c `[B,k]`, u `[h,k]`]).
    LinearResidual {
        conditioned: bool,
    },
    /// LayerNorm over the last axis without affine parameters.
    LayerNorm {
        eps: f32,
    },
    /// RMSNorm over the last axis with a learned scale: (x, scale `[D]`).
    RmsNorm {
        eps: f32,
    },
    /// `(1 + scale)·x + shift`: (x `[B,S,h]`, shift `[B,h]`, scale `[B,h]`).
    Modulate,
    /// The residual update `x + gate·branch`: (x `[B,S,h]`, gate `[B,h]`, branch `[B,S,h]`).
    GatedResidual,
    Add,
    /// Clamps to `[−limit, limit]`: where an f16 model's residual stream would overflow.
    Clip {
        limit: f32,
    },
    Silu,
    /// gelu with the tanh approximation, as FLUX's MLPs use it.
    GeluTanh,
    /// Splits the last axis into consecutive parts of these widths.
    Split {
        sizes: Vec<usize>,
    },
    /// `[B,S,H·D]` → `[B,H,S,D]`.
    ToHeads {
        heads: usize,
    },
    /// `[B,H,S,D]` → `[B,S,H·D]`.
    FromHeads,
    /// Two tensors end to end along `axis`.
    Concat {
        axis: usize,
    },
    /// Splits (x, like) along `axis` after as many entries as `like` has there.
    SplitLike {
        axis: usize,
    },
    /// Rotates adjacent pairs of the head's features: (x `[B,H,S,D]`, cos `[S,D/2]`, sin `[S,D/2]`).
    Rope,
    /// `softmax(q kᵀ/√D) v` over the joint sequence: (q, k, v `[B,H,S,D]`).
    Attention,
    /// `[cos(scale·t·f), sin(scale·t·f)]`, `f_k = θ^(−k/half)`: t `[B]` → `[B,dim]`, in f32.
    TimestepEmbedding {
        dim: usize,
        scale: f32,
    },
    /// Rotation angles per token: ids `[S,axes]` → (cos, sin) `[S,D/2]`, in f32.
    RopeTable {
        axes_dim: Vec<usize>,
        theta: u32,
    },
    // The fused forms below are made by a target's rewrite before lowering (see
    // `onnx::lower::fuse`), never by the lifter: heads stay packed in the last axis,
    // `[B,S,H·D]`, so no head transposes are needed.
    /// RmsNorm of each head of packed heads: (x `[B,S,H·D]`, scale `[D]`).
    PackedRmsNorm {
        heads: usize,
        eps: f32,
    },
    /// Rope on packed heads: (x `[B,S,H·D]`, cos `[S,D/2]`, sin `[S,D/2]`).
    PackedRope {
        heads: usize,
    },
    /// Attention on packed heads: (q, k, v `[B,S,H·D]`) → `[B,S,H·D]`.
    PackedAttention {
        heads: usize,
    },
    /// LayerNorm followed by Modulate: `(1 + scale)·LN(x) + shift`, (x `[B,S,h]`, shift `[B,h]`,
    /// scale `[B,h]`).
    ModulatedLayerNorm {
        eps: f32,
    },
    /// Linear followed by GeluTanh: `gelu(x Wᵀ + b)`, (x `[…, in]`, w `[out, in]`, b `[out]`).
    LinearGeluTanh,
}

/// An op's kind without its parameters: what the text dump prints and what a lowering is
/// registered for.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum OpKind {
    Input,
    Weight,
    Cast,
    Linear,
    LinearResidual,
    LayerNorm,
    RmsNorm,
    Modulate,
    GatedResidual,
    Add,
    Clip,
    Silu,
    GeluTanh,
    Split,
    ToHeads,
    FromHeads,
    Concat,
    SplitLike,
    Rope,
    Attention,
    TimestepEmbedding,
    RopeTable,
    PackedRmsNorm,
    PackedRope,
    PackedAttention,
    ModulatedLayerNorm,
    LinearGeluTanh,
}

impl OpKind {
    /// Every kind, in declaration order.
    pub const ALL: [OpKind; 27] = [
        OpKind::Input,
        OpKind::Weight,
        OpKind::Cast,
        OpKind::Linear,
        OpKind::LinearResidual,
        OpKind::LayerNorm,
        OpKind::RmsNorm,
        OpKind::Modulate,
        OpKind::GatedResidual,
        OpKind::Add,
        OpKind::Clip,
        OpKind::Silu,
        OpKind::GeluTanh,
        OpKind::Split,
        OpKind::ToHeads,
        OpKind::FromHeads,
        OpKind::Concat,
        OpKind::SplitLike,
        OpKind::Rope,
        OpKind::Attention,
        OpKind::TimestepEmbedding,
        OpKind::RopeTable,
        OpKind::PackedRmsNorm,
        OpKind::PackedRope,
        OpKind::PackedAttention,
        OpKind::ModulatedLayerNorm,
        OpKind::LinearGeluTanh,
    ];

    /// The kind's name in the text dump and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Input => "Input",
            OpKind::Weight => "Weight",
            OpKind::Cast => "Cast",
            OpKind::Linear => "Linear",
            OpKind::LinearResidual => "LinearResidual",
            OpKind::LayerNorm => "LayerNorm",
            OpKind::RmsNorm => "RmsNorm",
            OpKind::Modulate => "Modulate",
            OpKind::GatedResidual => "GatedResidual",
            OpKind::Add => "Add",
            OpKind::Clip => "Clip",
            OpKind::Silu => "Silu",
            OpKind::GeluTanh => "GeluTanh",
            OpKind::Split => "Split",
            OpKind::ToHeads => "ToHeads",
            OpKind::FromHeads => "FromHeads",
            OpKind::Concat => "Concat",
            OpKind::SplitLike => "SplitLike",
            OpKind::Rope => "Rope",
            OpKind::Attention => "Attention",
            OpKind::TimestepEmbedding => "TimestepEmbedding",
            OpKind::RopeTable => "RopeTable",
            OpKind::PackedRmsNorm => "PackedRmsNorm",
            OpKind::PackedRope => "PackedRope",
            OpKind::PackedAttention => "PackedAttention",
            OpKind::ModulatedLayerNorm => "ModulatedLayerNorm",
            OpKind::LinearGeluTanh => "LinearGeluTanh",
        }
    }
}

impl fmt::Display for OpKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Op {
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Input { .. } => OpKind::Input,
            Op::Weight(_) => OpKind::Weight,
            Op::Cast { .. } => OpKind::Cast,
            Op::Linear => OpKind::Linear,
            Op::LinearResidual { .. } => OpKind::LinearResidual,
            Op::LayerNorm { .. } => OpKind::LayerNorm,
            Op::RmsNorm { .. } => OpKind::RmsNorm,
            Op::Modulate => OpKind::Modulate,
            Op::GatedResidual => OpKind::GatedResidual,
            Op::Add => OpKind::Add,
            Op::Clip { .. } => OpKind::Clip,
            Op::Silu => OpKind::Silu,
            Op::GeluTanh => OpKind::GeluTanh,
            Op::Split { .. } => OpKind::Split,
            Op::ToHeads { .. } => OpKind::ToHeads,
            Op::FromHeads => OpKind::FromHeads,
            Op::Concat { .. } => OpKind::Concat,
            Op::SplitLike { .. } => OpKind::SplitLike,
            Op::Rope => OpKind::Rope,
            Op::Attention => OpKind::Attention,
            Op::TimestepEmbedding { .. } => OpKind::TimestepEmbedding,
            Op::RopeTable { .. } => OpKind::RopeTable,
            Op::PackedRmsNorm { .. } => OpKind::PackedRmsNorm,
            Op::PackedRope { .. } => OpKind::PackedRope,
            Op::PackedAttention { .. } => OpKind::PackedAttention,
            Op::ModulatedLayerNorm { .. } => OpKind::ModulatedLayerNorm,
            Op::LinearGeluTanh => OpKind::LinearGeluTanh,
        }
    }

    /// Attributes worth showing in the dump, already formatted.
    pub fn attributes(&self) -> String {
        match self {
            Op::Cast { to } => format!("to={to}"),
            Op::Clip { limit } => format!("limit={limit}"),
            Op::LinearResidual { conditioned: true } => "conditioned".into(),
            Op::LayerNorm { eps } | Op::RmsNorm { eps } => format!("eps={eps:e}"),
            Op::Split { sizes } => format!("sizes={sizes:?}"),
            Op::ToHeads { heads } => format!("heads={heads}"),
            Op::Concat { axis } | Op::SplitLike { axis } => format!("axis={axis}"),
            Op::TimestepEmbedding { dim, scale } => format!("dim={dim} scale={scale}"),
            Op::RopeTable { axes_dim, theta } => format!("axes={axes_dim:?} theta={theta}"),
            Op::PackedRmsNorm { heads, eps } => format!("heads={heads} eps={eps:e}"),
            Op::PackedRope { heads } | Op::PackedAttention { heads } => format!("heads={heads}"),
            Op::ModulatedLayerNorm { eps } => format!("eps={eps:e}"),
            _ => String::new(),
        }
    }
}
