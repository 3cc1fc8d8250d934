//! Export-time collapse of BRLL's fitted nodes. A replaced block is an affine map of its stream,
//! `x ↦ x (I+W)ᵀ + b [+ c Uᵀ]`, so a run of replaced blocks is one affine map per stream, and a
//! lone fitted node needs no separate shortcut. Two rules, each a function that reads the graph
//! and returns a patch (or nothing), driven to a fixed point by `run`:
//!
//! - `compose_run`: consecutive fitted nodes of one stream become one, composed in f64;
//! - `fold_shortcut`: a plain fitted node of an f32 export becomes one `Linear` whose matrix is
//!   `I + W`. In bf16 (f16) `I + W` would round its diagonal `1 + wᵢᵢ` in steps of 2⁻⁷ (2⁻¹⁰):
//!   on the trained toy's fits the branch `x Wᵀ` was then 0.77–0.91% off, against 0.16–0.17%
//!   for `W` rounded alone. There the node stays `x + x Wᵀ + b`, its shortcut exact. In f32 the
//!   folded diagonal is off by at most 2⁻²⁴, moving output `i` by at most 2⁻²⁴·|xᵢ|, what the
//!   unfolded form's shortcut Add rounds off anyway; folding saves that Add.
//!
//! The IR that calibration and `--verify` run stays uncollapsed; only the export sees this.

use super::patch::{Patch, PatchValue, apply};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ir::delta::fold;
use crate::ir::{BlockId, Graph, Op, TensorStore, Value, Weight, WeightData};
use ndarray::{Array1, Array2, ArrayView2};
use petgraph::stable_graph::NodeIndex;
use std::sync::Arc;

/// What `run` did: fitted nodes merged into the nodes of longer runs, and shortcuts folded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollapseReport {
    /// Fitted nodes that were absorbed into the node of a run (a run of k counts k).
    pub composed: usize,
    /// Fitted nodes exported as one `Linear` with the shortcut in the matrix (f32 exports only).
    pub folded: usize,
}

/// Applies the rules until none matches.
pub fn run(graph: &mut Graph, store: &dyn TensorStore) -> Result<CollapseReport> {
    let mut report = CollapseReport::default();
    while let Some((patch, merged, run_input)) = compose_run(graph, store)? {
        apply(graph, patch)?;
        mend_block_records(graph, run_input);
        report.composed += merged;
    }
    while let Some(patch) = fold_shortcut(graph, store)? {
        apply(graph, patch)?;
        report.folded += 1;
    }
    Ok(report)
}

/// After a run was composed, the values between its blocks are gone: a stream that left a block
/// there is dropped from the block's record (and a record with no stream left is dropped), and a
/// stream that entered a block there now enters at `run_input`, what the composed node reads.
/// Done at once, before anything is added to the graph again (a `StableGraph` reuses slots).
fn mend_block_records(graph: &mut Graph, run_input: Value) {
    let live = |g: &Graph, v: Value| {
        g.graph
            .node_weight(v.node)
            .is_some_and(|n| v.port < n.outputs.len())
    };
    let mut records = std::mem::take(&mut graph.block_io);
    for io in records.values_mut() {
        io.streams.retain(|s| live(graph, s.output));
        for s in &mut io.streams {
            if !live(graph, s.input) {
                s.input = run_input;
            }
        }
    }
    records.retain(|_, io| !io.streams.is_empty());
    graph.block_io = records;
}

// Matched: a chain of fitted nodes of one stream, each the only user of the one before, all
// plain or all conditioned on the same `c` (BRLL gives every block the same `silu(vec)`):
//
//     y₁ = LinearResidual(x,      W₁, b₁ [, c, U₁])
//     …
//     yₖ = LinearResidual(yₖ₋₁,  Wₖ, bₖ [, c, Uₖ])           k ≥ 2
//
// Rewritten, with Aᵢ = I + Wᵢ and everything in f64:
//
//     yₖ = LinearResidual(x, Aₖ⋯A₁ − I, b, [, c, U])  where b ← Aᵢ b + bᵢ, U ← Aᵢ U + Uᵢ
//
// (from yᵢ = yᵢ₋₁ Aᵢᵀ + bᵢ + c Uᵢᵀ), named after the run: `double_blocks.0-1.brll.img`.
fn compose_run(graph: &Graph, store: &dyn TensorStore) -> Result<Option<(Patch, usize, Value)>> {
    for n in graph.topo_order() {
        if !is_fitted(graph, n) || fitted_predecessor(graph, n).is_some() {
            continue;
        }
        let chain = chain_from(graph, n);
        if chain.len() < 2 {
            continue;
        }
        let run_input = graph.inputs(n)[0];
        return Ok(Some((
            compose(graph, store, &chain)?,
            chain.len(),
            run_input,
        )));
    }
    Ok(None)
}

// Matched:   y = LinearResidual(x, W, b)          (plain: not conditioned), W exported in f32
// Rewritten: y = Linear(x, I + W, b)              one GEMM plus bias, I + W formed in f64
//
// A conditioned node keeps its form: its per-sample term `c Uᵀ` is broadcast over the tokens,
// which `Linear` cannot express, so its lowering adds it (and the shortcut) after the product.
fn fold_shortcut(graph: &Graph, store: &dyn TensorStore) -> Result<Option<Patch>> {
    let Some(n) = graph.topo_order().into_iter().find(|&n| {
        matches!(graph.node(n).op, Op::LinearResidual { conditioned: false })
            && exports_in_f32(graph, n)
    }) else {
        return Ok(None);
    };
    let node = graph.node(n);
    let ins = graph.inputs(n);
    let fitted = Fitted::read(graph, store, n)?;
    let mut matrix = fitted.weight;
    matrix.diag_mut().mapv_inplace(|w| w + 1.0);
    let mut patch = Patch::default();
    let (ty, block) = (fitted.dtype, node.block);
    let name = format!("{}.affine", node.name);
    let w = owned(&mut patch, &name, "weight", matrix.view(), ty, block)?;
    let b = owned_vector(&mut patch, &name, "bias", &fitted.bias, ty, block);
    let out = patch.add(Op::Linear, name, block, &[PatchValue::Old(ins[0]), w, b]);
    patch.replace(Value { node: n, port: 0 }, out);
    Ok(Some(patch))
}

/// Whether the fitted node `n`'s matrix is exported in f32, where `I + W` rounds finely enough.
fn exports_in_f32(graph: &Graph, n: NodeIndex) -> bool {
    let matrix = graph.inputs(n)[1].node;
    matches!(&graph.node(matrix).op, Op::Weight(w) if w.dtype == DType::F32)
}

fn is_fitted(graph: &Graph, n: NodeIndex) -> bool {
    matches!(graph.node(n).op, Op::LinearResidual { .. })
}

/// The fitted node whose output `n` reads as its stream, when `n` is that output's only user
/// and both are conditioned alike (on the same value).
fn fitted_predecessor(graph: &Graph, n: NodeIndex) -> Option<NodeIndex> {
    let x = graph.inputs(n)[0];
    let prev = x.node;
    let composable = is_fitted(graph, prev)
        && graph.users(x) == [(n, 0)]
        && !graph.outputs.iter().any(|(_, v)| *v == x)
        && same_condition(graph, prev, n);
    composable.then_some(prev)
}

fn same_condition(graph: &Graph, a: NodeIndex, b: NodeIndex) -> bool {
    let (Op::LinearResidual { conditioned: ca }, Op::LinearResidual { conditioned: cb }) =
        (&graph.node(a).op, &graph.node(b).op)
    else {
        return false;
    };
    ca == cb && (!ca || graph.inputs(a)[3] == graph.inputs(b)[3])
}

/// `head` and the fitted nodes that follow it one after the other.
fn chain_from(graph: &Graph, head: NodeIndex) -> Vec<NodeIndex> {
    let mut chain = vec![head];
    loop {
        let last = *chain.last().expect("not empty");
        let next = graph
            .users(Value {
                node: last,
                port: 0,
            })
            .into_iter()
            .map(|(user, _)| user)
            .find(|&user| is_fitted(graph, user) && fitted_predecessor(graph, user) == Some(last));
        match next {
            Some(user) => chain.push(user),
            None => return chain,
        }
    }
}

fn compose(graph: &Graph, store: &dyn TensorStore, chain: &[NodeIndex]) -> Result<Patch> {
    let first = Fitted::read(graph, store, chain[0])?;
    let width = first.bias.len();
    let mut a = Array2::<f64>::eye(width);
    let mut b = Array1::<f64>::zeros(width);
    let mut u = first
        .cond
        .as_ref()
        .map(|u| Array2::<f64>::zeros(u.raw_dim()));
    for (i, &n) in chain.iter().enumerate() {
        let f = if i == 0 {
            first.clone()
        } else {
            Fitted::read(graph, store, n)?
        };
        if f.bias.len() != width {
            return Err(Error::Internal(format!(
                "collapse: `{}` is {} wide, the run it ends is {width}",
                graph.node(n).name,
                f.bias.len()
            )));
        }
        // Aᵢ M = M + Wᵢ M, for M = A (then b, U) of the run so far.
        a = &a + &f.weight.dot(&a);
        b = &b + &f.weight.dot(&b) + &f.bias;
        if let (Some(u), Some(ui)) = (u.as_mut(), f.cond.as_ref()) {
            *u = &*u + &f.weight.dot(&*u) + ui;
        }
    }
    a.diag_mut().mapv_inplace(|v| v - 1.0);
    let head = graph.node(chain[0]);
    let tail_node = *chain.last().expect("a run");
    let tail = graph.node(tail_node);
    let name = run_name(&head.name, head.block, tail.block)?;
    let (ty, block) = (first.dtype, tail.block);
    let mut patch = Patch::default();
    let mut inputs = vec![
        PatchValue::Old(graph.inputs(chain[0])[0]),
        owned(&mut patch, &name, "weight", a.view(), ty, block)?,
        owned_vector(&mut patch, &name, "bias", &b, ty, block),
    ];
    if let Some(u) = &u {
        inputs.push(PatchValue::Old(graph.inputs(chain[0])[3]));
        inputs.push(owned(
            &mut patch,
            &name,
            "cond_weight",
            u.view(),
            ty,
            block,
        )?);
    }
    let conditioned = u.is_some();
    let out = patch.add(Op::LinearResidual { conditioned }, name, block, &inputs);
    patch.replace(
        Value {
            node: tail_node,
            port: 0,
        },
        out,
    );
    Ok(patch)
}

/// `double_blocks.0.brll.img` … `double_blocks.1` → `double_blocks.0-1.brll.img`.
fn run_name(head: &str, first: Option<BlockId>, last: Option<BlockId>) -> Result<String> {
    let stream = head.find(".brll").map(|at| &head[at..]);
    match (first, last, stream) {
        (Some(BlockId::Double(i)), Some(BlockId::Double(j)), Some(s)) => {
            Ok(format!("double_blocks.{i}-{j}{s}"))
        }
        (Some(BlockId::Single(i)), Some(BlockId::Single(j)), Some(s)) => {
            Ok(format!("single_blocks.{i}-{j}{s}"))
        }
        _ => Err(Error::Internal(format!(
            "collapse: a run from `{head}` spans {first:?} to {last:?}"
        ))),
    }
}

/// A fitted node's parameters in f64, LoRA deltas folded in, and the type its weights export in.
#[derive(Clone)]
struct Fitted {
    /// `W [h, h]`.
    weight: Array2<f64>,
    bias: Array1<f64>,
    /// `U [h, k]` of a conditioned fit.
    cond: Option<Array2<f64>>,
    dtype: DType,
}

impl Fitted {
    fn read(graph: &Graph, store: &dyn TensorStore, n: NodeIndex) -> Result<Self> {
        let ins = graph.inputs(n);
        let param = |slot: usize| -> Result<(Vec<usize>, Vec<f64>, DType)> {
            let node = graph.node(ins[slot].node);
            let Op::Weight(w) = &node.op else {
                return Err(Error::Internal(format!(
                    "collapse: input {slot} of `{}` is `{}`, not a weight",
                    graph.node(n).name,
                    node.name
                )));
            };
            let values = values_of(w, store)?;
            Ok((w.shape.clone(), values, w.dtype))
        };
        let matrix = |slot: usize| -> Result<Array2<f64>> {
            let (shape, values, _) = param(slot)?;
            let &[rows, cols] = &shape[..] else {
                return Err(Error::Internal(format!(
                    "collapse: a fitted matrix of shape {shape:?}"
                )));
            };
            Array2::from_shape_vec((rows, cols), values)
                .map_err(|e| Error::Internal(format!("collapse: {e}")))
        };
        let (_, bias, dtype) = param(2)?;
        let conditioned = matches!(graph.node(n).op, Op::LinearResidual { conditioned: true });
        Ok(Self {
            weight: matrix(1)?,
            bias: Array1::from(bias),
            cond: if conditioned { Some(matrix(4)?) } else { None },
            dtype,
        })
    }
}

/// A weight's values with its deltas folded, as `Weight::write_bytes` would export them
/// before the cast to the export type.
fn values_of(w: &Weight, store: &dyn TensorStore) -> Result<Vec<f64>> {
    let mut values = w.to_f32(store)?;
    if !w.deltas.is_empty() {
        fold(&w.name, &w.shape, w.dtype, &w.deltas, &mut values)?;
    }
    Ok(values.into_iter().map(f64::from).collect())
}

/// Adds `@<name>.<suffix>`, the matrix `m` rounded to f32, exported as `dtype`.
fn owned(
    patch: &mut Patch,
    name: &str,
    suffix: &str,
    m: ArrayView2<f64>,
    dtype: DType,
    block: Option<BlockId>,
) -> Result<PatchValue> {
    let values: Vec<f32> = m.iter().map(|&v| v as f32).collect();
    Ok(weight(
        patch,
        name,
        suffix,
        m.shape().to_vec(),
        values,
        dtype,
        block,
    ))
}

fn owned_vector(
    patch: &mut Patch,
    name: &str,
    suffix: &str,
    v: &Array1<f64>,
    dtype: DType,
    block: Option<BlockId>,
) -> PatchValue {
    let values: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    weight(patch, name, suffix, vec![v.len()], values, dtype, block)
}

fn weight(
    patch: &mut Patch,
    name: &str,
    suffix: &str,
    shape: Vec<usize>,
    values: Vec<f32>,
    dtype: DType,
    block: Option<BlockId>,
) -> PatchValue {
    let full = format!("{name}.{suffix}");
    let data = WeightData::Owned(Arc::new(values));
    let w = Weight::new(full.clone(), shape, dtype, data);
    patch.add(Op::Weight(w), full, block, &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::types::{Dim, TensorType};
    use crate::ir::{Piece, StoredTensor};

    /// Owned weights only: nothing to read.
    struct NoStore;

    impl TensorStore for NoStore {
        fn piece_bytes(&self, piece: &Piece) -> Result<(&[u8], DType)> {
            Err(Error::Internal(format!("no store: {}", piece.key)))
        }
        fn release(&self, _: &StoredTensor) {}
    }

    fn weight(g: &mut Graph, name: &str, shape: Vec<usize>, values: Vec<f32>) -> Value {
        let w = Weight::new(name, shape, DType::F32, WeightData::Owned(Arc::new(values)));
        g.add1(Op::Weight(w), name, None, &[]).unwrap()
    }

    fn values(g: &Graph, v: Value) -> Vec<f32> {
        match &g.node(v.node).op {
            Op::Weight(w) => w.to_f32(&NoStore).unwrap(),
            op => panic!("not a weight: {:?}", op.kind()),
        }
    }

    #[test]
    fn two_fitted_blocks_become_one_product_with_the_shortcut_folded() {
        // y = x + x W₁ᵀ + b₁, z = y + y W₂ᵀ + b₂, worked by hand:
        //   I+W₁ = [[2, 1], [0, 1]], I+W₂ = [[1, 0], [3, 1]],
        //   (I+W₂)(I+W₁) = [[2, 1], [6, 4]],  (I+W₂) b₁ + b₂ = [1, 3] + [0, 1] = [1, 4].
        let mut g = Graph::new();
        let dims = [1, 3, 2].map(Dim::Known).to_vec();
        let input = Op::Input {
            name: "x".into(),
            ty: TensorType::new(DType::F32, dims),
        };
        let x = g.add1(input, "x", None, &[]).unwrap();
        let mut y = x;
        for (i, (w, b)) in [
            (vec![1.0, 1.0, 0.0, 0.0], vec![1.0, 0.0]),
            (vec![0.0, 0.0, 3.0, 0.0], vec![0.0, 1.0]),
        ]
        .into_iter()
        .enumerate()
        {
            let block = Some(BlockId::Single(i));
            let name = format!("single_blocks.{i}.brll");
            let w = weight(&mut g, &format!("{name}.weight"), vec![2, 2], w);
            let b = weight(&mut g, &format!("{name}.bias"), vec![2], b);
            let op = Op::LinearResidual { conditioned: false };
            y = g.add1(op, name, block, &[y, w, b]).unwrap();
        }
        g.output("out", y);

        let report = run(&mut g, &NoStore).unwrap();
        assert_eq!(
            report,
            CollapseReport {
                composed: 2,
                folded: 1
            }
        );
        let out = g.outputs[0].1;
        let node = g.node(out.node);
        assert_eq!(node.name, "single_blocks.0-1.brll.affine");
        assert!(matches!(node.op, Op::Linear));
        let ins = g.inputs(out.node);
        assert_eq!(ins[0], x);
        assert_eq!(values(&g, ins[1]), [2.0, 1.0, 6.0, 4.0]);
        assert_eq!(values(&g, ins[2]), [1.0, 4.0]);
        assert_eq!(
            g.graph.node_count(),
            4,
            "x, the product's weight and bias, the product"
        );
    }
}
