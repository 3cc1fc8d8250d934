//! Shared by `bad_input.rs` and `dtypes.rs`: where the golden tiny model is, reading and writing
//! variants of its safetensors files, running the compiler binary, and the checks every refused
//! input must pass (an `error:` line naming what is wrong, no panic, nothing left at the output).

#![allow(dead_code, unused_imports)] // each test binary uses its own subset

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// Where the golden references are: one definition for every test binary.
#[path = "../support/paths.rs"]
mod paths;
pub use paths::{golden, shared};

/// The golden model needs `--axes-dim`: its head width is 16, not FLUX.1's 128.
pub const TINY_AXES: &str = "4,6,6";

/// One tensor of a checkpoint, owned, so that tests can rename, reshape, drop or convert it.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

impl Tensor {
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
pub fn read_tensors(path: &Path) -> Vec<Tensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = SafeTensors::deserialize(&bytes).expect("a valid safetensors file");
    let mut tensors: Vec<Tensor> = file
        .iter()
        .map(|(name, view)| Tensor {
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
pub fn write_tensors(path: &Path, tensors: &[Tensor]) {
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

/// What one run of `fastflux-compile` did.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `fastflux-compile` with `args`.
pub fn run_compiler<S: AsRef<OsStr>>(args: &[S]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_fastflux-compile"))
        .args(args)
        .output()
        .expect("fastflux-compile starts");
    Outcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `fastflux-compile` and asserts it succeeded; returns its stdout.
pub fn compile_ok<S: AsRef<OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let out = run_compiler(args);
    assert!(
        out.success,
        "fastflux-compile {args:?} failed:\n{}",
        out.stderr
    );
    out.stdout
}

/// The refusal contract of the "Bad input": a non-zero exit, an `error:` line that says
/// each of `needles` (the file, the tensor, what was expected and found), and no panic.
pub fn assert_refused(out: &Outcome, needles: &[&str]) {
    assert!(
        !out.success,
        "expected a refusal, but it succeeded:\n{}",
        out.stdout
    );
    assert!(
        !out.stderr.contains("panicked"),
        "it panicked:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("error:"),
        "no `error:` line:\n{}",
        out.stderr
    );
    for needle in needles {
        assert!(
            out.stderr.contains(needle),
            "the error does not say `{needle}`:\n{}",
            out.stderr
        );
    }
}

/// The names in a folder (hidden ones included: that is where temporary files would hide).
pub fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The text between the first "tensor `" and the next backtick of an error message.
pub fn named_tensor(stderr: &str) -> Option<&str> {
    let rest = &stderr[stderr.find("tensor `")? + "tensor `".len()..];
    Some(&rest[..rest.find('`')?])
}

/// The last path component as text, for asserting that a message names a file.
pub fn file_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}
