//! The lowered ONNX graph of tiny-dev, per target, pinned by snapshots: the full text dump
//! (nodes in order, attributes, constants) and the count of nodes per op type. A change to a
//! lowering rule shows here as a readable diff before it shows as different bytes.

mod support;

use fastflux::compile::{CompileOptions, prepare};
use fastflux::ir::Graph;
use fastflux::onnx::{Target, lowered_op_counts, lowered_text};
use support::*;

fn tiny_dev() -> Graph {
    let options = CompileOptions {
        dtype: Some(fastflux::dtype::DType::F32),
        axes_dim: Some(vec![4, 6, 6]),
        ..CompileOptions::new(golden("flux-bfl.safetensors"))
    };
    prepare(&options).unwrap().graph
}

fn op_counts(graph: &Graph, target: Target) -> String {
    lowered_op_counts(graph, target)
        .unwrap()
        .iter()
        .map(|(op, n)| format!("{op} {n}\n"))
        .collect()
}

#[test]
fn lowered_tiny_dev_cuda() {
    let graph = tiny_dev();
    insta::assert_snapshot!("tiny_dev_cuda", lowered_text(&graph, Target::Cuda).unwrap());
    insta::assert_snapshot!("tiny_dev_cuda_op_counts", op_counts(&graph, Target::Cuda));
}

#[test]
fn lowered_tiny_dev_portable() {
    let graph = tiny_dev();
    insta::assert_snapshot!(
        "tiny_dev_portable",
        lowered_text(&graph, Target::Portable).unwrap()
    );
    insta::assert_snapshot!(
        "tiny_dev_portable_op_counts",
        op_counts(&graph, Target::Portable)
    );
}

#[test]
fn the_dump_is_deterministic() {
    let graph = tiny_dev();
    for target in [Target::Cuda, Target::Portable] {
        assert_eq!(
            lowered_text(&graph, target).unwrap(),
            lowered_text(&tiny_dev(), target).unwrap()
        );
    }
}

/// How the targets differ, op family by op family: every `x Wᵀ` is one FusedMatMul instead of a
/// Transpose and a MatMul; each attention core is BranchwiseRMSNorm → RotaryEmbedding →
/// MultiHeadAttention on packed heads with no transposes, reshapes or softmax left; each
/// LayerNorm absorbs its modulation; a Linear followed by GELU becomes FusedMatMul → FastGelu.
#[test]
fn cuda_fuses_every_attention_core_norm_and_activation() {
    let graph = tiny_dev();
    let cuda = lowered_op_counts(&graph, Target::Cuda).unwrap();
    let portable = lowered_op_counts(&graph, Target::Portable).unwrap();
    let count = |counts: &std::collections::BTreeMap<String, usize>, op: &str| {
        counts.get(op).copied().unwrap_or(0)
    };
    // tiny-dev: 2 double blocks (2 streams each) and 4 single blocks.
    let attentions = 2 + 4;
    let rms_norms = 2 * attentions + 2 * 2;
    assert_eq!(count(&portable, "Softmax"), attentions);
    assert_eq!(count(&cuda, "com.microsoft.MultiHeadAttention"), attentions);
    assert_eq!(
        count(&cuda, "com.microsoft.RotaryEmbedding"),
        2 * attentions
    );
    assert_eq!(count(&portable, "ReduceMean"), rms_norms);
    assert_eq!(count(&cuda, "com.microsoft.BranchwiseRMSNorm"), rms_norms);
    for gone in [
        "Transpose",
        "Reshape",
        "Softmax",
        "ReduceMean",
        "Sqrt",
        "Div",
        "Sub",
        "MatMul",
    ] {
        assert_eq!(count(&cuda, gone), 0, "{gone} left in the cuda lowering");
    }
    // Two MatMuls per attention core, the rest are the linears.
    let linears = count(&portable, "MatMul") - 2 * attentions;
    assert_eq!(count(&cuda, "com.microsoft.FusedMatMul"), linears);
    assert_eq!(
        count(&cuda, "LayerNormalization"),
        count(&portable, "LayerNormalization")
    );
    // The double blocks' MLPs (2 per block) fuse their activation; the single blocks' do not.
    assert_eq!(count(&cuda, "com.microsoft.FastGelu"), 2 * 2);
    assert_eq!(
        count(&cuda, "com.microsoft.FastGelu") + count(&cuda, "Gelu"),
        count(&portable, "Gelu")
    );
    assert!(cuda.values().sum::<usize>() < portable.values().sum::<usize>() / 2);
}
