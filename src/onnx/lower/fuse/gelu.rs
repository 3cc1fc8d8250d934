//! The fusion of a Linear into the GeluTanh that reads it: one LinearGeluTanh, which a target
//! lowers with the bias added inside the activation.

use super::{fused_name, only_reader};
use crate::error::Result;
use crate::ir::{Graph, Op, Value};
use crate::passes::{Patch, PatchValue};

/// ```text
/// h = Linear(x, w, b)              (h read only here)
/// y = GeluTanh(h)
/// ```
/// becomes `y = LinearGeluTanh(x, w, b)`, one patch for the whole graph. (A single block's
/// activation reads a Split of its Linear, and stays as it is.)
pub(super) fn fuse_linear_gelu(graph: &Graph) -> Result<Option<Patch>> {
    let mut patch = Patch::default();
    let mut fused = 0;
    for n in graph.topo_order() {
        let node = graph.node(n);
        if !matches!(node.op, Op::GeluTanh) {
            continue;
        }
        let h = graph.inputs(n)[0];
        let linear = graph.node(h.node);
        if !matches!(linear.op, Op::Linear) || !only_reader(graph, h, n, 0) {
            continue;
        }
        let ins = graph.inputs(h.node).into_iter().map(PatchValue::Old);
        let y = patch.add(
            Op::LinearGeluTanh,
            fused_name(&linear.name, "gelu"),
            node.block,
            &ins.collect::<Vec<_>>(),
        );
        patch.replace(Value { node: n, port: 0 }, y);
        fused += 1;
    }
    Ok((fused > 0).then_some(patch))
}
