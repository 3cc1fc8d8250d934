//! A deterministic text dump of the lowered ONNX graph, for reading and for snapshot tests:
//! the model's inputs and outputs, the initializers in order, the embedded constants (values
//! when they are few), and every node in order with its op type, inputs, outputs and
//! attributes sorted by name. Also the count of nodes per op type.

use super::builder::data_type;
use super::lower::{Lowered, Target, lower};
use super::proto::tensor_proto::DataType;
use super::proto::{AttributeProto, NodeProto, TensorProto, attribute_proto::AttributeType};
use crate::dtype::{DType, decode_f32};
use crate::error::Result;
use crate::ir::{Graph, Op};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Constants with at most this many elements have their values printed.
const PRINTED_VALUES: usize = 8;

/// The lowered ONNX graph of `graph` for `target`, as text.
pub fn lowered_text(graph: &Graph, target: Target) -> Result<String> {
    let Lowered { builder, weights } = lower(graph, target)?;
    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(format!("target {target:?}"));
    for n in graph.topo_order() {
        if let Op::Input { name, ty } = &graph.node(n).op {
            line(format!("input {name}: {ty}"));
        }
    }
    for (name, v) in &graph.outputs {
        line(format!("output {name}: {}", graph.ty(*v)));
    }
    for w in weights {
        line(format!("weight {} {}{}", w.name, w.dtype, shape(&w.shape)));
    }
    for c in &builder.constants {
        line(constant(c));
    }
    for node in &builder.nodes {
        line(node_line(node));
    }
    Ok(text)
}

/// How many nodes of each op type (`domain.op` outside the default domain) the lowered graph
/// of `graph` for `target` has.
pub fn lowered_op_counts(graph: &Graph, target: Target) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    for node in lower(graph, target)?.builder.nodes {
        *counts.entry(op_type(&node)).or_default() += 1;
    }
    Ok(counts)
}

fn op_type(node: &NodeProto) -> String {
    if node.domain.is_empty() {
        node.op_type.clone()
    } else {
        format!("{}.{}", node.domain, node.op_type)
    }
}

fn node_line(node: &NodeProto) -> String {
    let mut line = format!(
        "node {}({}) -> {}",
        op_type(node),
        node.input.join(", "),
        node.output.join(", ")
    );
    let mut attributes: Vec<&AttributeProto> = node.attribute.iter().collect();
    attributes.sort_by(|a, b| a.name.cmp(&b.name));
    for a in attributes {
        // fmt::Write into a String cannot fail.
        let value = if node.op_type == "Cast" && a.name == "to" {
            element_type(a.i as i32)
        } else {
            attribute_value(a)
        };
        let _ = write!(line, " {}={value}", a.name);
    }
    line
}

/// `[d0,d1,…]`, as the IR dump writes tensor types.
fn shape<D: ToString>(dims: &[D]) -> String {
    let dims: Vec<String> = dims.iter().map(ToString::to_string).collect();
    format!("[{}]", dims.join(","))
}

fn attribute_value(a: &AttributeProto) -> String {
    match AttributeType::try_from(a.r#type) {
        Ok(AttributeType::Int) => a.i.to_string(),
        Ok(AttributeType::Ints) => format!("{:?}", a.ints),
        Ok(AttributeType::Float) => format!("{:?}", a.f),
        Ok(AttributeType::String) => format!("{:?}", String::from_utf8_lossy(&a.s)),
        _ => format!("<attribute type {}>", a.r#type),
    }
}

fn constant(c: &TensorProto) -> String {
    let numel: i64 = c.dims.iter().product();
    let mut line = format!(
        "const {} {}{}",
        c.name,
        element_type(c.data_type),
        shape(&c.dims)
    );
    if numel as usize <= PRINTED_VALUES {
        // fmt::Write into a String cannot fail.
        let _ = write!(line, " = {}", values(c));
    }
    line
}

/// The element type as the IR dump spells it (`f32`, `bf16`, `i64`).
fn element_type(code: i32) -> String {
    if code == DataType::Int64 as i32 {
        return "i64".into();
    }
    match float_dtype(code) {
        Some(dtype) => dtype.to_string(),
        None => DataType::try_from(code).map_or_else(
            |_| format!("type{code}"),
            |t| t.as_str_name().to_lowercase(),
        ),
    }
}

fn float_dtype(code: i32) -> Option<DType> {
    [
        DType::F64,
        DType::F32,
        DType::F16,
        DType::BF16,
        DType::F8E4M3,
    ]
    .into_iter()
    .find(|&d| data_type(d) as i32 == code)
}

fn values(c: &TensorProto) -> String {
    let raw = &c.raw_data;
    if c.data_type == DataType::Int64 as i32 {
        let v: Vec<i64> = raw
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        format!("{v:?}")
    } else if c.data_type == DataType::Double as i32 {
        let v: Vec<f64> = raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        format!("{v:?}")
    } else if let Some(dtype) = float_dtype(c.data_type) {
        let mut v = vec![0f32; raw.len() / dtype.size()];
        decode_f32(dtype, raw, &mut v);
        format!("{v:?}")
    } else {
        format!("<{} bytes>", raw.len())
    }
}
