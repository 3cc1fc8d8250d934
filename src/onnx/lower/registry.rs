//! What a lowering rule is: the node it is handed (its op, output dtype and the ONNX names of
//! its inputs and outputs), the function type, and a target's table of rules by op kind.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ir::op::OpKind;
use crate::ir::{Graph, Op, Value};
use crate::onnx::builder::GraphBuilder;
use petgraph::stable_graph::NodeIndex;
use std::collections::BTreeMap;

/// Emits the ONNX nodes and constants of one IR node.
pub(crate) type Lowering = fn(&mut GraphBuilder, &NodeCx) -> Result<()>;

/// One IR node as a lowering rule sees it.
pub(crate) struct NodeCx<'g> {
    pub op: &'g Op,
    /// The dtype of the first output, which the op's constants take.
    pub dtype: DType,
    name: &'g str,
    feature_width: Option<usize>,
    inputs: Vec<String>,
    outputs: Vec<String>,
}

impl<'g> NodeCx<'g> {
    pub fn new(graph: &'g Graph, n: NodeIndex) -> Self {
        let node = graph.node(n);
        Self {
            op: &node.op,
            dtype: node.outputs[0].dtype,
            name: &node.name,
            feature_width: node.outputs[0].last().and_then(|d| d.known()),
            inputs: graph
                .inputs(n)
                .into_iter()
                .map(|v| graph.value_name(v))
                .collect(),
            outputs: (0..node.outputs.len())
                .map(|port| graph.value_name(Value { node: n, port }))
                .collect(),
        }
    }

    pub fn inputs(&self) -> Vec<&str> {
        self.inputs.iter().map(String::as_str).collect()
    }

    pub fn outputs(&self) -> Vec<&str> {
        self.outputs.iter().map(String::as_str).collect()
    }

    /// The first (for most ops the only) output.
    pub fn output(&self) -> &str {
        &self.outputs[0]
    }

    /// The name of an intermediate tensor of this node.
    pub fn tmp(&self, what: &str) -> String {
        format!("{}/{what}", self.name)
    }

    /// The known width of the first output's last axis.
    pub fn feature_width(&self) -> Result<usize> {
        self.feature_width
            .ok_or_else(|| Error::Internal(format!("`{}` has no known feature width", self.name)))
    }

    /// A rule was handed a node of another kind than it was registered for.
    pub fn wrong_op(&self) -> Error {
        Error::Internal(format!(
            "`{}`: a {} node reached another op's lowering",
            self.name,
            self.op.kind()
        ))
    }
}

/// A target's lowering rules by op kind. Input and Weight have none: the driver turns them
/// into graph inputs and initializers.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    rules: BTreeMap<OpKind, Lowering>,
}

impl Registry {
    /// `self` with `kind` lowered by `rule`, in place of any rule it had.
    pub fn with(mut self, kind: OpKind, rule: Lowering) -> Self {
        self.rules.insert(kind, rule);
        self
    }

    pub fn get(&self, kind: OpKind) -> Option<Lowering> {
        self.rules.get(&kind).copied()
    }
}
