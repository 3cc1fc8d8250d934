//! Typing Linear (`x Wᵀ + b`) and LinearResidual (BRLL's fitted map, optionally conditioned).

use super::check::{misfit, width};
use crate::error::TypeError;
use crate::ir::op::OpKind;
use crate::ir::types::{Dim, TensorType};

/// x `[…, in]`, w `[out, in]`, b `[out]`, one dtype → `[…, out]`; `op` is Linear or its fusion
/// with the activation after it.
pub(super) fn linear(
    op: OpKind,
    x: &TensorType,
    w: &TensorType,
    b: &TensorType,
) -> Result<TensorType, TypeError> {
    let (out, inp) = match w.shape[..] {
        [Dim::Known(o), Dim::Known(i)] => (o, i),
        _ => {
            return Err(misfit(
                op,
                format!("{} weight must be [out,in], got {w}", op.name()),
            ));
        }
    };
    if width(op, x)? != inp
        || b.shape != [Dim::Known(out)]
        || x.dtype != w.dtype
        || b.dtype != w.dtype
    {
        return Err(misfit(
            op,
            format!("{}: x {x}, weight {w}, bias {b} do not fit", op.name()),
        ));
    }
    Ok(x.with_last(out))
}

/// x `[B,S,h]`, w `[h,h]`, b `[h]` [, condition c `[B,k]` with its weight u `[h,k]`] → x's type.
pub(super) fn linear_residual(
    x: &TensorType,
    w: &TensorType,
    b: &TensorType,
    condition: Option<(&TensorType, &TensorType)>,
) -> Result<TensorType, TypeError> {
    let op = OpKind::LinearResidual;
    let h = width(op, x)?;
    let square = [Dim::Known(h), Dim::Known(h)];
    if w.shape != square || b.shape != [Dim::Known(h)] || w.dtype != x.dtype || b.dtype != x.dtype {
        return Err(misfit(
            op,
            format!("LinearResidual: x {x}, weight {w}, bias {b} do not fit"),
        ));
    }
    if let Some((c, u)) = condition {
        let k = width(op, c)?;
        if c.rank() != 2 || c.shape[0] != x.shape[0] || u.shape != [Dim::Known(h), Dim::Known(k)] {
            return Err(misfit(
                op,
                format!("LinearResidual: condition {c} and its weight {u} do not fit {x}"),
            ));
        }
    }
    Ok(x.clone())
}
