//! Patches: new nodes plus the uses they take over, applied in one step. Rules build them
//! without mutating the graph, so a rule can be read (and tested) as a pure function.

use crate::error::Result;
use crate::ir::{BlockId, Graph, Op, Value};

/// A value a patch refers to: one already in the graph, or an output of a node it adds.
#[derive(Copy, Clone, Debug)]
pub enum PatchValue {
    Old(Value),
    New { node: usize, port: usize },
}

struct PatchNode {
    op: Op,
    name: String,
    block: Option<BlockId>,
    inputs: Vec<PatchValue>,
}

#[derive(Default)]
pub struct Patch {
    nodes: Vec<PatchNode>,
    replace: Vec<(Value, PatchValue)>,
    wrap: Vec<(Value, PatchValue)>,
}

impl Patch {
    /// Adds a node; returns its first output.
    pub fn add(
        &mut self,
        op: Op,
        name: impl Into<String>,
        block: Option<BlockId>,
        inputs: &[PatchValue],
    ) -> PatchValue {
        self.nodes.push(PatchNode {
            op,
            name: name.into(),
            block,
            inputs: inputs.to_vec(),
        });
        PatchValue::New {
            node: self.nodes.len() - 1,
            port: 0,
        }
    }

    /// Every use of `old` (by nodes, model outputs and block records) moves to `new`.
    pub fn replace(&mut self, old: Value, new: PatchValue) {
        self.replace.push((old, new));
    }

    /// Every use of `old` but the one by `new`'s own node moves to `new`: `new` is a node put
    /// after `old` (a clamp, say) that takes its place for everything downstream.
    pub fn wrap(&mut self, old: Value, new: PatchValue) {
        self.wrap.push((old, new));
    }
}

/// Applies `patch`; then removes the nodes nothing depends on. Returns how many were removed.
pub fn apply(graph: &mut Graph, patch: Patch) -> Result<usize> {
    let added = add_nodes(graph, patch.nodes)?;
    for (old, new) in patch.replace {
        graph.replace_uses(old, resolve(&added, new));
    }
    for (old, new) in patch.wrap {
        let new = resolve(&added, new);
        graph.replace_uses_except(old, new, Some(new.node));
    }
    Ok(graph.remove_dead())
}

/// Adds the patch's nodes to a graph that is still being built (the lifter), where nothing is
/// replaced and nothing is dead yet; returns the value `v` (a patch value) became.
pub fn insert(graph: &mut Graph, patch: Patch, v: PatchValue) -> Result<Value> {
    let added = add_nodes(graph, patch.nodes)?;
    Ok(resolve(&added, v))
}

type Added = Vec<Vec<Value>>;

fn add_nodes(graph: &mut Graph, nodes: Vec<PatchNode>) -> Result<Added> {
    let mut added: Added = Vec::with_capacity(nodes.len());
    for node in nodes {
        let inputs: Vec<Value> = node.inputs.iter().map(|&v| resolve(&added, v)).collect();
        added.push(graph.add(node.op, node.name, node.block, &inputs)?);
    }
    Ok(added)
}

fn resolve(added: &Added, v: PatchValue) -> Value {
    match v {
        PatchValue::Old(v) => v,
        PatchValue::New { node, port } => added[node][port],
    }
}
