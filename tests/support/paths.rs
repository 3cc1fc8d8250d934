//! Where the shared references live: `../shared` beside the repository, or `$FASTFLUX_SHARED`,
//! the FLUX.1 and FLUX.2 golden models and toys among them; and the command line that compiles
//! the trained toy.

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

/// A file (or folder) of the golden tiny FLUX.2 model (`golden/flux2-tiny`).
pub fn golden_flux2(file: &str) -> PathBuf {
    shared().join("golden/flux2-tiny").join(file)
}

/// A file of the trained FLUX.2 toy (`toy/digits-flux2`).
pub fn toy_flux2(file: &str) -> PathBuf {
    shared().join("toy/digits-flux2").join(file)
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
