//! Writing an `InputSet` in the `--calib` format: every input under its ONNX name, samples
//! stacked on the batch axis, F32, so that `InputSet::load` reads back the same set.

use super::InputSet;
use crate::error::Result;
use crate::tensor::write_f32_tensors;
use std::collections::BTreeMap;
use std::path::Path;

impl InputSet {
    /// Writes the set to `path` (atomically), with `metadata` in the header (where it came
    /// from). Returns the file's size.
    pub fn save(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<u64> {
        write_f32_tensors(path, &self.tensors, metadata)
    }
}
