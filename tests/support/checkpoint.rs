//! Reading and writing variants of safetensors checkpoints: every tensor of a file, owned so that
//! a test can rename, reshape, drop or convert it; a file's header and data taken apart and put
//! back together (possibly edited into nonsense); and synthetic FLUX-shaped checkpoints.

use fastflux::checkpoint::FluxConfig;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::path::Path;

/// One tensor of a checkpoint as stored: its type and raw little-endian bytes.
#[derive(Clone, Debug)]
pub struct StoredTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl StoredTensor {
    /// The values of an F32 tensor.
    pub fn f32_values(&self) -> Vec<f32> {
        assert_eq!(self.dtype, Dtype::F32, "{} is not F32", self.name);
        self.data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    pub fn from_f32(name: &str, shape: Vec<usize>, values: &[f32]) -> Self {
        Self {
            name: name.to_owned(),
            dtype: Dtype::F32,
            shape,
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        }
    }
}

/// Every tensor of a safetensors file, sorted by name.
pub fn read_tensors(path: &Path) -> Vec<StoredTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).expect("a valid safetensors file");
    let mut tensors: Vec<StoredTensor> = file
        .iter()
        .map(|(name, view)| StoredTensor {
            name: name.to_owned(),
            dtype: view.dtype(),
            shape: view.shape().to_vec(),
            data: view.data().to_vec(),
        })
        .collect();
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    tensors
}

/// Writes `tensors` as a well-formed safetensors file (the `safetensors` crate's own writer).
pub fn write_tensors(path: &Path, tensors: &[StoredTensor]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let view = TensorView::new(t.dtype, t.shape.clone(), &t.data)
                .unwrap_or_else(|e| panic!("tensor {}: {e}", t.name));
            (t.name.as_str(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).expect("safetensors written");
}

/// A safetensors file split into its JSON header and its data section.
pub fn split_safetensors(bytes: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = serde_json::from_slice(&bytes[8..8 + n]).expect("JSON header");
    (header, bytes[8 + n..].to_vec())
}

/// Reassembles a safetensors file from a header (possibly edited into nonsense) and data.
pub fn join_safetensors(header: &serde_json::Value, data: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(header).unwrap();
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    out
}

/// Writes a FLUX-shaped f32 checkpoint in BFL naming with deterministic pseudo-random values:
/// every parameter `FluxConfig::parameters` lists for `config`.
pub fn synthetic_checkpoint(path: &Path, config: &FluxConfig) {
    let mut rng = fastflux::rng::Rng::new(0, 0);
    let tensors: Vec<StoredTensor> = config
        .parameters()
        .into_iter()
        .map(|(name, shape)| {
            let fan_in = *shape.last().unwrap() as f32;
            let data = (0..shape.iter().product::<usize>())
                .flat_map(|_| {
                    let uniform = rng.uniform() as f32 - 0.5;
                    (uniform * 3.4 / fan_in.sqrt()).to_le_bytes()
                })
                .collect();
            StoredTensor {
                name,
                dtype: Dtype::F32,
                shape,
                data,
            }
        })
        .collect();
    write_tensors(path, &tensors);
}

/// A FLUX-like configuration of the given width and depth (head width 128, FLUX's RoPE axes).
pub fn flux_like(hidden: usize, double_blocks: usize, single_blocks: usize) -> FluxConfig {
    FluxConfig::builder()
        .hidden(hidden)
        .head_dim(128)
        .blocks(double_blocks, single_blocks)
        .channels(64, 64)
        .context_dim(256)
        .pooled_dim(64)
        .guidance(false)
        .axes_dim(vec![16, 56, 56])
        .build()
}
