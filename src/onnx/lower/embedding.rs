//! Lowering the ops that compute tables from scalars and positions, at diffusers' precision:
//! TimestepEmbedding → Cast to f64, scale, Cast to f32, Mul by the frequencies, Cos and Sin,
//! Concat; RopeTable → Gather of each pair's position column, Mul by the f64 angular
//! frequencies, Cos and Sin, Cast to f32.

use super::registry::NodeCx;
use crate::dtype::DType;
use crate::error::Result;
use crate::ir::Op;
use crate::onnx::builder::{Attr, GraphBuilder, data_type};

fn cast_to(dtype: DType) -> Vec<(&'static str, Attr)> {
    vec![("to", Attr::Int(data_type(dtype) as i64))]
}

pub(super) fn timestep_embedding(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::TimestepEmbedding { dim, scale } = cx.op else {
        return Err(cx.wrong_op());
    };
    // As diffusers computes it: the sigma scaled in f64, then the angles in f32 from f32
    // frequencies exp(−ln(10000)·k/half). Its f32 rounding is part of the model FLUX was
    // trained as; a more exact embedding moves the output further away.
    let half = dim / 2;
    let log_period = -(10_000f64.ln()) as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|k| (log_period * k as f32 / half as f32).exp())
        .collect();
    let freqs = b.floats(
        &format!("timestep_freqs[{half}]"),
        DType::F32,
        &[half],
        &freqs,
    );
    let factor = b.doubles(&format!("time_factor[{scale}]"), &[], &[f64::from(*scale)]);
    let axes = b.ints(&[1]);
    let [t64, scaled64, scaled, column, args, cos, sin] =
        ["t64", "scaled64", "scaled", "column", "args", "cos", "sin"].map(|s| cx.tmp(s));
    b.node("Cast", &[cx.inputs()[0]], &[&t64], cast_to(DType::F64));
    b.node("Mul", &[&t64, &factor], &[&scaled64], vec![]);
    b.node("Cast", &[&scaled64], &[&scaled], cast_to(DType::F32));
    b.node("Unsqueeze", &[&scaled, &axes], &[&column], vec![]);
    b.node("Mul", &[&column, &freqs], &[&args], vec![]);
    b.node("Cos", &[&args], &[&cos], vec![]);
    b.node("Sin", &[&args], &[&sin], vec![]);
    b.node(
        "Concat",
        &[&cos, &sin],
        &[cx.output()],
        vec![("axis", Attr::Int(1))],
    );
    Ok(())
}

pub(super) fn rope_table(b: &mut GraphBuilder, cx: &NodeCx) -> Result<()> {
    let Op::RopeTable { axes_dim, theta } = cx.op else {
        return Err(cx.wrong_op());
    };
    // Pair j of axis i turns by position·θ^(−2j/d_i), computed in f64 as diffusers does. Each
    // pair's position column is gathered and scaled elementwise (a MatMul would run in TF32 on
    // recent GPUs).
    let (mut columns, mut omegas) = (Vec::new(), Vec::new());
    for (axis, &d) in axes_dim.iter().enumerate() {
        for j in 0..d / 2 {
            columns.push(axis as i64);
            omegas.push(f64::from(*theta).powf(-2.0 * j as f64 / d as f64));
        }
    }
    let half = omegas.len();
    let columns = b.ints(&columns);
    let omegas = b.doubles(
        &format!("rope_omegas[{axes_dim:?},{theta}]"),
        &[half],
        &omegas,
    );
    let outs = cx.outputs();
    let [positions, positions64, angles, cos64, sin64] =
        ["positions", "positions64", "angles", "cos64", "sin64"].map(|s| cx.tmp(s));
    b.node(
        "Gather",
        &[cx.inputs()[0], &columns],
        &[&positions],
        vec![("axis", Attr::Int(1))],
    );
    b.node("Cast", &[&positions], &[&positions64], cast_to(DType::F64));
    b.node("Mul", &[&positions64, &omegas], &[&angles], vec![]);
    b.node("Cos", &[&angles], &[&cos64], vec![]);
    b.node("Sin", &[&angles], &[&sin64], vec![]);
    b.node("Cast", &[&cos64], &[outs[0]], cast_to(DType::F32));
    b.node("Cast", &[&sin64], &[outs[1]], cast_to(DType::F32));
    Ok(())
}
