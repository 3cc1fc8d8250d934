//! The host tensor every executor speaks: a dense row-major f32 array with its graph name
//! (model inputs, outputs and the activations between stages are all float32), and reading such
//! tensors from a safetensors file.

use crate::dtype::decode_f32;
use crate::error::Result;
use crate::io::safetensors::SafetensorsFile;
use std::path::Path;

/// A dense row-major f32 tensor with its graph name. Backend-neutral: ONNX Runtime and any
/// other executor read and write it at the stage boundary.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Reads every tensor of a safetensors file as f32 (from any float dtype the crate reads: F64, F32,
/// F16, BF16, F8_E4M3), sorted by name. Errors name the file and the tensor.
pub fn read_f32_tensors(path: &Path) -> Result<Vec<Tensor>> {
    let file = SafetensorsFile::open(path)?;
    let mut tensors = Vec::with_capacity(file.tensors().len());
    // The file's tensors are a BTreeMap, so this is already in name order.
    for (name, info) in file.tensors() {
        let mut data = vec![0f32; info.numel()];
        decode_f32(info.dtype, file.bytes(info), &mut data);
        let (name, shape) = (name.clone(), info.shape.clone());
        tensors.push(Tensor { name, shape, data });
    }
    Ok(tensors)
}
