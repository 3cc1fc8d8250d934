//! Cutting a graph into pieces: the value names every piece agrees on, and the extraction of a
//! set of nodes as a graph of its own whose inputs are the values it reads from outside. The
//! calibration runs each block as such a piece, so it needs one block's weights at a time.

use super::graph::{Graph, Value};
use super::op::Op;
use crate::error::{Error, Result};
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

impl Graph {
    /// The name of a value in exported models and in extracted pieces: the weight's or input's
    /// name, the producing node's name, or `node:port` for nodes with several outputs.
    pub fn value_name(&self, v: Value) -> String {
        let node = self.node(v.node);
        match &node.op {
            Op::Weight(w) => w.name.clone(),
            Op::Input { name, .. } => name.clone(),
            _ if node.outputs.len() == 1 => node.name.clone(),
            _ => format!("{}:{}", node.name, v.port),
        }
    }

    /// A graph of `nodes` alone. Values they read from other nodes become inputs (named by
    /// `value_name`); weights they read come along; `outputs` become its outputs, named by
    /// `value_name` as well. Returns the piece and the outside values its inputs stand for.
    pub fn extract(&self, nodes: &[NodeIndex], outputs: &[Value]) -> Result<(Graph, Vec<Value>)> {
        let inside: HashSet<NodeIndex> = nodes.iter().copied().collect();
        let mut piece = Graph::new();
        let mut map: HashMap<Value, Value> = HashMap::new();
        let mut external = Vec::new();
        for &n in nodes {
            let mut inputs = Vec::new();
            for v in self.inputs(n) {
                if let Some(&mapped) = map.get(&v) {
                    inputs.push(mapped);
                    continue;
                }
                let source = self.node(v.node);
                let mapped = match &source.op {
                    Op::Weight(_) => {
                        piece.add1(source.op.clone(), &source.name, source.block, &[])?
                    }
                    _ if inside.contains(&v.node) => {
                        return Err(Error::Internal(format!(
                            "extract: `{}` is used before it is computed",
                            self.value_name(v)
                        )));
                    }
                    _ => {
                        let name = self.value_name(v);
                        let ty = self.ty(v).clone();
                        external.push(v);
                        piece.add1(
                            Op::Input {
                                name: name.clone(),
                                ty,
                            },
                            name,
                            None,
                            &[],
                        )?
                    }
                };
                map.insert(v, mapped);
                inputs.push(mapped);
            }
            let node = self.node(n);
            let outs = piece.add(node.op.clone(), &node.name, node.block, &inputs)?;
            for (port, out) in outs.into_iter().enumerate() {
                map.insert(Value { node: n, port }, out);
            }
        }
        for &v in outputs {
            let mapped = *map.get(&v).ok_or_else(|| {
                Error::Internal(format!(
                    "extract: output `{}` is not computed",
                    self.value_name(v)
                ))
            })?;
            piece.output(&self.value_name(v), mapped);
        }
        Ok((piece, external))
    }
}
