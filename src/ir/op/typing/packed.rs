//! Typing the ops on packed heads `[B,S,H·D]` (the fused forms a target's rewrite makes):
//! PackedRmsNorm, PackedRope and PackedAttention. The head width `D` is the feature width over
//! the head count, which must divide it.

use super::check::{misfit, same, width};
use crate::error::TypeError;
use crate::ir::op::OpKind;
use crate::ir::types::{Dim, TensorType};

/// The head width of packed heads `x` `[B,S,H·D]`.
fn head_width(op: OpKind, x: &TensorType, heads: usize) -> Result<usize, TypeError> {
    let w = width(op, x)?;
    if x.rank() != 3 || heads == 0 || w % heads != 0 {
        return Err(misfit(
            op,
            format!("{}: {x} is not [B,S,H·D] with {heads} heads", op.name()),
        ));
    }
    Ok(w / heads)
}

/// x `[B,S,H·D]`, scale `[D]` of x's dtype → x's type.
pub(super) fn rms_norm(
    x: &TensorType,
    scale: &TensorType,
    heads: usize,
) -> Result<TensorType, TypeError> {
    let op = OpKind::PackedRmsNorm;
    let d = head_width(op, x, heads)?;
    same(
        op,
        scale,
        &TensorType::new(x.dtype, vec![Dim::Known(d)]),
        "PackedRmsNorm scale",
    )?;
    Ok(x.clone())
}

/// x `[B,S,H·D]`, cos and sin `[S,D/2]` of x's dtype → x's type.
pub(super) fn rope(
    x: &TensorType,
    cos: &TensorType,
    sin: &TensorType,
    heads: usize,
) -> Result<TensorType, TypeError> {
    let op = OpKind::PackedRope;
    let d = head_width(op, x, heads)?;
    let table = TensorType::new(x.dtype, vec![x.shape[1].clone(), Dim::Known(d / 2)]);
    same(op, cos, &table, "PackedRope cos")?;
    same(op, sin, &table, "PackedRope sin")?;
    Ok(x.clone())
}

/// q, k, v of one type `[B,S,H·D]` → that type.
pub(super) fn attention(
    q: &TensorType,
    k: &TensorType,
    v: &TensorType,
    heads: usize,
) -> Result<TensorType, TypeError> {
    let op = OpKind::PackedAttention;
    head_width(op, q, heads)?;
    same(op, k, q, "PackedAttention q/k")?;
    same(op, v, q, "PackedAttention q/v")?;
    Ok(q.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    fn ty(dims: &[usize]) -> TensorType {
        TensorType::new(DType::F32, dims.iter().map(|&d| Dim::Known(d)).collect())
    }

    #[test]
    fn heads_must_divide_the_feature_width() {
        let err = rms_norm(&ty(&[1, 4, 10]), &ty(&[3]), 3).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PackedRmsNorm: f32[1,4,10] is not [B,S,H·D] with 3 heads"
        );
        assert!(rms_norm(&ty(&[1, 4, 12]), &ty(&[4]), 3).is_ok());
        assert!(rms_norm(&ty(&[1, 4, 12]), &ty(&[12]), 3).is_err());
    }

    #[test]
    fn the_rope_table_is_per_token_and_half_a_head_wide() {
        let x = ty(&[1, 5, 12]);
        assert!(rope(&x, &ty(&[5, 2]), &ty(&[5, 2]), 3).is_ok());
        assert!(rope(&x, &ty(&[5, 6]), &ty(&[5, 6]), 3).is_err());
        assert!(rope(&x, &ty(&[4, 2]), &ty(&[4, 2]), 3).is_err());
    }
}
