//! What trains in a lowered piece, named by the canonical weight names of its Weight nodes:
//! LoRA adapters on Linear matrices and weights trained whole; the checks that every name fits
//! the piece; the trainable variables made from them, and their values read back.

use super::candle_error;
use super::lower::{LoraAdapter, takes_lora};
use crate::error::{Error, Result};
use crate::ir::{Graph, Op, Value};
use crate::rng::Rng;
use candle_core::{DType, Device, Var};
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, BTreeSet};

/// The size of one LoRA adapter: `rank` and the `alpha` its update is scaled by (`alpha/rank`).
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LoraShape {
    pub rank: usize,
    pub alpha: f32,
}

/// What trains in a lowered piece, by the canonical weight name of the Weight node
/// (`Weight::name`, as in the exported model). Nothing else receives a gradient.
#[derive(Clone, Debug, Default)]
pub struct Trainables {
    /// LoRA adapters on Linear weights: `y = x Wᵀ + b + (alpha/rank)·(x Aᵀ) Bᵀ`, A `[rank, in]`
    /// drawn uniformly in ±1/√in (as kaiming-uniform with a = √5 draws it) from the `Rng`
    /// handed to `Lowered::new`, B `[out, rank]` zeros, so the untrained adapter changes nothing.
    pub lora: BTreeMap<String, LoraShape>,
    /// Weights trained whole (the fitted BRLL nodes' W, b, and cond U).
    pub full: BTreeSet<String>,
}

/// What a trainable variable is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A `[rank, in]` of the adapter on `weight`.
    LoraDown { weight: String },
    /// B `[out, rank]` of the adapter on `weight`.
    LoraUp { weight: String },
    /// The weight itself, trained whole.
    Full { weight: String },
}

/// One trainable variable: `name` is `<weight>.lora_down`, `<weight>.lora_up` or the weight's
/// own name.
#[derive(Clone, Debug)]
pub struct Param {
    pub name: String,
    pub kind: ParamKind,
    pub var: Var,
}

/// An adapter's current values, for folding and saving.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraValues {
    pub weight: String,
    /// A `[rank, in]`, row-major.
    pub down: Vec<f32>,
    /// B `[out, rank]`, row-major.
    pub up: Vec<f32>,
    pub rank: usize,
    pub alpha: f32,
    /// The adapted weight's `[out, in]`.
    pub weight_shape: [usize; 2],
}

/// The trainable state of a lowered piece: the variables, and the adapters the Linear rules
/// read (by the weight they adapt).
pub(super) struct Trained {
    pub params: Vec<Param>,
    pub adapters: BTreeMap<String, LoraAdapter>,
    pub shapes: BTreeMap<String, (LoraShape, [usize; 2])>,
    pub full: BTreeMap<String, Var>,
}

/// The piece's Weight nodes by canonical weight name.
pub(super) fn weight_nodes(piece: &Graph) -> BTreeMap<String, Vec<NodeIndex>> {
    let mut nodes: BTreeMap<String, Vec<NodeIndex>> = BTreeMap::new();
    for n in piece.graph.node_indices() {
        if let Op::Weight(w) = &piece.node(n).op {
            nodes.entry(w.name.clone()).or_default().push(n);
        }
    }
    nodes
}

/// Checks `trainables` against the piece and makes the adapters' variables (A drawn from `rng`
/// in name order, B zeros). Full weights' variables are made by the caller from their values,
/// through [`Trained::add_full`].
pub(super) fn make(
    piece: &Graph,
    trainables: &Trainables,
    device: &Device,
    dtype: DType,
    rng: &mut Rng,
) -> Result<Trained> {
    let nodes = weight_nodes(piece);
    let unknown = trainables
        .lora
        .keys()
        .chain(&trainables.full)
        .find(|name| !nodes.contains_key(*name));
    if let Some(name) = unknown {
        let known: Vec<&str> = nodes.keys().map(String::as_str).collect();
        return Err(Error::Usage(format!(
            "trainable `{name}` is no weight of the piece (its weights: {})",
            known.join(", ")
        )));
    }
    if let Some(name) = trainables
        .lora
        .keys()
        .find(|n| trainables.full.contains(*n))
    {
        return Err(Error::Usage(format!(
            "`{name}` is asked to train both whole and through a LoRA adapter"
        )));
    }
    let mut trained = Trained {
        params: Vec::new(),
        adapters: BTreeMap::new(),
        shapes: BTreeMap::new(),
        full: BTreeMap::new(),
    };
    for (name, &shape) in &trainables.lora {
        let [out, inp] = check_lora(piece, name, &nodes[name], shape)?;
        let bound = 1.0 / (inp as f64).sqrt();
        let down: Vec<f64> = (0..shape.rank * inp)
            .map(|_| (2.0 * rng.uniform() - 1.0) * bound)
            .collect();
        let var_error =
            |e: candle_core::Error| candle_error(format_args!("LoRA adapter on `{name}`"), e);
        let down = candle_core::Tensor::from_vec(down, (shape.rank, inp), device)
            .and_then(|t| t.to_dtype(dtype))
            .and_then(|t| Var::from_tensor(&t))
            .map_err(var_error)?;
        let up = Var::zeros((out, shape.rank), dtype, device).map_err(var_error)?;
        trained.adapters.insert(
            name.clone(),
            LoraAdapter {
                down: down.as_tensor().clone(),
                up: up.as_tensor().clone(),
                scale: f64::from(shape.alpha) / shape.rank as f64,
            },
        );
        trained.shapes.insert(name.clone(), (shape, [out, inp]));
        let weight = name.clone();
        trained.params.push(Param {
            name: format!("{name}.lora_down"),
            kind: ParamKind::LoraDown {
                weight: weight.clone(),
            },
            var: down,
        });
        trained.params.push(Param {
            name: format!("{name}.lora_up"),
            kind: ParamKind::LoraUp { weight },
            var: up,
        });
    }
    Ok(trained)
}

/// A LoRA adapter fits a weight that only Linears read as their matrix, at a rank within
/// `min(out, in)`; returns the weight's `[out, in]`.
fn check_lora(
    piece: &Graph,
    name: &str,
    nodes: &[NodeIndex],
    shape: LoraShape,
) -> Result<[usize; 2]> {
    let Op::Weight(w) = &piece.node(nodes[0]).op else {
        return Err(Error::Internal(format!("`{name}` is not a Weight node")));
    };
    for &n in nodes {
        for (user, slot) in piece.users(Value { node: n, port: 0 }) {
            let kind = piece.node(user).op.kind();
            if !takes_lora(kind, slot) {
                return Err(Error::Usage(format!(
                    "a LoRA adapter on `{name}` {:?}: it is not the matrix of a Linear \
                     (`{}`, a {kind}, reads it as input {slot})",
                    w.shape,
                    piece.node(user).name
                )));
            }
        }
    }
    let &[out, inp] = w.shape.as_slice() else {
        return Err(Error::Usage(format!(
            "a LoRA adapter on `{name}` {:?}: not a matrix",
            w.shape
        )));
    };
    if shape.rank == 0 || shape.rank > out.min(inp) {
        return Err(Error::Usage(format!(
            "LoRA rank {} on `{name}` [{out}, {inp}]: the rank must be 1 to min(out, in) = {}",
            shape.rank,
            out.min(inp)
        )));
    }
    if !shape.alpha.is_finite() {
        return Err(Error::Usage(format!(
            "LoRA alpha {} on `{name}` is not finite",
            shape.alpha
        )));
    }
    Ok([out, inp])
}

impl Trained {
    /// Makes `values` (the weight `name`'s current values) a variable trained whole; returns
    /// the tensor the graph reads.
    pub fn add_full(
        &mut self,
        name: &str,
        values: candle_core::Tensor,
    ) -> Result<candle_core::Tensor> {
        let var = Var::from_tensor(&values)
            .map_err(|e| candle_error(format_args!("weight `{name}`"), e))?;
        let tensor = var.as_tensor().clone();
        self.params.push(Param {
            name: name.to_owned(),
            kind: ParamKind::Full {
                weight: name.to_owned(),
            },
            var: var.clone(),
        });
        self.full.insert(name.to_owned(), var);
        Ok(tensor)
    }
}

/// A variable's values as f32, row-major.
pub(super) fn values_f32(name: &str, var: &Var) -> Result<Vec<f32>> {
    var.as_tensor()
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(|e| candle_error(format_args!("reading `{name}`"), e))
}
