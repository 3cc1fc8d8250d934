//! The IR's operators: FLUX's own vocabulary (Linear, LayerNorm, RmsNorm, Modulate, Rope,
//! Attention …), each with the rule that types its outputs. Lowering to ONNX happens elsewhere.

use super::types::{Dim, TensorType};
use super::weight::Weight;
use crate::dtype::DType;

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
}

impl Op {
    /// The op's name in the text dump.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Input { .. } => "Input",
            Op::Weight(_) => "Weight",
            Op::Cast { .. } => "Cast",
            Op::Linear => "Linear",
            Op::LinearResidual { .. } => "LinearResidual",
            Op::LayerNorm { .. } => "LayerNorm",
            Op::RmsNorm { .. } => "RmsNorm",
            Op::Modulate => "Modulate",
            Op::GatedResidual => "GatedResidual",
            Op::Add => "Add",
            Op::Silu => "Silu",
            Op::GeluTanh => "GeluTanh",
            Op::Split { .. } => "Split",
            Op::ToHeads { .. } => "ToHeads",
            Op::FromHeads => "FromHeads",
            Op::Concat { .. } => "Concat",
            Op::SplitLike { .. } => "SplitLike",
            Op::Rope => "Rope",
            Op::Attention => "Attention",
            Op::TimestepEmbedding { .. } => "TimestepEmbedding",
            Op::RopeTable { .. } => "RopeTable",
        }
    }

    /// Attributes worth showing in the dump, already formatted.
    pub fn attributes(&self) -> String {
        match self {
            Op::Cast { to } => format!("to={to}"),
            Op::LinearResidual { conditioned: true } => "conditioned".into(),
            Op::LayerNorm { eps } | Op::RmsNorm { eps } => format!("eps={eps:e}"),
            Op::Split { sizes } => format!("sizes={sizes:?}"),
            Op::ToHeads { heads } => format!("heads={heads}"),
            Op::Concat { axis } | Op::SplitLike { axis } => format!("axis={axis}"),
            Op::TimestepEmbedding { dim, scale } => format!("dim={dim} scale={scale}"),
            Op::RopeTable { axes_dim, theta } => format!("axes={axes_dim:?} theta={theta}"),
            _ => String::new(),
        }
    }

    /// Types the outputs from the inputs' types, or says what does not fit.
    pub fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let arity = match self {
            Op::Input { .. } | Op::Weight(_) => 0,
            Op::Cast { .. }
            | Op::LayerNorm { .. }
            | Op::Silu
            | Op::GeluTanh
            | Op::Split { .. }
            | Op::ToHeads { .. }
            | Op::FromHeads
            | Op::TimestepEmbedding { .. }
            | Op::RopeTable { .. } => 1,
            Op::RmsNorm { .. } | Op::Add | Op::Concat { .. } | Op::SplitLike { .. } => 2,
            Op::Linear | Op::Modulate | Op::GatedResidual | Op::Rope | Op::Attention => 3,
            Op::LinearResidual { conditioned } => {
                if *conditioned {
                    5
                } else {
                    3
                }
            }
        };
        if inputs.len() != arity {
            return Err(format!(
                "{} takes {arity} inputs, got {}",
                self.kind(),
                inputs.len()
            ));
        }
        let x = inputs.first().copied();
        let same = |a: &TensorType, b: &TensorType, what: &str| {
            if a == b {
                Ok(())
            } else {
                Err(format!("{what}: {a} vs {b}"))
            }
        };
        let last = |t: &TensorType| {
            t.last()
                .and_then(Dim::known)
                .ok_or_else(|| format!("{t} has no known last axis"))
        };
        Ok(match self {
            Op::Input { ty, .. } => vec![ty.clone()],
            Op::Weight(w) => vec![TensorType::new(
                w.dtype,
                w.shape.iter().map(|&d| Dim::Known(d)).collect(),
            )],
            Op::Cast { to } => vec![x.unwrap().with_dtype(*to)],
            Op::Linear => {
                let (x, w, b) = (inputs[0], inputs[1], inputs[2]);
                let (out, inp) = match w.shape[..] {
                    [Dim::Known(o), Dim::Known(i)] => (o, i),
                    _ => return Err(format!("Linear weight must be [out,in], got {w}")),
                };
                if last(x)? != inp
                    || b.shape != [Dim::Known(out)]
                    || x.dtype != w.dtype
                    || b.dtype != w.dtype
                {
                    return Err(format!("Linear: x {x}, weight {w}, bias {b} do not fit"));
                }
                vec![x.with_last(out)]
            }
            Op::LinearResidual { conditioned } => {
                let (x, w, b) = (inputs[0], inputs[1], inputs[2]);
                let width = last(x)?;
                let square = [Dim::Known(width), Dim::Known(width)];
                if w.shape != square
                    || b.shape != [Dim::Known(width)]
                    || w.dtype != x.dtype
                    || b.dtype != x.dtype
                {
                    return Err(format!(
                        "LinearResidual: x {x}, weight {w}, bias {b} do not fit"
                    ));
                }
                if *conditioned {
                    let (c, u) = (inputs[3], inputs[4]);
                    let k = last(c)?;
                    if c.rank() != 2
                        || c.shape[0] != x.shape[0]
                        || u.shape != [Dim::Known(width), Dim::Known(k)]
                    {
                        return Err(format!(
                            "LinearResidual: condition {c} and its weight {u} do not fit {x}"
                        ));
                    }
                }
                vec![x.clone()]
            }
            Op::LayerNorm { .. } | Op::Silu | Op::GeluTanh => vec![x.unwrap().clone()],
            Op::RmsNorm { .. } => {
                let (x, scale) = (inputs[0], inputs[1]);
                if scale.shape != [Dim::Known(last(x)?)] || scale.dtype != x.dtype {
                    return Err(format!("RmsNorm: scale {scale} does not fit {x}"));
                }
                vec![x.clone()]
            }
            Op::Modulate | Op::GatedResidual => {
                let (x, a, b) = (inputs[0], inputs[1], inputs[2]);
                let (per_sample, full) = if matches!(self, Op::Modulate) {
                    ((a, b), None)
                } else {
                    ((a, a), Some(b))
                };
                let vec_ty = TensorType::new(
                    x.dtype,
                    vec![x.shape[0].clone(), x.shape[x.rank() - 1].clone()],
                );
                same(per_sample.0, &vec_ty, "per-sample vector")?;
                same(per_sample.1, &vec_ty, "per-sample vector")?;
                if let Some(branch) = full {
                    same(branch, x, "residual branch")?;
                }
                vec![x.clone()]
            }
            Op::Add => {
                same(inputs[0], inputs[1], "Add")?;
                vec![inputs[0].clone()]
            }
            Op::Split { sizes } => {
                let x = x.unwrap();
                if sizes.iter().sum::<usize>() != last(x)? {
                    return Err(format!("Split {sizes:?} does not add up to {x}"));
                }
                sizes.iter().map(|&s| x.with_last(s)).collect()
            }
            Op::ToHeads { heads } => {
                let x = x.unwrap();
                let width = last(x)?;
                if x.rank() != 3 || width % heads != 0 {
                    return Err(format!("ToHeads: {x} does not split into {heads} heads"));
                }
                let s = &x.shape;
                vec![TensorType::new(
                    x.dtype,
                    vec![
                        s[0].clone(),
                        Dim::Known(*heads),
                        s[1].clone(),
                        Dim::Known(width / heads),
                    ],
                )]
            }
            Op::FromHeads => {
                let x = x.unwrap();
                let s = &x.shape;
                match (
                    s.len(),
                    s.get(1).and_then(Dim::known),
                    s.get(3).and_then(Dim::known),
                ) {
                    (4, Some(h), Some(d)) => vec![TensorType::new(
                        x.dtype,
                        vec![s[0].clone(), s[2].clone(), Dim::Known(h * d)],
                    )],
                    _ => return Err(format!("FromHeads: {x} is not [B,H,S,D]")),
                }
            }
            Op::Concat { axis } => {
                let (a, b) = (inputs[0], inputs[1]);
                let mut joined = a.clone();
                joined.shape[*axis] = a.shape[*axis].plus(&b.shape[*axis]);
                let mut b_like = b.clone();
                b_like.shape[*axis] = a.shape[*axis].clone();
                same(a, &b_like, "Concat")?;
                vec![joined]
            }
            Op::SplitLike { axis } => {
                let (x, like) = (inputs[0], inputs[1]);
                let head = like.shape[*axis].clone();
                let tail = match &x.shape[*axis] {
                    Dim::Sym(s) => s.strip_prefix(&format!("{head}+")).map(Dim::sym),
                    Dim::Known(n) => head.known().map(|h| Dim::Known(n - h)),
                }
                .ok_or_else(|| format!("SplitLike: cannot split {x} after {head}"))?;
                let (mut first, mut second) = (x.clone(), x.clone());
                first.shape[*axis] = head;
                second.shape[*axis] = tail;
                vec![first, second]
            }
            Op::Rope => {
                let (x, cos, sin) = (inputs[0], inputs[1], inputs[2]);
                let half = last(x)? / 2;
                let table = TensorType::new(x.dtype, vec![x.shape[2].clone(), Dim::Known(half)]);
                same(cos, &table, "Rope cos")?;
                same(sin, &table, "Rope sin")?;
                vec![x.clone()]
            }
            Op::Attention => {
                same(inputs[0], inputs[1], "Attention q/k")?;
                same(inputs[0], inputs[2], "Attention q/v")?;
                vec![inputs[0].clone()]
            }
            Op::TimestepEmbedding { dim, .. } => {
                let t = x.unwrap();
                if t.rank() != 1 || t.dtype != DType::F32 {
                    return Err(format!("TimestepEmbedding takes f32[B], got {t}"));
                }
                vec![TensorType::new(
                    DType::F32,
                    vec![t.shape[0].clone(), Dim::Known(*dim)],
                )]
            }
            Op::RopeTable { axes_dim, .. } => {
                let ids = x.unwrap();
                if ids.rank() != 2 || ids.shape[1] != Dim::Known(axes_dim.len()) {
                    return Err(format!(
                        "RopeTable takes ids [S,{}], got {ids}",
                        axes_dim.len()
                    ));
                }
                let half: usize = axes_dim.iter().sum::<usize>() / 2;
                let table =
                    TensorType::new(DType::F32, vec![ids.shape[0].clone(), Dim::Known(half)]);
                vec![table.clone(), table]
            }
        })
    }
}
