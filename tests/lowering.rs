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

/// The targets differ exactly where cuda.rs overrides the portable rules: each `x Wᵀ` is one
/// FusedMatMul instead of a Transpose and a MatMul.
#[test]
fn cuda_replaces_each_transposed_matmul_by_one_fused_matmul() {
    let graph = tiny_dev();
    let cuda = lowered_op_counts(&graph, Target::Cuda).unwrap();
    let portable = lowered_op_counts(&graph, Target::Portable).unwrap();
    let fused = cuda["com.microsoft.FusedMatMul"];
    assert!(fused > 0);
    assert!(!portable.contains_key("com.microsoft.FusedMatMul"));
    assert_eq!(portable["MatMul"], cuda["MatMul"] + fused);
    assert_eq!(
        portable["Transpose"],
        cuda.get("Transpose").copied().unwrap_or(0) + fused
    );
    for (op, n) in &cuda {
        if !matches!(
            op.as_str(),
            "com.microsoft.FusedMatMul" | "MatMul" | "Transpose"
        ) {
            assert_eq!(portable.get(op), Some(n), "{op}");
        }
    }
}
