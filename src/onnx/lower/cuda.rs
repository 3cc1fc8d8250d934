//! ONNX Runtime's CUDA execution provider: the portable rules, with these overrides that use
//! its contrib ops (domain `com.microsoft`):
//! - Linear and LinearResidual form `x Wᵀ` with `FusedMatMul(transB=1)`, which multiplies by
//!   the `[out, in]` weight as stored, with no transposed copy at load time.
//!
//! Every op and type these rules emit is placed on ONNX Runtime 1.31's CUDA execution provider
//! (checked with shared/tools/cuda-placement for f32, f16 and bf16).

use super::registry::Registry;
use super::{linear, portable};
use crate::ir::op::OpKind;
use crate::onnx::builder::{Attr, CONTRIB_DOMAIN, GraphBuilder};

pub(super) fn registry() -> Registry {
    portable::registry()
        .with(OpKind::Linear, |b, cx| {
            linear::linear(b, cx, fused_matmul_transposed)
        })
        .with(OpKind::LinearResidual, |b, cx| {
            linear::linear_residual(b, cx, fused_matmul_transposed)
        })
}

/// `x Wᵀ` as one contrib node; it has no intermediates to name.
fn fused_matmul_transposed(
    b: &mut GraphBuilder,
    x: &str,
    w: &str,
    out: &str,
    _tmp: &dyn Fn(&str) -> String,
) {
    let attrs = vec![("transB", Attr::Int(1)), ("alpha", Attr::Float(1.0))];
    b.node_in("FusedMatMul", CONTRIB_DOMAIN, &[x, w], &[out], attrs);
}
