//! ONNX Runtime sessions (ort): owns finding and loading the pinned `libonnxruntime`, the
//! process-wide environment, running f32 models from a file or from memory, reading reference
//! tensors from safetensors files, and the f64 metrics that compare outputs with references.

use std::ffi::OsStr;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub mod staged;

use half::{bf16, f16};
use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, SessionBuilder};
use ort::session::{Session, SessionInputValue};
use ort::value::TensorRef;
use safetensors::{Dtype, SafeTensors};

/// The library shipped by the `onnxruntime==1.31.1` wheel that `scripts/setup.sh` installs. Pinned
/// because ort's `api-31` feature needs ONNX Runtime >= 1.31, and so machines agree numerically.
pub const ORT_LIB_NAME: &str = "libonnxruntime.so.1.31.1";

/// Errors from loading ONNX Runtime, building/running sessions and reading tensors. ort's errors
/// are kept as their message so the type stays `Clone` (the cached init result is handed out).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// Every place that was searched.
    #[error(
        "could not find {ORT_LIB_NAME}; looked in: {0}. Run `scripts/setup.sh` to create .venv, \
         or set ORT_DYLIB_PATH to the library's path"
    )]
    LibraryNotFound(String),
    /// Library path, reason.
    #[error("failed to initialize ONNX Runtime from {0}: {1}")]
    Init(PathBuf, String),
    /// Model (path or in-memory description), reason.
    #[error("failed to create a session for model {0}: {1}")]
    Session(String, String),
    /// Model, reason.
    #[error("invalid inputs for model {0}: {1}")]
    Input(String, String),
    /// Model, reason.
    #[error("failed to run model {0}: {1}")]
    Run(String, String),
    /// File, reason.
    #[error("failed to read {0}: {1}")]
    Read(PathBuf, String),
    /// File, tensor, dtype.
    #[error("{0}: tensor `{1}` has unsupported dtype {2} (expected F32, F64, F16 or BF16)")]
    UnsupportedDtype(PathBuf, String, String),
}

/// A dense row-major f32 tensor with its graph name (model inputs/outputs are all float32).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Sessions need the environment and ort allows one per process, so it lives here for good.
/// Failure is cached too: a second dlopen of the same path would fail the same way.
static ENVIRONMENT: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();

/// Loads ONNX Runtime once per process (later calls are free). Call it before any other ort API:
/// with `load-dynamic`, ort would otherwise dlopen `libonnxruntime.so` from the default search
/// path on first use and panic if that fails. The run functions below call it themselves.
pub fn ensure_initialized() -> Result<(), RuntimeError> {
    environment().map(|_| ())
}

fn environment() -> Result<&'static Environment, RuntimeError> {
    let env = ENVIRONMENT.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let overridden = std::env::var_os("ORT_DYLIB_PATH");
        let path = find_library(overridden.as_deref(), root, "python3")?;
        let fail = |e: &dyn Display| RuntimeError::Init(path.clone(), e.to_string());
        // ort resolves a relative path against the executable's directory, not the cwd.
        let absolute = std::path::absolute(&path).map_err(|e| fail(&e))?;
        let builder = ort::init_from(&absolute).map_err(|e| fail(&e))?;
        builder
            .with_name("fastflux")
            .with_telemetry(false)
            .build()
            .map_err(|e| fail(&e))
    });
    env.as_ref().map_err(Clone::clone)
}

/// Lookup order: `ORT_DYLIB_PATH` if set (taken as-is, so a wrong override fails loudly rather
/// than silently loading another build); `<crate_root>/.venv/lib/python3*/site-packages/
/// onnxruntime/capi/`; the onnxruntime package that `python` imports.
fn find_library(
    override_path: Option<&OsStr>,
    crate_root: &Path,
    python: &str,
) -> Result<PathBuf, RuntimeError> {
    if let Some(path) = override_path.filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(path));
    }
    let mut tried = vec!["ORT_DYLIB_PATH (unset)".to_string()];

    let venv_lib = crate_root.join(".venv/lib");
    let mut pythons: Vec<PathBuf> = std::fs::read_dir(&venv_lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .map(|e| e.path().join("site-packages/onnxruntime/capi"))
        .collect();
    pythons.sort();
    if let Some(found) = pythons
        .iter()
        .map(|d| d.join(ORT_LIB_NAME))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    let glob = venv_lib.join("python3*/site-packages/onnxruntime/capi");
    tried.push(glob.display().to_string());

    let script = "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))";
    match Command::new(python).args(["-c", script]).output() {
        Ok(out) if out.status.success() => {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            let candidate = Path::new(&dir).join("capi").join(ORT_LIB_NAME);
            if candidate.is_file() {
                return Ok(candidate);
            }
            tried.push(format!("{} (from `{python}`)", candidate.display()));
        }
        Ok(_) => tried.push(format!("`{python}` (cannot import onnxruntime)")),
        Err(e) => tried.push(format!("`{python}` ({e})")),
    }
    Err(RuntimeError::LibraryNotFound(tried.join("; ")))
}

/// Runs the ONNX model at `path` with `threads` intra-op threads (0 = ONNX Runtime's default,
/// one per physical core). External data resolves relative to the model's directory. Returns
/// every graph output, in graph order.
pub fn run_model_file(
    path: &Path,
    inputs: &[NamedTensor],
    threads: usize,
) -> Result<Vec<NamedTensor>, RuntimeError> {
    let model = path.display().to_string();
    let mut session = commit(&model, threads, |b| b.commit_from_file(path))?;
    run_session(&mut session, &model, inputs)
}

/// [`run_model_file`] for a serialized model in memory. All weights must be embedded: ONNX
/// Runtime resolves an in-memory model's external data against the process's working directory.
pub fn run_model_bytes(
    model: &[u8],
    inputs: &[NamedTensor],
    threads: usize,
) -> Result<Vec<NamedTensor>, RuntimeError> {
    LoadedModel::from_bytes(model, threads)?.run(inputs)
}

/// A session kept for several runs (a calibration stage runs once per chunk of samples).
pub struct LoadedModel {
    session: Session,
    name: String,
}

impl LoadedModel {
    /// Builds a session from a serialized model with all weights embedded; `model` may be
    /// dropped afterwards (ONNX Runtime keeps its own copy of the weights).
    pub fn from_bytes(model: &[u8], threads: usize) -> Result<Self, RuntimeError> {
        let name = format!("<in-memory model, {} bytes>", model.len());
        let session = commit(&name, threads, |b| b.commit_from_memory(model))?;
        Ok(Self { session, name })
    }

    pub fn run(&mut self, inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>, RuntimeError> {
        run_session(&mut self.session, &self.name, inputs)
    }
}

fn commit(
    model: &str,
    threads: usize,
    load: impl FnOnce(&mut SessionBuilder) -> ort::Result<Session>,
) -> Result<Session, RuntimeError> {
    let env = environment()?;
    let fail = |e: &dyn Display| RuntimeError::Session(model.to_string(), e.to_string());
    // `All` is ORT_ENABLE_ALL (99). In this ort version `Level3` maps to ORT_ENABLE_LAYOUT (3), a
    // level that would leave out any optimizer ONNX Runtime places above the layout passes.
    let mut builder = Session::builder(env)
        .map_err(|e| fail(&e))?
        .with_optimization_level(GraphOptimizationLevel::All)
        .map_err(|e| fail(&e))?
        .with_intra_threads(threads)
        .map_err(|e| fail(&e))?;
    load(&mut builder).map_err(|e| fail(&e))
}

fn run_session(
    session: &mut Session,
    model: &str,
    inputs: &[NamedTensor],
) -> Result<Vec<NamedTensor>, RuntimeError> {
    let bad_input = |msg: String| RuntimeError::Input(model.to_string(), msg);
    // Checked here because ONNX Runtime's messages for these do not say what the graph expects.
    let expected: Vec<&str> = session.inputs().iter().map(|o| o.name()).collect();
    let given = |name: &str| inputs.iter().any(|t| t.name == name);
    if let Some(name) = expected.iter().find(|n| !given(n)) {
        return Err(bad_input(format!(
            "missing `{name}` (graph inputs: {expected:?})"
        )));
    }
    let mut values: Vec<(&str, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
    for t in inputs {
        if !expected.contains(&t.name.as_str()) {
            let msg = format!("unknown input `{}` (graph inputs: {expected:?})", t.name);
            return Err(bad_input(msg));
        }
        let (name, shape, len) = (&t.name, &t.shape, t.data.len());
        if shape.iter().product::<usize>() != len {
            return Err(bad_input(format!(
                "`{name}` has shape {shape:?} but {len} values"
            )));
        }
        // A borrowed view: ONNX Runtime reads the caller's buffer in place, no copy.
        let view = TensorRef::from_array_view((t.shape.as_slice(), t.data.as_slice()))
            .map_err(|e| bad_input(format!("`{}`: {e}", t.name)))?;
        values.push((t.name.as_str(), view.into()));
    }

    let run_failed = |msg: String| RuntimeError::Run(model.to_string(), msg);
    let outputs = session.run(values).map_err(|e| run_failed(e.to_string()))?;
    // SessionOutputs iterates in the session's output order.
    let mut result = Vec::with_capacity(outputs.len());
    for (name, value) in &outputs {
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| run_failed(format!("output `{name}`: {e}")))?;
        let shape = shape.iter().map(|&d| d as usize).collect();
        let (name, data) = (name.to_string(), data.to_vec());
        result.push(NamedTensor { name, shape, data });
    }
    Ok(result)
}

/// Relative L2 error `||a - b|| / ||b||` in f64, where `b` is the reference (f32 or f64). 0 when
/// both are all-zero, infinite when only the reference is, NaN on a length mismatch (so that
/// `err < tol` checks fail).
pub fn relative_l2<B: Copy + Into<f64>>(a: &[f32], b: &[B]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let y: f64 = y.into();
        diff += (f64::from(x) - y).powi(2);
        norm += y * y;
    }
    match (diff == 0.0, norm == 0.0) {
        (true, _) => 0.0,
        (false, true) => f64::INFINITY,
        (false, false) => (diff / norm).sqrt(),
    }
}

/// Cosine similarity in f64 (symmetric). 1 when both are all-zero, 0 when only one is, NaN on a
/// length mismatch.
pub fn cosine<B: Copy + Into<f64>>(a: &[f32], b: &[B]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y): (f64, f64) = (x.into(), y.into());
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    match (na == 0.0, nb == 0.0) {
        (true, true) => 1.0,
        (false, false) => dot / (na.sqrt() * nb.sqrt()),
        _ => 0.0,
    }
}

/// Reads every tensor of a safetensors file as f32 (from F32, F64, F16 or BF16), sorted by name
/// since the file's header is an unordered map.
pub fn read_f32_tensors(path: &Path) -> Result<Vec<NamedTensor>, RuntimeError> {
    let failed = |msg: String| RuntimeError::Read(path.to_path_buf(), msg);
    let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
    let file =
        SafeTensors::deserialize(&bytes).map_err(|e| failed(format!("not safetensors: {e}")))?;
    let mut tensors = Vec::with_capacity(file.len());
    for (name, view) in file.iter() {
        let raw = view.data();
        let data = match view.dtype() {
            Dtype::F32 => decode(raw, f32::from_le_bytes),
            Dtype::F64 => decode(raw, |b| f64::from_le_bytes(b) as f32),
            Dtype::F16 => decode(raw, |b| f16::from_le_bytes(b).to_f32()),
            Dtype::BF16 => decode(raw, |b| bf16::from_le_bytes(b).to_f32()),
            other => {
                let (file, dtype) = (path.to_path_buf(), format!("{other:?}"));
                return Err(RuntimeError::UnsupportedDtype(
                    file,
                    name.to_string(),
                    dtype,
                ));
            }
        };
        let (name, shape) = (name.to_string(), view.shape().to_vec());
        tensors.push(NamedTensor { name, shape, data });
    }
    tensors.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(tensors)
}

/// Decodes little-endian elements from byte chunks: tensor data in the file need not be aligned.
fn decode<const N: usize>(raw: &[u8], element: impl Fn([u8; N]) -> f32) -> Vec<f32> {
    raw.as_chunks::<N>().0.iter().map(|&b| element(b)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_lookup() {
        let explicit = find_library(
            Some(OsStr::new("/x/lib.so")),
            Path::new("/nonexistent"),
            "false",
        );
        assert_eq!(explicit.ok(), Some(PathBuf::from("/x/lib.so")));
        let missing = find_library(None, Path::new("/nonexistent-root"), "/nonexistent-python");
        let err = missing.unwrap_err().to_string();
        assert!(
            err.contains("/nonexistent-root/.venv/lib") && err.contains("setup.sh"),
            "{err}"
        );
    }

    #[test]
    fn metrics() {
        assert_eq!(relative_l2(&[1.0, 2.0], &[1.0f64, 2.0]), 0.0);
        assert!((relative_l2(&[0.0, 0.0], &[3.0f32, 4.0]) - 1.0).abs() < 1e-12);
        assert!(relative_l2(&[1.0], &[1.0f64, 2.0]).is_nan());
        assert!((cosine(&[1.0, 0.0], &[2.0f64, 0.0]) - 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0f32, 1.0]), 0.0);
    }
}
