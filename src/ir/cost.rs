//! What a graph costs: parameters and multiply-add FLOPs of a forward pass, per image token, at
//! given image and text token counts (the summary compares them before and after a rewrite),
//! and the bytes one sample of a value or of a stage run's intermediates takes (the memory
//! budget sizes its chunks by them).

use super::graph::{Graph, Value};
use super::op::Op;
use super::types::Dim;
use petgraph::stable_graph::NodeIndex;

/// Token counts at which FLOPs are evaluated.
#[derive(Copy, Clone, Debug)]
pub struct Tokens {
    pub image: usize,
    pub text: usize,
}

impl Graph {
    pub fn parameters(&self) -> usize {
        self.graph
            .node_weights()
            .filter_map(|n| match &n.op {
                Op::Weight(w) => Some(w.numel()),
                _ => None,
            })
            .sum()
    }

    /// FLOPs (2 per multiply-add) of the matrix products of one sample, divided by the image
    /// tokens. Elementwise work is left out: it is a rounding error next to the products.
    pub fn flops_per_image_token(&self, tokens: Tokens) -> f64 {
        let size = |d: &Dim| tokens.size(d);
        let mut flops = 0.0;
        for n in self.graph.node_indices() {
            let node = self.node(n);
            let inputs = self.inputs(n);
            let rows =
                |t: &super::TensorType| t.shape[..t.rank() - 1].iter().map(size).product::<f64>();
            match &node.op {
                Op::Linear | Op::LinearResidual { .. } => {
                    let (x, w) = (self.ty(inputs[0]), self.ty(inputs[1]));
                    flops += 2.0 * rows(x) * size(&w.shape[0]) * size(&w.shape[1]);
                    if matches!(node.op, Op::LinearResidual { conditioned: true }) {
                        let u = self.ty(inputs[4]);
                        flops += 2.0 * size(&u.shape[0]) * size(&u.shape[1]);
                    }
                }
                Op::Attention => {
                    // q kᵀ and the weighted sum of v: 2 · (heads · S² · D) multiply-adds.
                    let q = self.ty(inputs[0]);
                    let (heads, seq, width) =
                        (size(&q.shape[1]), size(&q.shape[2]), size(&q.shape[3]));
                    flops += 4.0 * heads * seq * seq * width;
                }
                _ => {}
            }
        }
        flops / tokens.image as f64
    }

    /// Bytes of one sample of `v` in f32 (the type calibration runs in), at `tokens`.
    pub fn sample_bytes(&self, v: Value, tokens: Tokens) -> u64 {
        let elements: f64 = self.ty(v).shape.iter().map(|d| tokens.size(d)).product();
        (elements * 4.0) as u64
    }

    /// Bytes one sample of a run of `nodes` may take at its peak, in f32: every output of every
    /// node, and each attention's probabilities (`heads · S²`), which no IR value shows but
    /// ONNX Runtime's CPU MultiHeadAttention holds for a whole batch (its softmax works in
    /// place; the CUDA EP's fused kernels hold none). An upper bound: a runtime reuses buffers
    /// whose values are dead.
    pub fn working_bytes(&self, nodes: &[NodeIndex], tokens: Tokens) -> u64 {
        let mut bytes = 0u64;
        for &n in nodes {
            for port in 0..self.node(n).outputs.len() {
                bytes += self.sample_bytes(Value { node: n, port }, tokens);
            }
            if matches!(self.node(n).op, Op::Attention) {
                let q = self.ty(self.inputs(n)[0]);
                let (heads, seq) = (tokens.size(&q.shape[1]), tokens.size(&q.shape[2]));
                bytes += (heads * seq * seq * 4.0) as u64;
            }
        }
        bytes
    }
}

impl Tokens {
    /// The size of `d` for one sample at these token counts (`B` is 1).
    pub fn size(&self, d: &Dim) -> f64 {
        match d {
            Dim::Known(n) => *n as f64,
            Dim::Sym(s) => s
                .split('+')
                .map(|t| match t {
                    "N" => self.image as f64,
                    "L" => self.text as f64,
                    _ => 1.0, // B: one sample
                })
                .sum(),
        }
    }
}
