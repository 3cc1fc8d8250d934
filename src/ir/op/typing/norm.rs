//! Typing RmsNorm: a learned scale as wide as the feature axis. (LayerNorm has no parameters
//! here; it types as its input, with the other one-input elementwise ops.)

use super::check::{misfit, width};
use crate::error::TypeError;
use crate::ir::op::OpKind;
use crate::ir::types::{Dim, TensorType};

/// x `[…, D]`, scale `[D]` of x's dtype → x's type.
pub(super) fn rms_norm(x: &TensorType, scale: &TensorType) -> Result<TensorType, TypeError> {
    let op = OpKind::RmsNorm;
    if scale.shape != [Dim::Known(width(op, x)?)] || scale.dtype != x.dtype {
        return Err(misfit(
            op,
            format!("RmsNorm: scale {scale} does not fit {x}"),
        ));
    }
    Ok(x.clone())
}
