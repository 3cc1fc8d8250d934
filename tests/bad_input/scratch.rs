//! The scratch folder every test of this binary compiles in, and the edits that make a defective
//! variant of the golden model: of its BFL file, of a copy of its diffusers folder, of a tensor.

use crate::support::*;
use std::path::{Path, PathBuf};
use tempfile::TempDir;

/// A scratch folder with an empty `out/` that the compiler is pointed at.
pub struct Scratch {
    pub dir: TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        let dir = TempDir::new().unwrap();
        std::fs::create_dir(dir.path().join("out")).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn out_dir(&self) -> PathBuf {
        self.path("out")
    }

    pub fn output(&self) -> PathBuf {
        self.out_dir().join("model.onnx")
    }

    /// Compiles `checkpoint` to `out/model.onnx`, with the tiny model's RoPE axes so that only
    /// the defect under test can stop it.
    pub fn compile(&self, checkpoint: &Path) -> Outcome {
        self.compile_to(checkpoint, &self.output())
    }

    /// Compiles `checkpoint` to `output`, with the tiny model's RoPE axes.
    pub fn compile_to(&self, checkpoint: &Path, output: &Path) -> Outcome {
        compile(&[
            checkpoint.as_os_str(),
            "-o".as_ref(),
            output.as_os_str(),
            "--axes-dim".as_ref(),
            TINY_AXES.as_ref(),
            "-q".as_ref(),
        ])
    }

    /// Neither `model.onnx`, nor `model.onnx.data`, nor any temporary file was left in `out/`.
    pub fn assert_nothing_written(&self) {
        let left = listing(&self.out_dir());
        assert!(left.is_empty(), "the output folder holds {left:?}");
    }

    /// Writes the golden BFL tensors, edited by `edit`, to `name`.
    pub fn bfl_variant(&self, name: &str, edit: impl FnOnce(&mut Vec<StoredTensor>)) -> PathBuf {
        let mut tensors = read_tensors(&golden("flux-bfl.safetensors"));
        edit(&mut tensors);
        let path = self.path(name);
        write_tensors(&path, &tensors);
        path
    }

    /// A copy of the golden diffusers folder, in `diffusers/`.
    pub fn diffusers_copy(&self) -> PathBuf {
        let folder = self.path("diffusers");
        std::fs::create_dir(&folder).unwrap();
        for entry in std::fs::read_dir(golden("diffusers")).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), folder.join(entry.file_name())).unwrap();
        }
        folder
    }
}

pub const INDEX: &str = "diffusion_pytorch_model.safetensors.index.json";

/// The shard of a diffusers folder that its index says holds `key`.
pub fn shard_of(folder: &Path, key: &str) -> PathBuf {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(folder.join(INDEX)).unwrap()).unwrap();
    let shard = index["weight_map"][key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} not in the index"));
    folder.join(shard)
}

/// Rewrites the shard holding `key` with `edit` applied to its tensors.
pub fn edit_shard(folder: &Path, key: &str, edit: impl FnOnce(&mut Vec<StoredTensor>)) -> PathBuf {
    let shard = shard_of(folder, key);
    let mut tensors = read_tensors(&shard);
    edit(&mut tensors);
    write_tensors(&shard, &tensors);
    shard
}

/// Replaces tensor `name` by its first `columns` columns.
pub fn drop_columns(tensors: &mut [StoredTensor], name: &str, columns: usize) {
    let t = tensors.iter_mut().find(|t| t.name == name).unwrap();
    let (rows, old) = (t.shape[0], t.shape[1]);
    let values = t.f32_values();
    let kept: Vec<f32> = (0..rows)
        .flat_map(|r| values[r * old..r * old + columns].to_vec())
        .collect();
    *t = StoredTensor::from_f32(name, vec![rows, columns], &kept);
}

/// The unedited golden model, written the way every variant below is, compiles and writes
/// exactly the model, its data file and its config: so each refusal below is caused by its defect alone,
/// and `assert_nothing_written` would see the files if a refused run had written them.
#[test]
fn control_the_unedited_variant_compiles() {
    let s = Scratch::new();
    let ckpt = s.bfl_variant("flux.safetensors", |_| {});
    let out = s.compile(&ckpt);
    assert!(out.success, "{}", out.stderr);
    assert_eq!(
        listing(&s.out_dir()),
        ["config.json", "model.onnx", "model.onnx.data"]
            .map(String::from)
            .into()
    );
}
