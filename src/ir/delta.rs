//! Low-rank deltas a weight carries until export (folded LoRA pairs): `W[rows] += scale · B·A`,
//! applied to one tensor at a time while the data file is written, so that no model is ever
//! held whole and the deployed model has no LoRA ops.

use crate::dtype::DType;
use crate::error::{Error, Result};
use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Delta {
    /// The rows of the weight the update covers.
    pub rows: Range<usize>,
    /// `A [rank, in]`, row-major.
    pub down: Arc<Vec<f32>>,
    /// `B [rows.len(), rank]`, row-major.
    pub up: Arc<Vec<f32>>,
    pub rank: usize,
    /// The user's scale times the file's alpha/rank.
    pub scale: f32,
    /// The LoRA file and the module in it the delta came from, for messages.
    pub file: PathBuf,
    pub module: String,
}

/// Adds every delta to `values`, the weight `name` of `shape` (row-major), then checks that
/// every value a delta touched is finite once cast to the export type `dtype`.
pub fn fold(
    name: &str,
    shape: &[usize],
    dtype: DType,
    deltas: &[Delta],
    values: &mut [f32],
) -> Result<()> {
    let internal = |what: &str| Error::Internal(format!("LoRA delta for `{name}`: {what}"));
    let &[_, cols] = shape else {
        return Err(internal(&format!(
            "weight has shape {shape:?}, not a matrix"
        )));
    };
    for d in deltas {
        let a = ArrayView2::from_shape((d.rank, cols), d.down.as_slice())
            .map_err(|e| internal(&format!("down matrix: {e}")))?;
        let b = ArrayView2::from_shape((d.rows.len(), d.rank), d.up.as_slice())
            .map_err(|e| internal(&format!("up matrix: {e}")))?;
        let rows = values
            .get_mut(d.rows.start * cols..d.rows.end * cols)
            .ok_or_else(|| internal(&format!("rows {:?} out of range", d.rows)))?;
        let mut w = ArrayViewMut2::from_shape((d.rows.len(), cols), rows)
            .map_err(|e| internal(&format!("rows: {e}")))?;
        // matrixmultiply's sgemm accumulates the rank-many products of each entry in f32.
        general_mat_mul(d.scale, &b, &a, 1.0, &mut w);
    }
    for d in deltas {
        let rows = &values[d.rows.start * cols..d.rows.end * cols];
        if let Some(at) = first_non_finite(dtype, rows) {
            let (row, col) = (d.rows.start + at / cols, at % cols);
            let on_row: Vec<String> = deltas
                .iter()
                .filter(|o| o.rows.contains(&row))
                .map(|o| format!("{}: `{}` at scale {}", o.file.display(), o.module, o.scale))
                .collect();
            let others = if on_row.len() > 1 {
                format!("; the deltas on that row: {}", on_row.join(", "))
            } else {
                String::new()
            };
            return Err(Error::tensor(
                &d.file,
                &d.module,
                format!(
                    "folded at scale {} into weight `{name}`, gives {} at [{row}, {col}], which is \
                     not finite in {dtype}{others}",
                    d.scale, rows[at]
                ),
            ));
        }
    }
    Ok(())
}

/// The index of the first value that is not finite in `dtype`. Whole chunks are tested with a
/// branch-free fold, which vectorizes; only a failing chunk is searched value by value.
fn first_non_finite(dtype: DType, values: &[f32]) -> Option<usize> {
    const CHUNK: usize = 1024;
    values.chunks(CHUNK).enumerate().find_map(|(i, chunk)| {
        let all_finite = chunk.iter().fold(true, |ok, &v| ok & finite_in(dtype, v));
        if all_finite {
            return None;
        }
        let at = chunk.iter().position(|&v| !finite_in(dtype, v))?;
        Some(i * CHUNK + at)
    })
}

/// Whether `v` stays finite when cast to `dtype`: a large f32 rounds to infinity in f16 or bf16.
/// A comparison with the smallest magnitude that rounds (to nearest even) to infinity, rather
/// than a conversion per value: this check runs over every folded parameter.
fn finite_in(dtype: DType, v: f32) -> bool {
    match dtype {
        // Halfway between f16's largest finite value, 65504, and 65536.
        DType::F16 => v.abs() < 65520.0,
        // Halfway between bf16's largest finite value, (2 − 2⁻⁷)·2¹²⁷, and 2¹²⁸.
        DType::BF16 => v.abs() < f32::from_bits(0x7f7f_8000),
        _ => v.is_finite(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A delta on a weight 2 columns wide.
    fn delta(rows: Range<usize>, down: Vec<f32>, up: Vec<f32>, scale: f32) -> Delta {
        Delta {
            rank: down.len() / 2,
            rows,
            down: Arc::new(down),
            up: Arc::new(up),
            scale,
            file: "l.safetensors".into(),
            module: "m".into(),
        }
    }

    #[test]
    fn adds_scaled_product_on_the_row_range_only() {
        // W [3, 2] zeros; A = [[1, 2]], B = [[1], [10]] on rows 1..3, scale 0.5.
        let mut w = vec![0f32; 6];
        let d = delta(1..3, vec![1.0, 2.0], vec![1.0, 10.0], 0.5);
        fold("w", &[3, 2], DType::F32, &[d], &mut w).unwrap();
        assert_eq!(w, [0.0, 0.0, 0.5, 1.0, 5.0, 10.0]);
    }

    #[test]
    fn the_finiteness_bounds_are_where_conversion_overflows() {
        let up = |v: f32| f32::from_bits(v.to_bits() + 1);
        let down = |v: f32| f32::from_bits(v.to_bits() - 1);
        for (dtype, limit) in [
            (DType::F16, 65520.0f32),
            (DType::BF16, f32::from_bits(0x7f7f_8000)),
        ] {
            for v in [
                down(limit),
                limit,
                up(limit),
                -down(limit),
                -limit,
                f32::NAN,
            ] {
                let converted = match dtype {
                    DType::F16 => half::f16::from_f32(v).is_finite(),
                    _ => half::bf16::from_f32(v).is_finite(),
                };
                assert_eq!(finite_in(dtype, v), converted, "{dtype} {v}");
            }
        }
    }

    #[test]
    fn finds_the_first_non_finite_value_past_the_first_chunk() {
        let mut values = vec![1.0f32; 3000];
        assert_eq!(first_non_finite(DType::F32, &values), None);
        values[2999] = f32::INFINITY;
        values[2500] = 70000.0;
        assert_eq!(first_non_finite(DType::F32, &values), Some(2999));
        assert_eq!(first_non_finite(DType::F16, &values), Some(2500));
    }

    #[test]
    fn names_the_weight_when_the_result_overflows_the_export_type() {
        let mut w = vec![0f32; 2];
        let d = delta(0..1, vec![1.0, 1.0], vec![1e5], 1.0);
        fold(
            "w",
            &[1, 2],
            DType::F32,
            std::slice::from_ref(&d),
            &mut w.clone(),
        )
        .unwrap();
        let err = fold("blocks.w", &[1, 2], DType::F16, &[d], &mut w).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("`blocks.w`") && msg.contains("f16"), "{msg}");
    }
}
