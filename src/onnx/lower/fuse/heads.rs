//! Packing the head layout away: the lifter's attention works on heads `[B,H,S,D]` between a
//! ToHeads after the q/k/v projections and a FromHeads before the output projection. This
//! fusion gives every value of that chain a twin on packed heads `[B,S,H·D]` (the projection's
//! own layout) and moves the FromHeads' readers onto the twin, so the chain needs no transposes.

use super::fused_name;
use crate::error::Result;
use crate::ir::{Graph, Op, Value};
use crate::passes::{Patch, PatchValue};
use std::collections::HashMap;

/// ```text
/// q = ToHeads{H}(x)                      → x itself
/// RmsNorm{eps}(q, scale)                 → PackedRmsNorm{H, eps}(x, scale)
/// Concat{axis 2}(a, b)   (on tokens)     → Concat{axis 1}(a', b')
/// Rope(q, cos, sin)                      → PackedRope{H}(q', cos, sin)
/// Attention(q, k, v)                     → PackedAttention{H}(q', k', v')
/// y = FromHeads(o)                       → y's readers read o'
/// ```
/// A value gets a twin only when every head-layout input of its node has one, with one head
/// count; a FromHeads whose input has none keeps its chain as it is (correct, not fused). The
/// old chain is left to `apply`'s removal of dead nodes. One patch for the whole graph.
pub(super) fn pack_heads(graph: &Graph) -> Result<Option<Patch>> {
    let mut patch = Patch::default();
    // Head-layout value → (its packed twin, the head count).
    let mut twin: HashMap<Value, (PatchValue, usize)> = HashMap::new();
    let mut merged = 0;
    for n in graph.topo_order() {
        let node = graph.node(n);
        let ins = graph.inputs(n);
        let out = Value { node: n, port: 0 };
        match node.op {
            Op::ToHeads { heads } => {
                twin.insert(out, (PatchValue::Old(ins[0]), heads));
                continue;
            }
            Op::FromHeads => {
                if let Some(&(o, _)) = twin.get(&ins[0]) {
                    patch.replace(out, o);
                    merged += 1;
                }
                continue;
            }
            _ => {}
        }
        let on_heads = inputs_on_heads(&node.op);
        let Some((mut inputs, heads)) = twins_of(&twin, &ins[..on_heads.min(ins.len())]) else {
            continue;
        };
        let Some(op) = packed_op(&node.op, heads) else {
            continue;
        };
        inputs.extend(ins[on_heads..].iter().map(|&v| PatchValue::Old(v)));
        let v = patch.add(op, fused_name(&node.name, "packed"), node.block, &inputs);
        twin.insert(out, (v, heads));
    }
    Ok((merged > 0).then_some(patch))
}

/// How many leading inputs of `op` are on heads (the others pass as they are).
fn inputs_on_heads(op: &Op) -> usize {
    match op {
        Op::RmsNorm { .. } | Op::Rope => 1,
        Op::Concat { axis: 2 } => 2,
        Op::Attention => 3,
        _ => 0,
    }
}

/// `op`'s form on packed heads.
fn packed_op(op: &Op, heads: usize) -> Option<Op> {
    Some(match op {
        Op::RmsNorm { eps } => Op::PackedRmsNorm { heads, eps: *eps },
        // Tokens are axis 2 of [B,H,S,D] and axis 1 of [B,S,H·D].
        Op::Concat { axis: 2 } => Op::Concat { axis: 1 },
        Op::Rope => Op::PackedRope { heads },
        Op::Attention => Op::PackedAttention { heads },
        _ => return None,
    })
}

/// The twins of `values` when each has one, all with one head count.
fn twins_of(
    twin: &HashMap<Value, (PatchValue, usize)>,
    values: &[Value],
) -> Option<(Vec<PatchValue>, usize)> {
    let found: Vec<(PatchValue, usize)> = values
        .iter()
        .map(|v| twin.get(v).copied())
        .collect::<Option<_>>()?;
    let heads = found.first()?.1;
    found
        .iter()
        .all(|&(_, h)| h == heads)
        .then(|| (found.iter().map(|&(p, _)| p).collect(), heads))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;
    use crate::ir::{Dim, TensorType, Weight, WeightData};
    use crate::passes::apply;
    use std::sync::Arc;

    /// x `[B,S,8]` → ToHeads{2} → RmsNorm → Rope → Attention(q, q, v) → FromHeads → `out`;
    /// `extra` also feeds the rotated heads to a node the fusion does not know.
    fn chain(extra: bool) -> Graph {
        let mut g = Graph::new();
        let input = |g: &mut Graph, name: &str, shape: Vec<Dim>| {
            let ty = TensorType::new(DType::F32, shape);
            let op = Op::Input {
                name: name.into(),
                ty,
            };
            g.add1(op, name, None, &[]).unwrap()
        };
        let (b, s) = (Dim::sym("B"), Dim::sym("S"));
        let x = input(&mut g, "x", vec![b.clone(), s.clone(), Dim::Known(8)]);
        let cos = input(&mut g, "cos", vec![s.clone(), Dim::Known(2)]);
        let sin = input(&mut g, "sin", vec![s, Dim::Known(2)]);
        let data = WeightData::Owned(Arc::new(vec![1.0; 4]));
        let scale = Op::Weight(Weight::new("scale", vec![4], DType::F32, data));
        let scale = g.add1(scale, "scale", None, &[]).unwrap();
        let q = g.add1(Op::ToHeads { heads: 2 }, "q", None, &[x]).unwrap();
        let q = g
            .add1(Op::RmsNorm { eps: 1e-6 }, "norm", None, &[q, scale])
            .unwrap();
        let q = g.add1(Op::Rope, "rope", None, &[q, cos, sin]).unwrap();
        let v = g.add1(Op::ToHeads { heads: 2 }, "v", None, &[x]).unwrap();
        let o = g.add1(Op::Attention, "attn", None, &[q, q, v]).unwrap();
        let out = g.add1(Op::FromHeads, "merge", None, &[o]).unwrap();
        g.output("out", out);
        if extra {
            let other = g.add1(Op::Silu, "unknown", None, &[q]).unwrap();
            g.output("other", other);
        }
        g
    }

    fn kinds(g: &Graph) -> Vec<&'static str> {
        g.topo_order()
            .into_iter()
            .map(|n| g.node(n).op.kind().name())
            .collect()
    }

    #[test]
    fn the_head_chain_becomes_packed_ops_with_no_layout_changes() {
        let mut g = chain(false);
        let patch = pack_heads(&g).unwrap().expect("a chain to pack");
        apply(&mut g, patch).unwrap();
        let kinds = kinds(&g);
        for gone in ["ToHeads", "FromHeads", "RmsNorm", "Rope", "Attention"] {
            assert!(!kinds.contains(&gone), "{gone} left: {kinds:?}");
        }
        for packed in ["PackedRmsNorm", "PackedRope", "PackedAttention"] {
            assert!(kinds.contains(&packed), "{packed} missing: {kinds:?}");
        }
        let out = g.outputs[0].1;
        assert_eq!(g.ty(out).to_string(), "f32[B,S,8]");
        assert_eq!(g.node(out.node).op.kind().name(), "PackedAttention");
    }

    #[test]
    fn a_head_value_read_elsewhere_keeps_its_chain_for_that_reader() {
        let mut g = chain(true);
        let patch = pack_heads(&g).unwrap().expect("a chain to pack");
        apply(&mut g, patch).unwrap();
        let kinds = kinds(&g);
        // The attention is packed; the rotated heads the unknown reader needs stay computed.
        assert!(kinds.contains(&"PackedAttention"), "{kinds:?}");
        assert!(
            kinds.contains(&"Rope") && kinds.contains(&"ToHeads"),
            "{kinds:?}"
        );
        let other = g.outputs[1].1;
        assert_eq!(g.node(other.node).op.kind().name(), "Silu");
    }

    #[test]
    fn nothing_on_heads_means_no_patch() {
        let mut g = Graph::new();
        let ty = TensorType::new(DType::F32, vec![Dim::Known(1), Dim::Known(4)]);
        let op = Op::Input {
            name: "x".into(),
            ty,
        };
        let x = g.add1(op, "x", None, &[]).unwrap();
        let y = g.add1(Op::Silu, "y", None, &[x]).unwrap();
        g.output("y", y);
        assert!(pack_heads(&g).unwrap().is_none());
    }
}
