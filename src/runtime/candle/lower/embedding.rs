//! The ops that compute tables from scalars and positions, at the precision the ONNX lowering
//! (and diffusers) computes them, then in the compute type: TimestepEmbedding (the sigma scaled
//! in f64, angles in f32 from f32 frequencies), RopeTable (angles, cos and sin in f64, rounded
//! to f32). They read model inputs only, so nothing trains through them.

use super::NodeCx;
use crate::ir::Op;
use candle_core::{DType, Result, Tensor};

pub(super) fn timestep_embedding(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::TimestepEmbedding { dim, scale } = cx.op else {
        return Err(cx.wrong_op());
    };
    let compute = ins[0].dtype();
    let half = dim / 2;
    let log_period = -(10_000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (log_period * k as f32 / half as f32).exp())
        .collect();
    let freqs = Tensor::from_vec(freqs, half, ins[0].device())?;
    let scaled = ins[0]
        .to_dtype(DType::F64)?
        .affine(f64::from(*scale), 0.0)?
        .to_dtype(DType::F32)?;
    let args = scaled.unsqueeze(1)?.broadcast_mul(&freqs)?;
    let table = Tensor::cat(&[args.cos()?, args.sin()?], 1)?;
    Ok(vec![table.to_dtype(compute)?])
}

pub(super) fn rope_table(cx: &NodeCx, ins: &[Tensor]) -> Result<Vec<Tensor>> {
    let Op::RopeTable { axes_dim, theta } = cx.op else {
        return Err(cx.wrong_op());
    };
    let compute = ins[0].dtype();
    // Pair j of axis i turns by position·θ^(−2j/d_i).
    let (mut columns, mut omegas) = (Vec::new(), Vec::new());
    for (axis, &d) in axes_dim.iter().enumerate() {
        for j in 0..d / 2 {
            columns.push(axis as u32);
            omegas.push(f64::from(*theta).powf(-2.0 * j as f64 / d as f64));
        }
    }
    let device = ins[0].device();
    let half = omegas.len();
    let columns = Tensor::from_vec(columns, half, device)?;
    let omegas = Tensor::from_vec(omegas, half, device)?;
    let angles = ins[0]
        .index_select(&columns, 1)?
        .to_dtype(DType::F64)?
        .broadcast_mul(&omegas)?;
    let round = |t: Tensor| t.to_dtype(DType::F32)?.to_dtype(compute);
    Ok(vec![round(angles.cos()?)?, round(angles.sin()?)?])
}
