//! Shared by the LoRA tests: where the golden references are, running the compiler binary,
//! running a compiled model on the golden inputs, and editing LoRA files into new variants.

use fastflux::tensor::{self, Tensor};
use fastflux::{metrics, runtime};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output};

/// f32 compute against diffusers' reference: the bound.
pub const TOLERANCE: f64 = 1e-5;

#[path = "../support/paths.rs"]
mod paths;
#[allow(unused_imports)]
pub use paths::golden;

/// The two forms of the tiny-dev checkpoint, with the flags each needs: the BFL file carries
/// no config.json, and tiny-dev's heads are 16 wide, not FLUX's 128.
pub const CHECKPOINTS: [(&str, &[&str]); 2] = [
    ("flux-bfl.safetensors", &["--axes-dim", "4,6,6"]),
    ("diffusers", &[]),
];

/// Runs `fastflux-compile` on the golden `checkpoint` with `extra` flags, writing `out`.
pub fn compile(checkpoint: &str, out: &Path, extra: &[&str]) -> Output {
    let flags = CHECKPOINTS
        .iter()
        .find(|(c, _)| *c == checkpoint)
        .map_or(&[][..], |(_, f)| f);
    Command::new(env!("CARGO_BIN_EXE_fastflux-compile"))
        .arg(golden(checkpoint))
        .arg("-o")
        .arg(out)
        .args(["--dtype", "f32", "-q"])
        .args(flags)
        .args(extra)
        .output()
        .expect("fastflux-compile runs")
}

/// [`compile`], asserting success; returns stdout (the summary).
pub fn compile_ok(checkpoint: &str, out: &Path, extra: &[&str]) -> String {
    let o = compile(checkpoint, out, extra);
    assert!(
        o.status.success(),
        "fastflux-compile {checkpoint} {extra:?} failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// [`compile`], asserting failure and that nothing was left behind; returns stderr.
pub fn compile_err(checkpoint: &str, out: &Path, extra: &[&str]) -> String {
    let o = compile(checkpoint, out, extra);
    assert!(!o.status.success(), "{extra:?} should have failed");
    let folder = out.parent().unwrap();
    let outputs: Vec<_> = std::fs::read_dir(folder)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().contains(".onnx"))
        .collect();
    assert!(outputs.is_empty(), "left behind: {outputs:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The reference output in `file`: `output_f64` where the file has it, else `output`.
pub fn reference(file: &str) -> Vec<f64> {
    let tensors = tensor::read_f32_tensors(&golden(file)).expect("golden reference");
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    println!("{file} holds {names:?}");
    let bytes = std::fs::read(golden(file)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    if let Ok(f64s) = st.tensor("output_f64") {
        return f64s
            .data()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect();
    }
    let output = tensors.into_iter().find(|t| t.name == "output");
    let output = output.unwrap_or_else(|| panic!("{file} holds no `output`"));
    output.data.into_iter().map(f64::from).collect()
}

/// Runs a compiled model on the golden inputs; returns `latent`.
pub fn run(model: &Path) -> Vec<f32> {
    let inputs = tensor::read_f32_tensors(&golden("inputs.safetensors")).expect("inputs");
    let outputs = runtime::run_model_file(model, &inputs, 2).expect("model runs");
    outputs
        .into_iter()
        .find(|t| t.name == "latent")
        .expect("output `latent`")
        .data
}

/// Compiles with `extra` flags and checks the result against the reference `expected`.
pub fn check(checkpoint: &str, extra: &[&str], expected: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.onnx");
    let summary = compile_ok(checkpoint, &out, extra);
    let error = metrics::relative_l2(&run(&out), &reference(expected));
    println!("{checkpoint} {extra:?} vs {expected}: relative L2 error {error:.3e}");
    assert!(
        error < TOLERANCE,
        "{checkpoint} {extra:?}: error {error:.3e}"
    );
    summary
}

/// A LoRA file's tensors (all f32 in the golden files) and header metadata, to edit.
pub struct Lora {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: Option<HashMap<String, String>>,
}

impl Lora {
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
