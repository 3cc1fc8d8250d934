//! Editing LoRA files into new variants: a golden LoRA file's tensors (all f32) and header
//! metadata, read into a map to change, and written back out.

use super::paths::golden;
use fastflux::tensor::{self, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A LoRA file's tensors and header metadata, to edit.
pub struct Lora {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: Option<HashMap<String, String>>,
}

impl Lora {
    /// A LoRA file with no tensors and no metadata, to fill.
    pub fn empty() -> Self {
        Self {
            tensors: BTreeMap::new(),
            metadata: None,
        }
    }

    /// The golden LoRA `file`.
    pub fn read(file: &str) -> Self {
        let path = golden(file);
        let bytes = std::fs::read(&path).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let tensors = tensor::read_f32_tensors(&path).unwrap();
        Self {
            tensors: tensors.into_iter().map(|t| (t.name.clone(), t)).collect(),
            metadata: header.metadata().clone(),
        }
    }

    pub fn insert(&mut self, name: &str, shape: Vec<usize>, data: Vec<f32>) {
        let name = name.to_owned();
        self.tensors
            .insert(name.clone(), Tensor { name, shape, data });
    }

    pub fn take(&mut self, name: &str) -> Tensor {
        self.tensors
            .remove(name)
            .unwrap_or_else(|| panic!("no `{name}`"))
    }

    pub fn get_mut(&mut self, name: &str) -> &mut Tensor {
        self.tensors.get_mut(name).unwrap()
    }

    /// Writes the file into `dir` as `name`; returns its path as a string for the command line.
    pub fn write(&self, dir: &Path, name: &str) -> String {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = self
            .tensors
            .values()
            .map(|t| {
                let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
                (t.name.clone(), t.shape.clone(), b)
            })
            .collect();
        let views = bytes.iter().map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (n.clone(), view.unwrap())
        });
        let path = dir.join(name);
        safetensors::serialize_to_file(views, self.metadata.clone(), &path).unwrap();
        path.to_str().unwrap().to_owned()
    }
}
