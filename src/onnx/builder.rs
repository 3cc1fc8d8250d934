//! Assembling an ONNX graph: nodes with unique names, attributes, constants, typed inputs and
//! outputs. Only this module and its siblings under `onnx/` see the protobuf types.

use super::proto::{
    AttributeProto, NodeProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
    attribute_proto::AttributeType, tensor_proto::DataType, tensor_shape_proto::Dimension,
    tensor_shape_proto::dimension, type_proto,
};
use crate::dtype::{DType, encode_f32};
use crate::ir::{Dim, TensorType};
use std::collections::BTreeMap;

pub fn data_type(dtype: DType) -> DataType {
    match dtype {
        DType::F64 => DataType::Double,
        DType::F32 => DataType::Float,
        DType::F16 => DataType::Float16,
        DType::BF16 => DataType::Bfloat16,
        DType::F8E4M3 => DataType::Float8e4m3fn,
    }
}

pub fn value_info(name: &str, ty: &TensorType) -> ValueInfoProto {
    let dim = ty
        .shape
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Dim::Known(n) => dimension::Value::DimValue(*n as i64),
                Dim::Sym(s) => dimension::Value::DimParam(s.clone()),
            }),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: data_type(ty.dtype) as i32,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An attribute value of a node.
pub enum Attr {
    Int(i64),
    Ints(Vec<i64>),
    Float(f32),
    Str(&'static str),
}

/// A graph under construction: nodes in order, small constants embedded in the model.
#[derive(Default)]
pub struct GraphBuilder {
    pub nodes: Vec<NodeProto>,
    pub constants: Vec<TensorProto>,
    constant_names: BTreeMap<String, ()>,
    uses_contrib: bool,
}

pub const CONTRIB_DOMAIN: &str = "com.microsoft";

impl GraphBuilder {
    /// Adds `op(inputs) -> outputs`; the node is named after its first output.
    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, Attr)>) {
        self.node_in(op, "", inputs, outputs, attrs);
    }

    /// As `node`, for an op of another domain (ONNX Runtime's contrib ops).
    pub fn node_in(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) {
        if domain == CONTRIB_DOMAIN {
            self.uses_contrib = true;
        }
        let attribute = attrs
            .into_iter()
            .map(|(name, value)| attribute(name, value))
            .collect();
        self.nodes.push(NodeProto {
            name: outputs[0].to_owned(),
            op_type: op.to_owned(),
            domain: domain.to_owned(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        });
    }

    pub fn uses_contrib(&self) -> bool {
        self.uses_contrib
    }

    /// A 1-d int64 constant (shapes, axes, split sizes), shared by name.
    pub fn ints(&mut self, values: &[i64]) -> String {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        let name = format!("const.i64[{}]", key.join(","));
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(&name, DataType::Int64, vec![values.len() as i64], raw)
    }

    /// A float constant of `dtype` with `shape`, shared by name (`label` says what it is).
    pub fn floats(&mut self, label: &str, dtype: DType, shape: &[usize], values: &[f32]) -> String {
        let name = format!("const.{label}.{dtype}");
        let mut raw = Vec::new();
        encode_f32(dtype, values, &mut raw);
        let dims = shape.iter().map(|&d| d as i64).collect();
        self.constant(&name, data_type(dtype), dims, raw)
    }

    /// A float64 constant, shared by name (tables computed at full precision).
    pub fn doubles(&mut self, label: &str, shape: &[usize], values: &[f64]) -> String {
        let name = format!("const.{label}.f64");
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dims = shape.iter().map(|&d| d as i64).collect();
        self.constant(&name, DataType::Double, dims, raw)
    }

    fn constant(
        &mut self,
        name: &str,
        dtype: DataType,
        dims: Vec<i64>,
        raw_data: Vec<u8>,
    ) -> String {
        if self.constant_names.insert(name.to_owned(), ()).is_none() {
            self.constants.push(TensorProto {
                name: name.to_owned(),
                data_type: dtype as i32,
                dims,
                raw_data,
                ..Default::default()
            });
        }
        name.to_owned()
    }
}

fn attribute(name: &str, value: Attr) -> AttributeProto {
    let mut a = AttributeProto {
        name: name.to_owned(),
        ..Default::default()
    };
    match value {
        Attr::Int(i) => {
            a.r#type = AttributeType::Int as i32;
            a.i = i;
        }
        Attr::Ints(is) => {
            a.r#type = AttributeType::Ints as i32;
            a.ints = is;
        }
        Attr::Float(f) => {
            a.r#type = AttributeType::Float as i32;
            a.f = f;
        }
        Attr::Str(s) => {
            a.r#type = AttributeType::String as i32;
            a.s = s.as_bytes().to_vec();
        }
    }
    a
}
