//! Typing the adaLN ops that take per-sample vectors `[B,h]` beside the tokens `[B,S,h]`:
//! Modulate (shift, scale) and GatedResidual (gate, branch).

use super::check::same;
use crate::error::TypeError;
use crate::ir::op::OpKind;
use crate::ir::types::TensorType;

/// x `[B,S,h]`, shift `[B,h]`, scale `[B,h]` → x's type; `op` is Modulate or its fusion with
/// the LayerNorm before it.
pub(super) fn modulate(
    op: OpKind,
    x: &TensorType,
    shift: &TensorType,
    scale: &TensorType,
) -> Result<TensorType, TypeError> {
    let vector = per_sample(x);
    same(op, shift, &vector, "per-sample vector")?;
    same(op, scale, &vector, "per-sample vector")?;
    Ok(x.clone())
}

/// x `[B,S,h]`, gate `[B,h]`, branch of x's type → x's type.
pub(super) fn gated_residual(
    x: &TensorType,
    gate: &TensorType,
    branch: &TensorType,
) -> Result<TensorType, TypeError> {
    let op = OpKind::GatedResidual;
    same(op, gate, &per_sample(x), "per-sample vector")?;
    same(op, branch, x, "residual branch")?;
    Ok(x.clone())
}

/// The type of a per-sample vector beside tokens `x`: `[B, h]`.
fn per_sample(x: &TensorType) -> TensorType {
    TensorType::new(
        x.dtype,
        vec![x.shape[0].clone(), x.shape[x.rank() - 1].clone()],
    )
}
