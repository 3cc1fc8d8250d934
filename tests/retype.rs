//! Retyping the lifted model to f32 (what calibration runs) gives exactly the model that lifting
//! the checkpoint in f32 gives: the same IR dump and the same ONNX bytes.

mod support;

use fastflux::checkpoint::FluxCheckpoint;
use fastflux::dtype::DType;
use fastflux::lift::{LiftOptions, lift};
use fastflux::onnx::{self, Target};
use fastflux::passes::retype;
use support::*;

#[test]
fn retyped_lift_equals_the_f32_lift() {
    let ckpt = FluxCheckpoint::open(&golden("diffusers"), None).unwrap();
    let f32_graph = lift(&ckpt, LiftOptions { dtype: DType::F32 }).unwrap();
    let expected = onnx::to_embedded_bytes(&f32_graph, &ckpt, Target::Cuda).unwrap();
    for dtype in [DType::BF16, DType::F16, DType::F32] {
        let lifted = lift(&ckpt, LiftOptions { dtype }).unwrap();
        let retyped = retype::to_f32(&lifted).unwrap();
        assert_eq!(
            retyped.to_string(),
            f32_graph.to_string(),
            "IR dump of the {dtype} lift, retyped"
        );
        assert_eq!(retyped.block_io.len(), f32_graph.block_io.len());
        let bytes = onnx::to_embedded_bytes(&retyped, &ckpt, Target::Cuda).unwrap();
        assert!(bytes == expected, "ONNX of the {dtype} lift, retyped");
    }
}

#[test]
fn the_bf16_lift_has_casts_to_remove() {
    // Guards the test above: a lift without casts would make it pass trivially.
    let ckpt = FluxCheckpoint::open(&golden("diffusers"), None).unwrap();
    let lifted = lift(&ckpt, LiftOptions { dtype: DType::BF16 }).unwrap();
    assert!(lifted.to_string().contains("Cast"));
    assert!(
        !retype::to_f32(&lifted)
            .unwrap()
            .to_string()
            .contains("Cast")
    );
}
