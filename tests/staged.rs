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

#[test]
fn the_ort_backend_on_auto_runs_what_the_cpu_runs() {
    use fastflux::runtime::{ExecutionProvider, OrtBackend, ort::cuda_available};
    let options = CompileOptions {
        dtype: Some(fastflux::dtype::DType::F32),
        ..CompileOptions::new(golden("diffusers"))
    };
    let compiled = prepare(&options).unwrap();
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let run = |backend: OrtBackend| {
        let runner = StagedRunner::with_backend(&compiled.graph, &compiled.ckpt, backend, 2);
        runner
            .run(&inputs)
            .map(|mut out| out.remove("latent").unwrap())
    };
    let cpu = run(OrtBackend::cpu(1)).unwrap();
    let auto = OrtBackend::new(1, ExecutionProvider::Auto).unwrap();
    if auto.provider() == ExecutionProvider::Cpu {
        assert_eq!(run(auto).unwrap(), cpu, "Auto without CUDA is the CPU");
    }
    if !cuda_available().unwrap() {
        // Asked for explicitly, a missing CUDA provider is an error, not a silent CPU run.
        let cuda = OrtBackend::new(1, ExecutionProvider::Cuda).unwrap();
        let err = run(cuda).unwrap_err().to_string();
        assert!(
            err.starts_with("ONNX Runtime: ") && err.contains("CUDA"),
            "{err}"
        );
    }
}
