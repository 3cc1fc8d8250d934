//! IR → ONNX nodes, per target. The driver walks the IR in topological order, collects the
//! weights (they become initializers), hands every other node to its target's rule for the
//! op's kind, and names the model outputs. The rules live one op family per file; a target is
//! a table of them: `portable.rs` the standard-ONNX rules, `cuda.rs` the portable table with
//! ONNX Runtime CUDA overrides. A fused lowering is an entry in its target's file, and a new
//! target is a new file.

mod attention;
mod cuda;
mod elementwise;
mod embedding;
mod linear;
mod modulation;
mod norm;
mod portable;
mod registry;
mod shape;

use crate::error::{Error, Result};
use crate::ir::{Graph, Op};
use crate::onnx::builder::GraphBuilder;
use petgraph::stable_graph::NodeIndex;
use registry::{NodeCx, Registry};

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Target {
    /// ONNX Runtime with the CUDA execution provider (contrib ops allowed).
    #[default]
    Cuda,
    /// Standard ONNX operators only, for any runtime.
    Portable,
}

impl Target {
    fn registry(self) -> Registry {
        match self {
            Target::Cuda => cuda::registry(),
            Target::Portable => portable::registry(),
        }
    }
}

/// The lowered graph: nodes and constants, plus the weights in the order they were met.
pub(crate) struct Lowered {
    pub builder: GraphBuilder,
    pub weights: Vec<NodeIndex>,
}

pub(crate) fn lower(graph: &Graph, target: Target) -> Result<Lowered> {
    let rules = target.registry();
    let mut builder = GraphBuilder::default();
    let mut weights = Vec::new();
    for n in graph.topo_order() {
        match &graph.node(n).op {
            Op::Weight(_) => weights.push(n),
            Op::Input { .. } => {}
            op => {
                let rule = rules.get(op.kind()).ok_or_else(|| {
                    Error::Internal(format!(
                        "the {target:?} target has no lowering for {}",
                        op.kind()
                    ))
                })?;
                rule(&mut builder, &NodeCx::new(graph, n))?;
            }
        }
    }
    // A model output is the tensor of its name; rename through an Identity where needed.
    for (name, v) in &graph.outputs {
        let src = graph.value_name(*v);
        if src != *name {
            builder.node("Identity", &[&src], &[name], vec![]);
        }
    }
    Ok(Lowered { builder, weights })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::op::OpKind;

    #[test]
    fn every_target_lowers_every_op_but_inputs_and_weights() {
        for target in [Target::Cuda, Target::Portable] {
            let rules = target.registry();
            for kind in OpKind::ALL {
                let lowered = rules.get(kind).is_some();
                let expected = !matches!(kind, OpKind::Input | OpKind::Weight);
                assert_eq!(lowered, expected, "{target:?}: {kind}");
            }
        }
    }
}
