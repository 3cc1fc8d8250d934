//! FLUX → IR. The lifter walks the model in the order of its checkpoint: embedders, double
//! blocks, single blocks, final layer; each file mirrors one part and names its nodes after the
//! checkpoint key paths, so a node's name says which weights it computes with.

mod double;
mod embed;
mod final_layer;
mod replaced;
mod single;

use crate::checkpoint::FluxCheckpoint;
use crate::dtype::DType;
use crate::error::Result;
use crate::ir::{BlockId, BlockIo, Graph, Op, Stream, Value, Weight, WeightData};

/// LayerNorm and RMSNorm epsilon of FLUX.1.
pub const NORM_EPS: f32 = 1e-6;

/// What the lifted graph computes in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct LiftOptions {
    /// Type of the weights and of the computation between the input and output casts.
    pub dtype: DType,
}

/// The export type when the user asks for none: the stored type of the bulk of the parameters,
/// as `DType::default_export` maps it (a file of bf16 matrices with f32 norm scales stays bf16).
pub fn default_dtype(ckpt: &FluxCheckpoint) -> DType {
    let mut counts = std::collections::BTreeMap::<DType, usize>::new();
    for source in ckpt.sources().values() {
        *counts.entry(source.dtype.default_export()).or_default() +=
            source.shape.iter().product::<usize>();
    }
    counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map_or(DType::F32, |(d, _)| d)
}

/// Lifts a resolved checkpoint into the IR.
pub fn lift(ckpt: &FluxCheckpoint, options: LiftOptions) -> Result<Graph> {
    let mut lifter = Lifter {
        graph: Graph::new(),
        ckpt,
        dtype: options.dtype,
        block: None,
    };
    let cfg = &ckpt.config;
    let inputs = embed::lift_inputs(&mut lifter)?;
    let (mut img, mut txt, vec, pe) = embed::lift_embedders(&mut lifter, &inputs)?;
    for i in 0..cfg.double_blocks {
        let block = BlockId::Double(i);
        lifter.block = Some(block);
        let (img_in, txt_in) = (img, txt);
        (img, txt) = if ckpt.replaced_blocks().contains(&block) {
            match replaced::lift_replaced_block(&mut lifter, block, &[img, txt], vec)?[..] {
                [img, txt] => (img, txt),
                _ => unreachable!("a double block has two streams"),
            }
        } else {
            double::lift_double_block(&mut lifter, i, img, txt, vec, pe)?
        };
        lifter.record_block(block, vec, &[("img", img_in, img), ("txt", txt_in, txt)]);
    }
    lifter.block = None;
    let mut x = lifter.op(Op::Concat { axis: 1 }, "joint", &[txt, img])?;
    for i in 0..cfg.single_blocks {
        let block = BlockId::Single(i);
        lifter.block = Some(block);
        let x_in = x;
        x = if ckpt.replaced_blocks().contains(&block) {
            replaced::lift_replaced_block(&mut lifter, block, &[x], vec)?[0]
        } else {
            single::lift_single_block(&mut lifter, i, x, vec, pe)?
        };
        lifter.record_block(block, vec, &[("x", x_in, x)]);
    }
    lifter.block = None;
    // Split where the text ends, measured on the model input so that no block output has to
    // stay alive for it.
    let text = inputs.encoder_hidden_states;
    let img = lifter
        .graph
        .add(Op::SplitLike { axis: 1 }, "joint.split", None, &[x, text])?[1];
    let latent = final_layer::lift_final_layer(&mut lifter, img, vec)?;
    lifter.graph.output("latent", latent);
    Ok(lifter.graph)
}

/// The silu'd conditioning vector and the RoPE tables every block reads.
#[derive(Copy, Clone)]
pub(crate) struct Pe {
    pub cos: Value,
    pub sin: Value,
}

pub(crate) struct Lifter<'a> {
    pub graph: Graph,
    pub ckpt: &'a FluxCheckpoint,
    pub dtype: DType,
    /// The block whose nodes are being added.
    pub block: Option<BlockId>,
}

impl Lifter<'_> {
    fn record_block(&mut self, block: BlockId, condition: Value, streams: &[(&str, Value, Value)]) {
        let streams = streams
            .iter()
            .map(|&(name, input, output)| Stream {
                name: name.to_owned(),
                input,
                output,
            })
            .collect();
        self.graph
            .block_io
            .insert(block, BlockIo { streams, condition });
    }

    pub fn op(&mut self, op: Op, name: impl Into<String>, inputs: &[Value]) -> Result<Value> {
        self.graph.add1(op, name, self.block, inputs)
    }

    pub fn op_n(
        &mut self,
        op: Op,
        name: impl Into<String>,
        inputs: &[Value],
    ) -> Result<Vec<Value>> {
        self.graph.add(op, name, self.block, inputs)
    }

    /// A weight node for the canonical parameter `name`, read lazily from the checkpoint.
    pub fn weight(&mut self, name: &str) -> Result<Value> {
        let source = self.ckpt.source(name)?.clone();
        let weight = Weight::new(
            name,
            source.shape.clone(),
            self.dtype,
            WeightData::Stored(source),
        );
        self.op(Op::Weight(weight), name, &[])
    }

    /// `module(x)` for a Linear module with `.weight` and `.bias`; the node is named `module`.
    pub fn linear(&mut self, module: &str, x: Value) -> Result<Value> {
        let w = self.weight(&format!("{module}.weight"))?;
        let b = self.weight(&format!("{module}.bias"))?;
        self.op(Op::Linear, module, &[x, w, b])
    }

    /// FLUX's modulation: `module(silu(vec))` split into `parts` vectors of the hidden width.
    pub fn modulation(
        &mut self,
        module: &str,
        silu_vec: Value,
        parts: usize,
    ) -> Result<Vec<Value>> {
        let params = self.linear(module, silu_vec)?;
        let sizes = vec![self.ckpt.config.hidden; parts];
        self.op_n(Op::Split { sizes }, format!("{module}.chunks"), &[params])
    }

    /// `(1 + scale)·LN(x) + shift`, the adaptive LayerNorm in front of every branch.
    pub fn modulated_norm(
        &mut self,
        name: &str,
        x: Value,
        shift: Value,
        scale: Value,
    ) -> Result<Value> {
        let normed = self.op(
            Op::LayerNorm { eps: NORM_EPS },
            format!("{name}.norm"),
            &[x],
        )?;
        self.op(
            Op::Modulate,
            format!("{name}.modulate"),
            &[normed, shift, scale],
        )
    }

    /// Per-head q, k, v from a fused `[q | k | v]` projection, with q and k RMS-normed by the
    /// `norms` modules (query, key), whose names the RMSNorm nodes take.
    pub fn heads_qkv(
        &mut self,
        qkv: Value,
        prefix: &str,
        norms: &[String; 2],
    ) -> Result<[Value; 3]> {
        let h = self.ckpt.config.hidden;
        let heads = self.ckpt.config.heads;
        let parts = self.op_n(
            Op::Split { sizes: vec![h; 3] },
            format!("{prefix}.split"),
            &[qkv],
        )?;
        let mut out = [parts[0]; 3];
        for (i, (part, which)) in parts.into_iter().zip(["q", "k", "v"]).enumerate() {
            out[i] = self.op(Op::ToHeads { heads }, format!("{prefix}.{which}"), &[part])?;
        }
        for (i, norm) in norms.iter().enumerate() {
            let scale = self.weight(&format!("{norm}.scale"))?;
            out[i] = self.op(
                Op::RmsNorm { eps: NORM_EPS },
                norm.as_str(),
                &[out[i], scale],
            )?;
        }
        Ok(out)
    }

    /// Rotary embedding of q and k, attention, and heads merged back: `[B,S,h]`.
    pub fn attention(&mut self, prefix: &str, [q, k, v]: [Value; 3], pe: Pe) -> Result<Value> {
        let q = self.op(Op::Rope, format!("{prefix}.q.rope"), &[q, pe.cos, pe.sin])?;
        let k = self.op(Op::Rope, format!("{prefix}.k.rope"), &[k, pe.cos, pe.sin])?;
        let o = self.op(Op::Attention, prefix, &[q, k, v])?;
        self.op(Op::FromHeads, format!("{prefix}.merge"), &[o])
    }
}
