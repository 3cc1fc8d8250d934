//! The fusion of a LayerNorm into the Modulate that reads it: one ModulatedLayerNorm, which a
//! target lowers as a single normalization whose scale is `1 + scale` and bias `shift`.

use super::{fused_name, only_reader};
use crate::error::Result;
use crate::ir::{Graph, Op, Value};
use crate::passes::{Patch, PatchValue};

/// ```text
/// n = LayerNorm{eps}(x)            (n read only here)
/// y = Modulate(n, shift, scale)
/// ```
/// becomes `y = ModulatedLayerNorm{eps}(x, shift, scale)`, one patch for the whole graph.
pub(super) fn fuse_modulated_norm(graph: &Graph) -> Result<Option<Patch>> {
    let mut patch = Patch::default();
    let mut fused = 0;
    for n in graph.topo_order() {
        let node = graph.node(n);
        if !matches!(node.op, Op::Modulate) {
            continue;
        }
        let ins = graph.inputs(n);
        let norm = graph.node(ins[0].node);
        let Op::LayerNorm { eps } = norm.op else {
            continue;
        };
        if !only_reader(graph, ins[0], n, 0) {
            continue;
        }
        let x = graph.inputs(ins[0].node)[0];
        let y = patch.add(
            Op::ModulatedLayerNorm { eps },
            fused_name(&norm.name, "modulate"),
            node.block,
            &[x, ins[1], ins[2]].map(PatchValue::Old),
        );
        patch.replace(Value { node: n, port: 0 }, y);
        fused += 1;
    }
    Ok((fused > 0).then_some(patch))
}
