//! Lowering Linear (`x Wᵀ + b` → a target's `x Wᵀ`, then Add) and LinearResidual (BRLL's
//! `x + x Wᵀ + b [+ c Uᵀ]` → the same products, Unsqueeze of the per-sample term, Adds). How
//! `x Wᵀ` is formed is the target's choice, passed in.

use super::registry::NodeCx;
use crate::error::Result;
use crate::ir::Op;
use crate::onnx::builder::GraphBuilder;

/// Emits `out = x Wᵀ` for a weight `w` stored `[out, in]`; `tmp` names its intermediates.
pub(crate) type MatMulTransposed =
    fn(b: &mut GraphBuilder, x: &str, w: &str, out: &str, tmp: &dyn Fn(&str) -> String);

pub(super) fn linear(b: &mut GraphBuilder, cx: &NodeCx, xwt: MatMulTransposed) -> Result<()> {
    let ins = cx.inputs();
    let tmp = |s: &str| cx.tmp(s);
    let product = tmp("matmul");
    xwt(b, ins[0], ins[1], &product, &tmp);
    b.node("Add", &[&product, ins[2]], &[cx.output()], vec![]);
    Ok(())
}

pub(super) fn linear_residual(
    b: &mut GraphBuilder,
    cx: &NodeCx,
    xwt: MatMulTransposed,
) -> Result<()> {
    let Op::LinearResidual { conditioned } = cx.op else {
        return Err(cx.wrong_op());
    };
    let ins = cx.inputs();
    let tmp = |s: &str| cx.tmp(s);
    let (product, branch) = (tmp("matmul"), tmp("branch"));
    xwt(b, ins[0], ins[1], &product, &tmp);
    b.node("Add", &[&product, ins[2]], &[&branch], vec![]);
    let branch = if *conditioned {
        let (cond, per_token, with_cond) = (tmp("cond_matmul"), tmp("cond"), tmp("branch_cond"));
        xwt(b, ins[3], ins[4], &cond, &|s| tmp(&format!("cond_{s}")));
        let axes = b.ints(&[1]);
        b.node("Unsqueeze", &[&cond, &axes], &[&per_token], vec![]);
        b.node("Add", &[&branch, &per_token], &[&with_cond], vec![]);
        with_cond
    } else {
        branch
    };
    b.node("Add", &[ins[0], &branch], &[cx.output()], vec![]);
    Ok(())
}
