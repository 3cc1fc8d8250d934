//! The host tensor every executor speaks: a dense row-major f32 array with its graph name
//! (model inputs, outputs and the activations between stages are all float32), and reading such
//! tensors from a safetensors file and writing them to one.

use crate::dtype::DType;
use crate::dtype::decode_f32;
use crate::error::{Error, Result};
use crate::io::safetensors::SafetensorsFile;
use crate::io::{AtomicFile, SafetensorsWriter, TensorEntry};
use std::collections::BTreeMap;
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

/// Writes `tensors` as F32 to `path` (in the order given, with `metadata` in the header) as an
/// `AtomicFile`: nothing appears under `path` unless the whole file was written. Returns the
/// file's size. Every tensor's shape must describe its data.
pub fn write_f32_tensors(
    path: &Path,
    tensors: &[Tensor],
    metadata: &BTreeMap<String, String>,
) -> Result<u64> {
    let mut entries = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.shape.iter().product::<usize>() != t.data.len() {
            return Err(Error::Internal(format!(
                "tensor `{}` has shape {:?} but {} values",
                t.name,
                t.shape,
                t.data.len()
            )));
        }
        let (name, shape) = (t.name.clone(), t.shape.clone());
        entries.push(TensorEntry {
            name,
            dtype: DType::F32,
            shape,
        });
    }
    let mut out = SafetensorsWriter::create(AtomicFile::new(path)?, &entries, metadata)?;
    for t in tensors {
        let bytes: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
        out.write(&bytes)?;
    }
    out.finish()
}
