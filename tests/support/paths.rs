//! Where the shared references live: `../shared` beside the repository, or `$FASTFLUX_SHARED`.

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
