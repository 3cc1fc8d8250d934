//! Running the model stage by stage (as calibration does) computes what the whole model does.

mod support;

use fastflux::compile::{CompileOptions, prepare};
use fastflux::metrics::relative_l2;
use fastflux::runtime::staged::StagedRunner;
use fastflux::tensor::read_f32_tensors;
use support::*;

#[test]
fn staged_run_matches_diffusers() {
    let options = CompileOptions {
        dtype: Some(fastflux::dtype::DType::F32),
        ..CompileOptions::new(golden("diffusers"))
    };
    let compiled = prepare(&options).unwrap();
    // Batch 1: two ONNX Runtime calls per stage, so the chunking is exercised too.
    let runner = StagedRunner::new(&compiled.graph, &compiled.ckpt, 1, 1);
    let blocks = runner.stages().iter().filter(|s| s.block.is_some()).count();
    assert_eq!(blocks, 6, "one stage per block");
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let outputs = runner.run(&inputs).unwrap();
    let (_, reference) = golden_io("expected.safetensors");
    let error = relative_l2(&outputs["latent"].data, &reference);
    assert!(error < 1e-5, "staged run: relative L2 error {error:.3e}");
}
