//! Finding and loading the pinned `libonnxruntime`, and the process-wide ort environment that
//! every session is built in.

use crate::error::RuntimeError;
use ::ort::environment::Environment;
use std::ffi::OsStr;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The library shipped by the `onnxruntime==1.31.1` wheel that `scripts/setup.sh` installs. Pinned
/// because ort's `api-31` feature needs ONNX Runtime >= 1.31, and so machines agree numerically.
pub const ORT_LIB_NAME: &str = "libonnxruntime.so.1.31.1";

/// Sessions need the environment and ort allows one per process, so it lives here for good.
/// Failure is cached too: a second dlopen of the same path would fail the same way.
static ENVIRONMENT: OnceLock<Result<Environment, RuntimeError>> = OnceLock::new();

/// Loads ONNX Runtime once per process (later calls are free). Call it before any other ort API:
/// with `load-dynamic`, ort would otherwise dlopen `libonnxruntime.so` from the default search
/// path on first use and panic if that fails. Building a session calls it itself.
pub fn ensure_initialized() -> Result<(), RuntimeError> {
    environment().map(|_| ())
}

pub(super) fn environment() -> Result<&'static Environment, RuntimeError> {
    let env = ENVIRONMENT.get_or_init(|| {
        let path = library_path()?;
        let fail = |e: &dyn Display| RuntimeError::Init(path.clone(), e.to_string());
        // ort resolves a relative path against the executable's directory, not the cwd.
        let absolute = std::path::absolute(&path).map_err(|e| fail(&e))?;
        let builder = ::ort::init_from(&absolute).map_err(|e| fail(&e))?;
        builder
            .with_name("fastflux")
            .with_telemetry(false)
            .build()
            .map_err(|e| fail(&e))
    });
    env.as_ref().map_err(Clone::clone)
}

/// The `libonnxruntime` this process loads (or has loaded), found as [`find_library`] says.
pub fn library_path() -> Result<PathBuf, RuntimeError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let overridden = std::env::var_os("ORT_DYLIB_PATH");
    find_library(overridden.as_deref(), root, "python3")
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
    Err(RuntimeError::LibraryNotFound {
        library: ORT_LIB_NAME,
        searched: tried.join("; "),
    })
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
}
