//! Model inputs and the embedders: `img_in`, `txt_in`, the conditioning vector
//! `time_in(emb(t)) + guidance_in(emb(g)) + vector_in(y)`, and the RoPE tables of all tokens.

use super::{Lifter, Pe};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::generation::flux1::NAMES;
use crate::generation::table::{Layer, Role};
use crate::inputs::model_inputs;
use crate::ir::{Op, TensorType, Value};

/// FLUX feeds sigmas in [0, 1] and multiplies them by this before the sinusoidal embedding.
const TIME_FACTOR: f32 = 1000.0;

pub(crate) struct Inputs {
    pub hidden_states: Value,
    pub encoder_hidden_states: Value,
    pub pooled_projections: Value,
    pub timestep: Value,
    pub img_ids: Value,
    pub txt_ids: Value,
    pub guidance: Option<Value>,
}

/// The ONNX contract's inputs (DESIGN §3, `crate::inputs::contract`), all float32.
pub(crate) fn lift_inputs(l: &mut Lifter) -> Result<Inputs> {
    let contract = model_inputs(&l.ckpt.config);
    let guided = l.ckpt.config.guidance;
    let mut input = |name: &str| {
        let shape = contract
            .iter()
            .find(|i| i.name == name)
            .ok_or_else(|| Error::Internal(format!("`{name}` is not a model input")))?
            .ir_shape();
        let ty = TensorType::new(DType::F32, shape);
        l.op(
            Op::Input {
                name: name.into(),
                ty,
            },
            name,
            &[],
        )
    };
    // Added in this order (guidance last) so that node order, and the exported graph, stay as
    // they were before the contract existed.
    let inputs = Inputs {
        hidden_states: input("hidden_states")?,
        encoder_hidden_states: input("encoder_hidden_states")?,
        pooled_projections: input("pooled_projections")?,
        timestep: input("timestep")?,
        img_ids: input("img_ids")?,
        txt_ids: input("txt_ids")?,
        guidance: if guided {
            Some(input("guidance")?)
        } else {
            None
        },
    };
    Ok(inputs)
}

/// Returns (img, txt, silu(vec), pe) in the compute type.
pub(crate) fn lift_embedders(l: &mut Lifter, inputs: &Inputs) -> Result<(Value, Value, Value, Pe)> {
    let img = cast(l, inputs.hidden_states, "hidden_states.cast")?;
    let img = l.linear(&NAMES.top(Role::ImgIn)?, img)?;
    let txt = cast(
        l,
        inputs.encoder_hidden_states,
        "encoder_hidden_states.cast",
    )?;
    let txt = l.linear(&NAMES.top(Role::TxtIn)?, txt)?;

    let t_emb = sinusoidal(l, inputs.timestep, "timestep")?;
    let mut vec = mlp_embedder(l, Role::TimeIn, t_emb)?;
    if let Some(guidance) = inputs.guidance {
        let g_emb = sinusoidal(l, guidance, "guidance")?;
        let g = mlp_embedder(l, Role::GuidanceIn, g_emb)?;
        vec = l.op(Op::Add, "vec.time_guidance", &[vec, g])?;
    }
    let pooled = cast(l, inputs.pooled_projections, "pooled_projections.cast")?;
    let y = mlp_embedder(l, Role::VectorIn, pooled)?;
    let vec = l.op(Op::Add, "vec", &[vec, y])?;
    // Every modulation reads silu(vec); computing it once serves them all.
    let silu_vec = l.op(Op::Silu, "vec.silu", &[vec])?;

    let ids = l.op(
        Op::Concat { axis: 0 },
        "ids",
        &[inputs.txt_ids, inputs.img_ids],
    )?;
    let cfg = &l.ckpt.config;
    let table = Op::RopeTable {
        axes_dim: cfg.axes_dim.clone(),
        theta: cfg.theta,
    };
    let tables = l.op_n(table, "pe", &[ids])?;
    let pe = Pe {
        cos: cast(l, tables[0], "pe.cos")?,
        sin: cast(l, tables[1], "pe.sin")?,
    };
    Ok((img, txt, silu_vec, pe))
}

/// `Linear, silu, Linear` (BFL's MLPEmbedder); the silu node is named after the embedder
/// (`time_in.silu`).
fn mlp_embedder(l: &mut Lifter, role: fn(Layer) -> Role, x: Value) -> Result<Value> {
    let (in_layer, out_layer) = (NAMES.top(role(Layer::In))?, NAMES.top(role(Layer::Out))?);
    let embedder = in_layer
        .rsplit_once('.')
        .map_or(in_layer.as_str(), |(m, _)| m);
    let hidden = l.linear(&in_layer, x)?;
    let hidden = l.op(Op::Silu, format!("{embedder}.silu"), &[hidden])?;
    l.linear(&out_layer, hidden)
}

/// The sinusoidal embedding of a per-sample scalar, computed in f32 and then cast.
fn sinusoidal(l: &mut Lifter, scalar: Value, name: &str) -> Result<Value> {
    let dim = l.ckpt.config.time_embed_dim;
    let op = Op::TimestepEmbedding {
        dim,
        scale: TIME_FACTOR,
    };
    let emb = l.op(op, format!("{name}.embedding"), &[scalar])?;
    cast(l, emb, &format!("{name}.embedding.cast"))
}

/// Casts an f32 value to the compute type; a no-op when they agree.
fn cast(l: &mut Lifter, v: Value, name: &str) -> Result<Value> {
    if l.graph.ty(v).dtype == l.dtype {
        return Ok(v);
    }
    l.op(Op::Cast { to: l.dtype }, name, &[v])
}
