//! Where the shared references live: `../shared` beside the repository, or `$FASTFLUX_SHARED`;
//! and the command line that compiles the trained toy.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub fn shared() -> PathBuf {
    std::env::var_os("FASTFLUX_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

/// A file (or folder) of the golden tiny FLUX-dev model.
pub fn golden(file: &str) -> PathBuf {
    shared().join("golden/tiny-dev").join(file)
}

/// A file of the trained toy (`toy/digits`).
pub fn toy(file: &str) -> PathBuf {
    shared().join("toy/digits").join(file)
}

/// The compiler's arguments for the toy checkpoint, quiet, on one thread, then `extra`.
pub fn toy_args(extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![toy("flux-bfl.safetensors").into()];
    args.extend(["--axes-dim", "4,6,6", "-q", "--threads", "1"].map(OsString::from));
    args.extend(extra.iter().map(OsString::from));
    args
}
