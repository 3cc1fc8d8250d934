//! The Python side: the project's interpreter, to run the `onnx` package's checker and loader.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The project's Python (scripts/setup.sh's .venv), else python3 from PATH.
pub fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// Runs a Python snippet with `args` in `sys.argv[1:]`; returns (success, stdout+stderr).
pub fn python_run(code: &str, args: &[&Path]) -> (bool, String) {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
