//! IR rewrites a target runs before its rules lower the graph: fusions that merge several IR
//! nodes into one fused IR op (or change the layout along a chain of them), so that each rule
//! still lowers one node. Each fusion is a pure function in the style of `passes`: it reads the
//! graph and returns a `Patch` (or nothing); `run` applies a target's list to a copy of the
//! graph, which the caller's graph never sees. Weights are shared, not copied.

mod gelu;
mod heads;
mod norm;

use crate::error::{Error, Result};
use crate::ir::Graph;
use crate::ir::op::OpKind;
use crate::passes::{Patch, apply};
use std::borrow::Cow;

/// One rewrite, and the fused op kinds it makes (which only a target that runs it must lower).
pub(crate) struct Fusion {
    /// Named in the error when a fusion's patch does not type.
    pub name: &'static str,
    /// Read by the test that each target lowers what its fusions make.
    #[cfg_attr(not(test), allow(dead_code))]
    pub makes: &'static [OpKind],
    pub rule: fn(&Graph) -> Result<Option<Patch>>,
}

/// Heads stay packed `[B,S,H·D]` from the projection to the output projection.
pub(crate) const PACK_HEADS: Fusion = Fusion {
    name: "pack heads",
    makes: &[
        OpKind::PackedRmsNorm,
        OpKind::PackedRope,
        OpKind::PackedAttention,
    ],
    rule: heads::pack_heads,
};

/// LayerNorm then Modulate as one ModulatedLayerNorm.
pub(crate) const MODULATED_NORM: Fusion = Fusion {
    name: "modulated norm",
    makes: &[OpKind::ModulatedLayerNorm],
    rule: norm::fuse_modulated_norm,
};

/// Linear then GeluTanh as one LinearGeluTanh.
pub(crate) const LINEAR_GELU: Fusion = Fusion {
    name: "linear gelu",
    makes: &[OpKind::LinearGeluTanh],
    rule: gelu::fuse_linear_gelu,
};

/// Every fusion there is, for the checks that a target lowers what its fusions make.
#[cfg(test)]
pub(crate) const ALL: [&Fusion; 3] = [&PACK_HEADS, &MODULATED_NORM, &LINEAR_GELU];

/// `graph` after `fusions`, in order; borrowed as it is when none applies.
pub(crate) fn run<'g>(graph: &'g Graph, fusions: &[&Fusion]) -> Result<Cow<'g, Graph>> {
    let mut graph = Cow::Borrowed(graph);
    for fusion in fusions {
        let fused = (fusion.rule)(&graph).and_then(|patch| match patch {
            Some(patch) => apply(graph.to_mut(), patch).map(drop),
            None => Ok(()),
        });
        fused.map_err(|e| Error::Internal(format!("the {} fusion: {e}", fusion.name)))?;
    }
    Ok(graph)
}

/// The name of a node a fusion adds: the first node it replaces, `+` what it absorbs.
fn fused_name(first: &str, absorbed: &str) -> String {
    format!("{first}+{absorbed}")
}

/// Whether `v` is read once, by input `slot` of `node`, and is no model output: then the
/// node that computes it can merge into that reader.
fn only_reader(
    graph: &Graph,
    v: crate::ir::Value,
    node: petgraph::stable_graph::NodeIndex,
    slot: usize,
) -> bool {
    graph.users(v) == [(node, slot)] && !graph.outputs.iter().any(|(_, o)| *o == v)
}
