//! IR → ONNX nodes, per target. The IR's FLUX ops become standard ONNX ops (opset 20), except
//! where a target has a better kernel: on `Target::Cuda`, Linear is ONNX Runtime's contrib
//! `FusedMatMul` with `transB`, which multiplies by the `[out, in]` weight as stored, with no
//! transposed copy at load time. Every op and type used here is placed on ONNX Runtime 1.31's
//! CUDA execution provider (checked with shared/tools/cuda-placement for f32, f16 and bf16).

use super::builder::{Attr, CONTRIB_DOMAIN, GraphBuilder, data_type};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ir::{Graph, Op, Value};
use petgraph::stable_graph::NodeIndex;

#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Target {
    /// ONNX Runtime with the CUDA execution provider (contrib ops allowed).
    #[default]
    Cuda,
    /// Standard ONNX operators only, for any runtime.
    Portable,
}

/// The lowered graph: nodes and constants, plus the weights in the order they were met.
pub struct Lowered {
    pub builder: GraphBuilder,
    pub weights: Vec<NodeIndex>,
}

pub fn lower(graph: &Graph, target: Target) -> Result<Lowered> {
    let mut l = Lowerer {
        graph,
        target,
        b: GraphBuilder::default(),
    };
    let mut weights = Vec::new();
    for n in graph.topo_order() {
        match &graph.node(n).op {
            Op::Weight(_) => weights.push(n),
            Op::Input { .. } => {}
            _ => l.lower_node(n)?,
        }
    }
    // A model output is the tensor of its name; rename through an Identity where needed.
    for (name, v) in &graph.outputs {
        let src = l.name(*v);
        if src != *name {
            l.b.node("Identity", &[&src], &[name], vec![]);
        }
    }
    Ok(Lowered {
        builder: l.b,
        weights,
    })
}

struct Lowerer<'a> {
    graph: &'a Graph,
    target: Target,
    b: GraphBuilder,
}

impl Lowerer<'_> {
    fn name(&self, v: Value) -> String {
        self.graph.value_name(v)
    }

    fn lower_node(&mut self, n: NodeIndex) -> Result<()> {
        let node = self.graph.node(n);
        let ins: Vec<String> = self
            .graph
            .inputs(n)
            .into_iter()
            .map(|v| self.name(v))
            .collect();
        let outs: Vec<String> = (0..node.outputs.len())
            .map(|port| self.name(Value { node: n, port }))
            .collect();
        let ins: Vec<&str> = ins.iter().map(String::as_str).collect();
        let out = outs[0].as_str();
        let dtype = node.outputs[0].dtype;
        let tmp = |s: &str| format!("{}/{s}", node.name);
        let b = &mut self.b;
        match &node.op {
            Op::Input { .. } | Op::Weight(_) => {}
            Op::Cast { to } => {
                let to = data_type(*to) as i64;
                b.node("Cast", &ins, &[out], vec![("to", Attr::Int(to))]);
            }
            Op::Linear => {
                let product = tmp("matmul");
                matmul_transposed(b, self.target, ins[0], ins[1], &product, &tmp);
                b.node("Add", &[&product, ins[2]], &[out], vec![]);
            }
            Op::LinearResidual { conditioned } => {
                let (product, branch) = (tmp("matmul"), tmp("branch"));
                matmul_transposed(b, self.target, ins[0], ins[1], &product, &tmp);
                b.node("Add", &[&product, ins[2]], &[&branch], vec![]);
                let branch = if *conditioned {
                    let (cond, per_token, with_cond) =
                        (tmp("cond_matmul"), tmp("cond"), tmp("branch_cond"));
                    matmul_transposed(b, self.target, ins[3], ins[4], &cond, &|s| {
                        tmp(&format!("cond_{s}"))
                    });
                    let axes = b.ints(&[1]);
                    b.node("Unsqueeze", &[&cond, &axes], &[&per_token], vec![]);
                    b.node("Add", &[&branch, &per_token], &[&with_cond], vec![]);
                    with_cond
                } else {
                    branch
                };
                b.node("Add", &[ins[0], &branch], &[out], vec![]);
            }
            Op::LayerNorm { eps } => {
                let width = last_dim(self.graph, n)?;
                let ones = b.floats(
                    &format!("ones[{width}]"),
                    dtype,
                    &[width],
                    &vec![1.0; width],
                );
                let attrs = vec![("axis", Attr::Int(-1)), ("epsilon", Attr::Float(*eps))];
                b.node("LayerNormalization", &[ins[0], &ones], &[out], attrs);
            }
            Op::RmsNorm { eps } => {
                // x / sqrt(mean(x²) + eps) · scale, written with Mul and Div: bf16 has no
                // Reciprocal kernel, and ORT's fusion of the Pow form fails to place in bf16.
                let (sq, ms, var, rms, normed) = (
                    tmp("square"),
                    tmp("mean"),
                    tmp("var"),
                    tmp("rms"),
                    tmp("normed"),
                );
                let axes = b.ints(&[-1]);
                let eps = b.floats(&format!("eps[{eps:e}]"), dtype, &[], &[*eps]);
                b.node("Mul", &[ins[0], ins[0]], &[&sq], vec![]);
                b.node(
                    "ReduceMean",
                    &[&sq, &axes],
                    &[&ms],
                    vec![("keepdims", Attr::Int(1))],
                );
                b.node("Add", &[&ms, &eps], &[&var], vec![]);
                b.node("Sqrt", &[&var], &[&rms], vec![]);
                b.node("Div", &[ins[0], &rms], &[&normed], vec![]);
                b.node("Mul", &[&normed, ins[1]], &[out], vec![]);
            }
            Op::Modulate => {
                let axes = b.ints(&[1]);
                let one = b.floats("one", dtype, &[], &[1.0]);
                let (shift, scale, gain, scaled) =
                    (tmp("shift"), tmp("scale"), tmp("gain"), tmp("scaled"));
                b.node("Unsqueeze", &[ins[1], &axes], &[&shift], vec![]);
                b.node("Unsqueeze", &[ins[2], &axes], &[&scale], vec![]);
                b.node("Add", &[&scale, &one], &[&gain], vec![]);
                b.node("Mul", &[ins[0], &gain], &[&scaled], vec![]);
                b.node("Add", &[&scaled, &shift], &[out], vec![]);
            }
            Op::GatedResidual => {
                let axes = b.ints(&[1]);
                let (gate, gated) = (tmp("gate"), tmp("gated"));
                b.node("Unsqueeze", &[ins[1], &axes], &[&gate], vec![]);
                b.node("Mul", &[&gate, ins[2]], &[&gated], vec![]);
                b.node("Add", &[ins[0], &gated], &[out], vec![]);
            }
            Op::Add => b.node("Add", &ins, &[out], vec![]),
            Op::Silu => {
                let sig = tmp("sigmoid");
                b.node("Sigmoid", &ins, &[&sig], vec![]);
                b.node("Mul", &[ins[0], &sig], &[out], vec![]);
            }
            Op::GeluTanh => b.node(
                "Gelu",
                &ins,
                &[out],
                vec![("approximate", Attr::Str("tanh"))],
            ),
            Op::Split { sizes } => {
                let sizes: Vec<i64> = sizes.iter().map(|&s| s as i64).collect();
                let split = b.ints(&sizes);
                let outs: Vec<&str> = outs.iter().map(String::as_str).collect();
                b.node(
                    "Split",
                    &[ins[0], &split],
                    &outs,
                    vec![("axis", Attr::Int(-1))],
                );
            }
            Op::ToHeads { heads } => {
                let shape = b.ints(&[0, 0, *heads as i64, -1]);
                let split = tmp("split");
                b.node("Reshape", &[ins[0], &shape], &[&split], vec![]);
                b.node(
                    "Transpose",
                    &[&split],
                    &[out],
                    vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
                );
            }
            Op::FromHeads => {
                let shape = b.ints(&[0, 0, -1]);
                let t = tmp("transposed");
                b.node(
                    "Transpose",
                    &ins,
                    &[&t],
                    vec![("perm", Attr::Ints(vec![0, 2, 1, 3]))],
                );
                b.node("Reshape", &[&t, &shape], &[out], vec![]);
            }
            Op::Concat { axis } => b.node(
                "Concat",
                &ins,
                &[out],
                vec![("axis", Attr::Int(*axis as i64))],
            ),
            Op::SplitLike { axis } => {
                // The split point is a run-time extent: the `like` input's length on `axis`.
                let (len, axis) = (tmp("split_at"), *axis as i64);
                let (zero, end, axes) = (b.ints(&[0]), b.ints(&[i64::MAX]), b.ints(&[axis]));
                let attrs = vec![("start", Attr::Int(axis)), ("end", Attr::Int(axis + 1))];
                b.node("Shape", &[ins[1]], &[&len], attrs);
                b.node("Slice", &[ins[0], &zero, &len, &axes], &[&outs[0]], vec![]);
                b.node("Slice", &[ins[0], &len, &end, &axes], &[&outs[1]], vec![]);
            }
            Op::Rope => {
                // Adjacent pairs (x0, x1) of each head rotate by the token's angle:
                // (x0 cos − x1 sin, x0 sin + x1 cos).
                let head_dim = last_dim(self.graph, n)? as i64;
                let pairs = b.ints(&[0, 0, 0, head_dim / 2, 2]);
                let back = b.ints(&[0, 0, 0, head_dim]);
                let (axes, halves) = (b.ints(&[-1]), b.ints(&[1, 1]));
                let t: Vec<String> = [
                    "pairs", "x0", "x1", "cos", "sin", "x0c", "x1s", "x0s", "x1c", "y0", "y1", "y",
                ]
                .iter()
                .map(|s| tmp(s))
                .collect();
                b.node("Reshape", &[ins[0], &pairs], &[&t[0]], vec![]);
                b.node(
                    "Split",
                    &[&t[0], &halves],
                    &[&t[1], &t[2]],
                    vec![("axis", Attr::Int(-1))],
                );
                b.node("Unsqueeze", &[ins[1], &axes], &[&t[3]], vec![]);
                b.node("Unsqueeze", &[ins[2], &axes], &[&t[4]], vec![]);
                b.node("Mul", &[&t[1], &t[3]], &[&t[5]], vec![]);
                b.node("Mul", &[&t[2], &t[4]], &[&t[6]], vec![]);
                b.node("Mul", &[&t[1], &t[4]], &[&t[7]], vec![]);
                b.node("Mul", &[&t[2], &t[3]], &[&t[8]], vec![]);
                b.node("Sub", &[&t[5], &t[6]], &[&t[9]], vec![]);
                b.node("Add", &[&t[7], &t[8]], &[&t[10]], vec![]);
                b.node(
                    "Concat",
                    &[&t[9], &t[10]],
                    &[&t[11]],
                    vec![("axis", Attr::Int(-1))],
                );
                b.node("Reshape", &[&t[11], &back], &[out], vec![]);
            }
            Op::Attention => {
                let head_dim = last_dim(self.graph, n)?;
                let scale = b.floats(
                    &format!("attention_scale[{head_dim}]"),
                    dtype,
                    &[],
                    &[1.0 / (head_dim as f32).sqrt()],
                );
                let (kt, scores, scaled, probs) =
                    (tmp("k_t"), tmp("scores"), tmp("scaled"), tmp("probs"));
                b.node(
                    "Transpose",
                    &[ins[1]],
                    &[&kt],
                    vec![("perm", Attr::Ints(vec![0, 1, 3, 2]))],
                );
                b.node("MatMul", &[ins[0], &kt], &[&scores], vec![]);
                b.node("Mul", &[&scores, &scale], &[&scaled], vec![]);
                b.node(
                    "Softmax",
                    &[&scaled],
                    &[&probs],
                    vec![("axis", Attr::Int(-1))],
                );
                b.node("MatMul", &[&probs, ins[2]], &[out], vec![]);
            }
            Op::TimestepEmbedding { dim, scale } => {
                // As diffusers computes it: the sigma scaled in f64, then the angles in f32 from
                // f32 frequencies exp(−ln(10000)·k/half). Its f32 rounding is part of the model
                // FLUX was trained as; a more exact embedding moves the output further away.
                let half = dim / 2;
                let log_period = -(10_000f64.ln()) as f32;
                let freqs: Vec<f32> = (0..half)
                    .map(|k| (log_period * k as f32 / half as f32).exp())
                    .collect();
                let freqs = b.floats(
                    &format!("timestep_freqs[{half}]"),
                    DType::F32,
                    &[half],
                    &freqs,
                );
                let factor = b.doubles(&format!("time_factor[{scale}]"), &[], &[f64::from(*scale)]);
                let axes = b.ints(&[1]);
                let t: Vec<String> = ["t64", "scaled64", "scaled", "column", "args", "cos", "sin"]
                    .iter()
                    .map(|s| tmp(s))
                    .collect();
                b.node(
                    "Cast",
                    &[ins[0]],
                    &[&t[0]],
                    vec![("to", Attr::Int(data_type(DType::F64) as i64))],
                );
                b.node("Mul", &[&t[0], &factor], &[&t[1]], vec![]);
                b.node(
                    "Cast",
                    &[&t[1]],
                    &[&t[2]],
                    vec![("to", Attr::Int(data_type(DType::F32) as i64))],
                );
                b.node("Unsqueeze", &[&t[2], &axes], &[&t[3]], vec![]);
                b.node("Mul", &[&t[3], &freqs], &[&t[4]], vec![]);
                b.node("Cos", &[&t[4]], &[&t[5]], vec![]);
                b.node("Sin", &[&t[4]], &[&t[6]], vec![]);
                b.node(
                    "Concat",
                    &[&t[5], &t[6]],
                    &[out],
                    vec![("axis", Attr::Int(1))],
                );
            }
            Op::RopeTable { axes_dim, theta } => {
                // Pair j of axis i turns by position·θ^(−2j/d_i), computed in f64 as diffusers
                // does. Each pair's position column is gathered and scaled elementwise (a MatMul
                // would run in TF32 on recent GPUs).
                let (mut columns, mut omegas) = (Vec::new(), Vec::new());
                for (axis, &d) in axes_dim.iter().enumerate() {
                    for j in 0..d / 2 {
                        columns.push(axis as i64);
                        omegas.push(f64::from(*theta).powf(-2.0 * j as f64 / d as f64));
                    }
                }
                let half = omegas.len();
                let columns = b.ints(&columns);
                let omegas = b.doubles(
                    &format!("rope_omegas[{axes_dim:?},{theta}]"),
                    &[half],
                    &omegas,
                );
                let to_f32 = || vec![("to", Attr::Int(data_type(DType::F32) as i64))];
                let t: Vec<String> = ["positions", "positions64", "angles", "cos64", "sin64"]
                    .iter()
                    .map(|s| tmp(s))
                    .collect();
                b.node(
                    "Gather",
                    &[ins[0], &columns],
                    &[&t[0]],
                    vec![("axis", Attr::Int(1))],
                );
                b.node(
                    "Cast",
                    &[&t[0]],
                    &[&t[1]],
                    vec![("to", Attr::Int(data_type(DType::F64) as i64))],
                );
                b.node("Mul", &[&t[1], &omegas], &[&t[2]], vec![]);
                b.node("Cos", &[&t[2]], &[&t[3]], vec![]);
                b.node("Sin", &[&t[2]], &[&t[4]], vec![]);
                b.node("Cast", &[&t[3]], &[&outs[0]], to_f32());
                b.node("Cast", &[&t[4]], &[&outs[1]], to_f32());
            }
        }
        Ok(())
    }
}

/// `x Wᵀ` for a weight stored `[out, in]`: ONNX Runtime's FusedMatMul with `transB` on the
/// CUDA target (no transposed copy of the weight), a Transpose and MatMul elsewhere.
fn matmul_transposed(
    b: &mut GraphBuilder,
    target: Target,
    x: &str,
    w: &str,
    out: &str,
    tmp: &dyn Fn(&str) -> String,
) {
    match target {
        Target::Cuda => {
            let attrs = vec![("transB", Attr::Int(1)), ("alpha", Attr::Float(1.0))];
            b.node_in("FusedMatMul", CONTRIB_DOMAIN, &[x, w], &[out], attrs);
        }
        Target::Portable => {
            let wt = tmp("weight_t");
            b.node(
                "Transpose",
                &[w],
                &[&wt],
                vec![("perm", Attr::Ints(vec![1, 0]))],
            );
            b.node("MatMul", &[x, &wt], &[out], vec![]);
        }
    }
}

fn last_dim(graph: &Graph, n: NodeIndex) -> Result<usize> {
    let node = graph.node(n);
    node.outputs[0]
        .last()
        .and_then(|d| d.known())
        .ok_or_else(|| Error::Internal(format!("`{}` has no known feature width", node.name)))
}
