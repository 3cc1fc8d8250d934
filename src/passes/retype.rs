//! Retyping a lifted graph to f32: the model calibration runs (ONNX Runtime's CPU kernels
//! compute in f32), made from the graph being compiled instead of from a second lift.
//!
//! Rule, for a graph lifted in any compute type:
//!
//! ```text
//! Weight(w: T)            →  Weight(w: f32)         (same data, same deltas)
//! Cast{to}(x)             →  x                      (every value is f32 now: a no-op)
//! every other node        →  itself, retyped from its inputs
//! ```
//!
//! Nodes are rebuilt in the order they were added, so the result has the node order, names and
//! types that lifting the checkpoint in f32 gives, and lowers to the same ONNX (tests/retype.rs).

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ir::{BlockIo, Graph, Op, Stream, Value, Weight};
use petgraph::Direction;
use petgraph::stable_graph::NodeIndex;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// `graph` with every weight exported as f32 and the casts to the compute type removed.
pub fn to_f32(graph: &Graph) -> Result<Graph> {
    let nodes = insertion_order(graph);
    let mut retyped = Graph::new();
    let mut map: HashMap<Value, Value> = HashMap::new();
    for n in nodes {
        let node = graph.node(n);
        let inputs = graph
            .inputs(n)
            .iter()
            .map(|v| mapped(&map, graph, *v))
            .collect::<Result<Vec<_>>>()?;
        let op = match &node.op {
            Op::Cast { .. } => {
                let source = inputs[0];
                if retyped.ty(source).dtype != DType::F32 {
                    return Err(Error::Internal(format!(
                        "retype: the input of cast `{}` is {}, not f32",
                        node.name,
                        retyped.ty(source)
                    )));
                }
                map.insert(Value { node: n, port: 0 }, source);
                continue;
            }
            Op::Weight(w) => Op::Weight(Weight {
                dtype: DType::F32,
                ..w.clone()
            }),
            op => op.clone(),
        };
        let outputs = retyped.add(op, &node.name, node.block, &inputs)?;
        for (port, v) in outputs.into_iter().enumerate() {
            map.insert(Value { node: n, port }, v);
        }
    }
    for (name, v) in &graph.outputs {
        let v = mapped(&map, graph, *v)?;
        retyped.output(name, v);
    }
    for (&block, io) in &graph.block_io {
        let streams = io
            .streams
            .iter()
            .map(|s| {
                Ok(Stream {
                    name: s.name.clone(),
                    input: mapped(&map, graph, s.input)?,
                    output: mapped(&map, graph, s.output)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let condition = mapped(&map, graph, io.condition)?;
        retyped
            .block_io
            .insert(block, BlockIo { streams, condition });
    }
    Ok(retyped)
}

/// The nodes in the order they were added, as far as the edges allow: the lifter adds a node
/// after its inputs, so a lifted graph comes out in exactly its insertion order, while a node a
/// rewrite added later (a fitted BRLL node) comes before the earlier nodes that now read it.
fn insertion_order(graph: &Graph) -> Vec<NodeIndex> {
    let mut waiting: HashMap<NodeIndex, usize> = graph
        .graph
        .node_indices()
        .map(|n| (n, graph.inputs(n).len()))
        .collect();
    let mut ready: BinaryHeap<Reverse<(u64, NodeIndex)>> = waiting
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(&n, _)| Reverse((graph.node(n).seq, n)))
        .collect();
    let mut order = Vec::with_capacity(waiting.len());
    while let Some(Reverse((_, n))) = ready.pop() {
        order.push(n);
        for user in graph.graph.neighbors_directed(n, Direction::Outgoing) {
            let count = waiting.get_mut(&user).expect("every node is counted");
            *count -= 1;
            if *count == 0 {
                ready.push(Reverse((graph.node(user).seq, user)));
            }
        }
    }
    order
}

fn mapped(map: &HashMap<Value, Value>, graph: &Graph, v: Value) -> Result<Value> {
    map.get(&v).copied().ok_or_else(|| {
        Error::Internal(format!(
            "retype: `{}` is used before it is computed",
            graph.value_name(v)
        ))
    })
}
