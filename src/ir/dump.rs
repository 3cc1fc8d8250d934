//! The IR's deterministic text dump: nodes in topological order, values named after the nodes
//! that produce them, types on every line, weights listed at the end. Snapshot tests compare it,
//! and reviewing a rewrite means reading the diff of two dumps.

use super::graph::{Graph, Value};
use super::op::Op;
use std::fmt;

impl Graph {
    fn value_ref(&self, v: Value) -> String {
        let node = self.node(v.node);
        match &node.op {
            Op::Weight(w) => format!("@{}", w.name),
            Op::Input { name, .. } => format!("%{name}"),
            _ if node.outputs.len() == 1 => format!("%{}", node.name),
            _ => format!("%{}:{}", node.name, v.port),
        }
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let order = self.topo_order();
        let weights: Vec<_> = order
            .iter()
            .filter_map(|n| match &self.node(*n).op {
                Op::Weight(w) => Some(w),
                _ => None,
            })
            .collect();
        let params: usize = weights.iter().map(|w| w.numel()).sum();
        writeln!(
            f,
            "graph: {} ops, {} weights, {params} parameters",
            order.len() - weights.len(),
            weights.len()
        )?;
        let mut block = None;
        for &n in &order {
            let node = self.node(n);
            match &node.op {
                Op::Weight(_) => continue,
                Op::Input { name, ty } => {
                    writeln!(f, "input %{name}: {ty}")?;
                    continue;
                }
                _ => {}
            }
            if node.block != block {
                block = node.block;
                match block {
                    Some(b) => writeln!(f, "{b}:")?,
                    None => writeln!(f, "top level:")?,
                }
            }
            let args: Vec<String> = self
                .inputs(n)
                .into_iter()
                .map(|v| self.value_ref(v))
                .collect();
            let attrs = node.op.attributes();
            let attrs = if attrs.is_empty() {
                attrs
            } else {
                format!("[{attrs}]")
            };
            let types: Vec<String> = node.outputs.iter().map(ToString::to_string).collect();
            writeln!(
                f,
                "  %{} = {}{attrs}({}) -> {}",
                node.name,
                node.op.kind(),
                args.join(", "),
                types.join(", ")
            )?;
        }
        for (name, v) in &self.outputs {
            writeln!(
                f,
                "output %{name} = {}: {}",
                self.value_ref(*v),
                self.ty(*v)
            )?;
        }
        writeln!(f, "weights:")?;
        for w in weights {
            let shape: Vec<String> = w.shape.iter().map(ToString::to_string).collect();
            writeln!(f, "  @{}: {}[{}]", w.name, w.dtype, shape.join(","))?;
        }
        Ok(())
    }
}
