//! IR → ONNX nodes, per target. The driver runs the target's fusions (IR rewrites in `fuse/`
//! that merge several IR nodes into one fused IR op) on a copy of the graph, walks it in
//! topological order, collects the weights (they become initializers), hands every other node
//! to its target's rule for the op's kind, and names the model outputs. The rules live one op
//! family per file; a target is a list of fusions and a table of rules: `portable.rs` the
//! standard-ONNX rules and no fusions, `cuda/` the CUDA fusions and the portable table with
//! ONNX Runtime contrib overrides. A new target is a new file (or folder) and a variant here.

mod attention;
mod cuda;
mod elementwise;
mod embedding;
mod fuse;
mod linear;
mod modulation;
mod norm;
mod portable;
mod registry;
mod shape;

use crate::error::{Error, Result};
use crate::ir::{Graph, Op, Weight};
use crate::onnx::builder::GraphBuilder;
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

    /// The IR rewrites run before the rules, in order.
    fn fusions(self) -> &'static [&'static fuse::Fusion] {
        match self {
            Target::Cuda => cuda::FUSIONS,
            Target::Portable => &[],
        }
    }
}

/// The lowered graph: nodes and constants, plus the weights in the order they were met.
pub(crate) struct Lowered {
    pub builder: GraphBuilder,
    pub weights: Vec<Weight>,
}

pub(crate) fn lower(graph: &Graph, target: Target) -> Result<Lowered> {
    let rules = target.registry();
    let fused = fuse::run(graph, target.fusions())?;
    let graph: &Graph = &fused;
    let mut builder = GraphBuilder::default();
    let mut weights = Vec::new();
    for n in graph.topo_order() {
        match &graph.node(n).op {
            Op::Weight(w) => weights.push(w.clone()),
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

    /// A target lowers every op the lifter makes (all but inputs and weights) and the fused ops
    /// its own fusions make, and no fused op that only other targets' fusions make.
    #[test]
    fn every_target_lowers_every_op_that_can_reach_it() {
        let fused: Vec<OpKind> = fuse::ALL.iter().flat_map(|f| f.makes).copied().collect();
        for target in [Target::Cuda, Target::Portable] {
            let rules = target.registry();
            let made: Vec<OpKind> = target
                .fusions()
                .iter()
                .flat_map(|f| f.makes)
                .copied()
                .collect();
            for kind in OpKind::ALL {
                let lowered = rules.get(kind).is_some();
                let expected = !matches!(kind, OpKind::Input | OpKind::Weight)
                    && (!fused.contains(&kind) || made.contains(&kind));
                assert_eq!(lowered, expected, "{target:?}: {kind}");
            }
        }
    }
}
