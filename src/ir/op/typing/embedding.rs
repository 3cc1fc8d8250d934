//! Typing the ops that compute tables from scalars and positions: TimestepEmbedding and
//! RopeTable. Both compute in f32 whatever the model's dtype.

use super::check::misfit;
use crate::dtype::DType;
use crate::error::TypeError;
use crate::ir::op::OpKind;
use crate::ir::types::{Dim, TensorType};

/// t f32`[B]` → f32`[B, dim]`.
pub(super) fn timestep_embedding(t: &TensorType, dim: usize) -> Result<TensorType, TypeError> {
    if t.rank() != 1 || t.dtype != DType::F32 {
        return Err(misfit(
            OpKind::TimestepEmbedding,
            format!("TimestepEmbedding takes f32[B], got {t}"),
        ));
    }
    Ok(TensorType::new(
        DType::F32,
        vec![t.shape[0].clone(), Dim::Known(dim)],
    ))
}

/// ids `[S, axes]` → (cos, sin) f32`[S, D/2]`, D the sum of the axes' widths.
pub(super) fn rope_table(
    ids: &TensorType,
    axes_dim: &[usize],
) -> Result<Vec<TensorType>, TypeError> {
    if ids.rank() != 2 || ids.shape[1] != Dim::Known(axes_dim.len()) {
        return Err(misfit(
            OpKind::RopeTable,
            format!("RopeTable takes ids [S,{}], got {ids}", axes_dim.len()),
        ));
    }
    let half: usize = axes_dim.iter().sum::<usize>() / 2;
    let table = TensorType::new(DType::F32, vec![ids.shape[0].clone(), Dim::Known(half)]);
    Ok(vec![table.clone(), table])
}
