//! ONNX Runtime's CUDA execution provider. The graph is first rewritten by three fusions
//! (`super::fuse`), then lowered by the portable rules with these overrides, which use ONNX
//! Runtime's contrib ops (domain `com.microsoft`) where its CUDA kernels are fused:
//! - heads stay packed `[B,S,H·D]` from the q/k/v projections to the output projection, with no
//!   head transposes: q/k RMSNorm is one `BranchwiseRMSNorm` per tensor (`num_branches = H`,
//!   scale `[D]` in the model's dtype; its CUDA kernel accumulates Σx² in f32 in f16 and bf16,
//!   and unlike `SimplifiedLayerNormalization` it needs no reshape to `[B,S,H,D]`); RoPE is one
//!   `RotaryEmbedding` (`interleaved=1`) per tensor, fed FLUX's per-token cos/sin tables (cast
//!   once per call to the model's dtype) as its cache with positions running over the tokens;
//!   attention is one `MultiHeadAttention` with separate Q, K, V, which dispatches to flash or
//!   memory-efficient attention, so no `[S,S]` score matrix is materialised (`cuda/attention.rs`);
//! - LayerNorm followed by modulation is one `LayerNormalization` with scale `1 + scale` and
//!   bias `shift`, both `[B,1,C]` (`cuda/norm.rs`);
//! - every `x Wᵀ` is one `FusedMatMul(transB=1)`, which multiplies by the `[out, in]` weight as
//!   stored, with no transposed copy at load time; the bias stays an `Add`: `FusedMatMul` takes
//!   no bias, and a `Gemm` (which does) would need the tokens flattened to 2-D and back;
//! - a Linear followed by GELU(tanh) (the double blocks' MLPs) is `FusedMatMul` then
//!   `FastGelu(x, bias)`: the tanh GELU with the bias added inside the kernel, one pass over
//!   the 4h-wide activation instead of two. It is exactly what ONNX Runtime's own optimizer makes
//!   of `Add` + `Gelu(approximate=tanh)` at its extended level (checked on the CPU provider),
//!   emitted here so it holds at every optimization level. (`BiasGelu` is the erf GELU, not
//!   FLUX's; `GemmFastGelu` has no CUDA kernel in f32 and bf16.) A single block's activation
//!   reads a Split of its `linear1` and stays `Gelu(approximate=tanh)` after the bias `Add`.
//!
//! Every op and type these rules emit is placed on ONNX Runtime 1.31's CUDA execution provider
//! (checked with shared/tools/cuda-placement for f32, f16 and bf16), and each has a CPU kernel in
//! f32, so the graph shipped to CUDA is the graph the CPU tests run.

mod attention;
mod linear;
mod norm;

use super::fuse::{self, Fusion};
use super::registry::Registry;
use super::{linear as portable_linear, portable};
use crate::ir::op::OpKind;

/// The rewrites run before lowering, in order.
pub(super) const FUSIONS: &[&Fusion] =
    &[&fuse::PACK_HEADS, &fuse::MODULATED_NORM, &fuse::LINEAR_GELU];

pub(super) fn registry() -> Registry {
    portable::registry()
        .with(OpKind::Linear, |b, cx| {
            portable_linear::linear(b, cx, linear::fused_matmul_transposed)
        })
        .with(OpKind::LinearResidual, |b, cx| {
            portable_linear::linear_residual(b, cx, linear::fused_matmul_transposed)
        })
        .with(OpKind::LinearGeluTanh, linear::linear_gelu_tanh)
        .with(OpKind::ModulatedLayerNorm, norm::modulated_layer_norm)
        .with(OpKind::PackedRmsNorm, attention::rms_norm)
        .with(OpKind::PackedRope, attention::rope)
        .with(OpKind::PackedAttention, attention::attention)
}
