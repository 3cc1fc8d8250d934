//! Running a compiled model in ONNX Runtime on the golden inputs, and the golden references to
//! compare its output with.

use super::paths::golden;
use fastflux::runtime;
use fastflux::tensor::{self, Tensor};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// The reference output in the golden `file`: `output_f64` (diffusers in float64) where the
/// file has it, else its f32 `output`.
pub fn golden_reference(file: &str) -> Vec<f64> {
    let bytes = std::fs::read(golden(file)).expect("golden reference");
    let tensors = SafeTensors::deserialize(&bytes).expect("safetensors");
    if let Ok(f64s) = tensors.tensor("output_f64") {
        return f64s
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
    }
    let output = tensors
        .tensor("output")
        .unwrap_or_else(|_| panic!("{file} holds no `output`"));
    assert_eq!(output.dtype(), Dtype::F32, "{file}: `output` is not F32");
    output
        .data()
        .chunks_exact(4)
        .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
        .collect()
}

/// The golden inputs, and the reference output in `expected_file`.
pub fn golden_io(expected_file: &str) -> (Vec<Tensor>, Vec<f64>) {
    let inputs = tensor::read_f32_tensors(&golden("inputs.safetensors")).expect("golden inputs");
    (inputs, golden_reference(expected_file))
}

/// Runs a compiled model on the golden inputs; returns `latent`.
pub fn run_golden(model: &Path) -> Vec<f32> {
    let inputs = tensor::read_f32_tensors(&golden("inputs.safetensors")).expect("golden inputs");
    let outputs = runtime::run_model_file(model, &inputs, 2).expect("model runs in ONNX Runtime");
    outputs
        .into_iter()
        .find(|t| t.name == "latent")
        .expect("output `latent`")
        .data
}

/// Whether the ONNX Runtime build the tests load ships the CUDA provider, read off the files
/// beside the library (the GPU wheel puts `libonnxruntime_providers_cuda.so` next to
/// `libonnxruntime`, the CPU wheel does not) rather than asked of the library, as
/// `runtime::ort::cuda_available` does.
pub fn ships_cuda_provider() -> bool {
    let library = runtime::ort::library_path().unwrap();
    let folder = library.parent().unwrap();
    folder.join("libonnxruntime_providers_cuda.so").is_file()
}
