//! The CUDA target's products: `x Wᵀ` as one `FusedMatMul(transB=1)` on the weight as stored,
//! and LinearGeluTanh as that product followed by `FastGelu(x Wᵀ, b)`.

use crate::error::Result;
use crate::onnx::builder::{Attr, CONTRIB_DOMAIN, GraphBuilder};
use crate::onnx::lower::registry::NodeCx;

/// `x Wᵀ` as one contrib node; it has no intermediates to name.
pub(super) fn fused_matmul_transposed(
    b: &mut GraphBuilder,
    x: &str,
    w: &str,
    out: &str,
    _tmp: &dyn Fn(&str) -> String,
) {
    let attrs = vec![("transB", Attr::Int(1)), ("alpha", Attr::Float(1.0))];
    b.node_in("FusedMatMul", CONTRIB_DOMAIN, &[x, w], &[out], attrs);
}

/// `gelu(x Wᵀ + b)` with the tanh approximation: FastGelu's formula, bias added inside.
pub(super) fn linear_gelu_tanh(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let ins = cx.inputs();
    let product = cx.tmp("matmul");
    fused_matmul_transposed(b, ins[0], ins[1], &product, &|s| cx.tmp(s));
    b.node_in(
        "FastGelu",
        CONTRIB_DOMAIN,
        &[&product, ins[2]],
        &[cx.output()],
        vec![],
    );
    Ok(())
}
