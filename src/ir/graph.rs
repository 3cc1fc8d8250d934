//! The IR graph: a petgraph `StableGraph` whose nodes are ops and whose edges carry one output
//! of a node into one input slot of another. Every node knows the block and module it came from,
//! so passes find "the residual branch of double block 7" by its tags rather than by patterns.

use super::op::Op;
use super::types::TensorType;
use crate::error::{Error, Result};
use petgraph::Direction;
use petgraph::stable_graph::{NodeIndex, StableGraph};
use petgraph::visit::EdgeRef;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, HashSet};
use std::fmt;

/// A transformer block of FLUX, in the original naming's numbering.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlockId {
    Double(usize),
    Single(usize),
}

impl std::str::FromStr for BlockId {
    type Err = String;

    /// Parses the display form, `double_blocks.{i}` or `single_blocks.{i}`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let parse = |i: &str| i.parse::<usize>().ok();
        let block = match s.split_once('.') {
            Some(("double_blocks", i)) => parse(i).map(Self::Double),
            Some(("single_blocks", i)) => parse(i).map(Self::Single),
            _ => None,
        };
        block.ok_or_else(|| {
            format!("`{s}` is not a block name (`double_blocks.N` or `single_blocks.N`)")
        })
    }
}

impl fmt::Display for BlockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Double(i) => write!(f, "double_blocks.{i}"),
            Self::Single(i) => write!(f, "single_blocks.{i}"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    /// Unique and stable: derived from the checkpoint key path of what the node computes.
    pub name: String,
    pub block: Option<BlockId>,
    pub outputs: Vec<TensorType>,
    /// When the node was added, counted per graph: the tie-break of `model_order`. (Node
    /// indices are no such count: a `StableGraph` reuses the slots of removed nodes.)
    pub seq: u64,
}

/// An edge: output `src` of the source node feeds input `dst` of the target node.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Port {
    pub src: usize,
    pub dst: usize,
}

/// What a block reads and writes: per stream (`img`/`txt` of a double block, `x` of a single
/// block) the value entering and the value leaving it; and the conditioning `silu(vec)`.
/// Passes find a block's residual branch from this record: the branch of stream `s` is
/// everything between `input` and `output` that is tagged with the block.
#[derive(Clone, Debug)]
pub struct BlockIo {
    pub streams: Vec<Stream>,
    pub condition: Value,
}

#[derive(Clone, Debug)]
pub struct Stream {
    pub name: String,
    pub input: Value,
    pub output: Value,
}

/// One output of one node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value {
    pub node: NodeIndex,
    pub port: usize,
}

#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub graph: StableGraph<Node, Port>,
    /// Model outputs by name, in order.
    pub outputs: Vec<(String, Value)>,
    /// The boundary of every transformer block, recorded by the lifter.
    pub block_io: BTreeMap<BlockId, BlockIo>,
    names: HashSet<String>,
    next_seq: u64,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node, typing its outputs; returns them.
    pub fn add(
        &mut self,
        op: Op,
        name: impl Into<String>,
        block: Option<BlockId>,
        inputs: &[Value],
    ) -> Result<Vec<Value>> {
        let name = name.into();
        if !self.names.insert(name.clone()) {
            return Err(Error::Internal(format!("two IR nodes named `{name}`")));
        }
        let types: Vec<&TensorType> = inputs.iter().map(|v| self.ty(*v)).collect();
        let outputs = op.infer(&types).map_err(|source| Error::Type {
            node: name.clone(),
            source,
        })?;
        let n = outputs.len();
        let seq = self.next_seq;
        self.next_seq += 1;
        let node = self.graph.add_node(Node {
            op,
            name,
            block,
            outputs,
            seq,
        });
        for (dst, v) in inputs.iter().enumerate() {
            self.graph.add_edge(v.node, node, Port { src: v.port, dst });
        }
        Ok((0..n).map(|port| Value { node, port }).collect())
    }

    /// Adds a single-output node and returns its output.
    pub fn add1(
        &mut self,
        op: Op,
        name: impl Into<String>,
        block: Option<BlockId>,
        inputs: &[Value],
    ) -> Result<Value> {
        let name = name.into();
        let outs = self.add(op, name.clone(), block, inputs)?;
        match outs[..] {
            [v] => Ok(v),
            _ => Err(Error::Internal(format!(
                "`{name}` has {} outputs, expected one",
                outs.len()
            ))),
        }
    }

    pub fn node(&self, n: NodeIndex) -> &Node {
        &self.graph[n]
    }

    pub fn ty(&self, v: Value) -> &TensorType {
        &self.graph[v.node].outputs[v.port]
    }

    pub fn output(&mut self, name: &str, v: Value) {
        self.outputs.push((name.to_owned(), v));
    }

    /// The node's inputs in slot order.
    pub fn inputs(&self, n: NodeIndex) -> Vec<Value> {
        let mut edges: Vec<(usize, Value)> = self
            .graph
            .edges_directed(n, Direction::Incoming)
            .map(|e| {
                (
                    e.weight().dst,
                    Value {
                        node: e.source(),
                        port: e.weight().src,
                    },
                )
            })
            .collect();
        edges.sort_unstable();
        edges.into_iter().map(|(_, v)| v).collect()
    }

    /// Every consumer of `v`: (node, input slot).
    pub fn users(&self, v: Value) -> Vec<(NodeIndex, usize)> {
        let mut users: Vec<_> = self
            .graph
            .edges_directed(v.node, Direction::Outgoing)
            .filter(|e| e.weight().src == v.port)
            .map(|e| (e.target(), e.weight().dst))
            .collect();
        users.sort_unstable();
        users
    }

    /// Redirects every use of `from` (inputs of nodes and model outputs) to `to`.
    pub fn replace_uses(&mut self, from: Value, to: Value) {
        self.replace_uses_except(from, to, None);
    }

    /// `replace_uses`, but node `except` keeps reading `from`: for a node inserted after `from`
    /// that takes over its uses.
    pub fn replace_uses_except(&mut self, from: Value, to: Value, except: Option<NodeIndex>) {
        for (user, dst) in self.users(from) {
            if Some(user) == except {
                continue;
            }
            let edge = self
                .graph
                .edges_directed(user, Direction::Incoming)
                .find(|e| e.weight().dst == dst)
                .map(|e| e.id());
            if let Some(edge) = edge {
                self.graph.remove_edge(edge);
            }
            self.graph
                .add_edge(to.node, user, Port { src: to.port, dst });
        }
        for (_, v) in &mut self.outputs {
            if *v == from {
                *v = to;
            }
        }
        for io in self.block_io.values_mut() {
            for v in io
                .streams
                .iter_mut()
                .flat_map(|s| [&mut s.input, &mut s.output])
            {
                if *v == from {
                    *v = to;
                }
            }
            if io.condition == from {
                io.condition = to;
            }
        }
    }

    /// Removes every node that no model output depends on; returns how many.
    pub fn remove_dead(&mut self) -> usize {
        let mut live = HashSet::new();
        let mut stack: Vec<NodeIndex> = self.outputs.iter().map(|(_, v)| v.node).collect();
        while let Some(n) = stack.pop() {
            if live.insert(n) {
                stack.extend(self.graph.neighbors_directed(n, Direction::Incoming));
            }
        }
        let dead: Vec<NodeIndex> = self
            .graph
            .node_indices()
            .filter(|n| !live.contains(n))
            .collect();
        for n in &dead {
            let name = self.graph[*n].name.clone();
            self.names.remove(&name);
            self.graph.remove_node(*n);
        }
        dead.len()
    }

    /// Nodes in a deterministic topological order that follows the model: see `model_order`.
    pub fn topo_order(&self) -> Vec<NodeIndex> {
        self.model_order().into_iter().map(|(n, _)| n).collect()
    }

    /// Nodes in topological order, each with its position in the model: `2·(k+1)` for the
    /// nodes of the k-th block, 0 for the nodes that depend on no block (inputs, embedders,
    /// and whatever reads only them), `2·(k+1)+1` for the other nodes outside the blocks that
    /// come after block k. Among ready nodes the lowest position goes first, then the earliest
    /// added, so blocks come out whole and in model order even after rewrites add nodes.
    pub fn model_order(&self) -> Vec<(NodeIndex, usize)> {
        let blocks: Vec<BlockId> = self.blocks().into_iter().collect();
        let mut pending: HashMap<NodeIndex, usize> = self
            .graph
            .node_indices()
            .map(|n| (n, self.graph.edges_directed(n, Direction::Incoming).count()))
            .collect();
        let mut position: HashMap<NodeIndex, usize> = HashMap::new();
        let place = |n: NodeIndex, position: &HashMap<NodeIndex, usize>| match self.graph[n].block {
            Some(b) => 2 * (blocks.iter().position(|&x| x == b).unwrap_or(0) + 1),
            None => {
                let after = self
                    .graph
                    .neighbors_directed(n, Direction::Incoming)
                    .map(|m| position[&m])
                    .max()
                    .unwrap_or(0);
                if after > 0 && after % 2 == 0 {
                    after + 1
                } else {
                    after
                }
            }
        };
        let mut ready = BinaryHeap::new();
        for (&n, _) in pending.iter().filter(|(_, c)| **c == 0) {
            let p = place(n, &position);
            position.insert(n, p);
            ready.push(Reverse((p, self.graph[n].seq, n)));
        }
        let mut order = Vec::with_capacity(pending.len());
        while let Some(Reverse((p, _, n))) = ready.pop() {
            order.push((n, p));
            for e in self.graph.edges_directed(n, Direction::Outgoing) {
                let count = pending.get_mut(&e.target()).expect("node in graph");
                *count -= 1;
                if *count == 0 {
                    let p = place(e.target(), &position);
                    position.insert(e.target(), p);
                    ready.push(Reverse((p, self.graph[e.target()].seq, e.target())));
                }
            }
        }
        order
    }

    /// The blocks present, in model order.
    pub fn blocks(&self) -> BTreeSet<BlockId> {
        self.graph.node_weights().filter_map(|n| n.block).collect()
    }

    /// The blocks BRLL replaced: those holding a fitted node.
    pub fn replaced_blocks(&self) -> BTreeSet<BlockId> {
        self.graph
            .node_weights()
            .filter(|n| matches!(n.op, Op::LinearResidual { .. }))
            .filter_map(|n| n.block)
            .collect()
    }
}
