//! What a graph costs: parameters and multiply-add FLOPs of a forward pass, per image token, at
//! given image and text token counts (the summary compares them before and after a rewrite).

use super::graph::Graph;
use super::op::Op;
use super::types::Dim;

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
        let size = |d: &Dim| -> f64 {
            match d {
                Dim::Known(n) => *n as f64,
                Dim::Sym(s) => s
                    .split('+')
                    .map(|t| match t {
                        "N" => tokens.image as f64,
                        "L" => tokens.text as f64,
                        _ => 1.0, // B: one sample
                    })
                    .sum(),
            }
        };
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
}
