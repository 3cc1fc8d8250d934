//! The crate's error type. Every message names the file, the tensor and what was expected,
//! because the user's only way to fix bad input is to know exactly which part is bad.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file as a whole is unusable (not safetensors, truncated, a pickle …).
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },
    /// One tensor of a file is unusable (missing, wrong shape, unknown dtype …).
    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    Tensor {
        path: PathBuf,
        tensor: String,
        msg: String,
    },
    /// The command line asks for something that cannot be done.
    #[error("{0}")]
    Usage(String),
    /// An ONNX Runtime session failed.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// A broken invariant inside fastflux: a bug, reported instead of panicking.
    #[error("internal error: {0}")]
    Internal(String),
    /// An IR node whose inputs do not type: a bug in the lifter or a pass, like `Internal`.
    #[error("internal error: node `{node}`: {source}")]
    Type { node: String, source: TypeError },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub fn file(path: &Path, msg: impl Into<String>) -> Self {
        Self::File {
            path: path.to_owned(),
            msg: msg.into(),
        }
    }

    pub fn tensor(path: &Path, tensor: impl Into<String>, msg: impl Into<String>) -> Self {
        Self::Tensor {
            path: path.to_owned(),
            tensor: tensor.into(),
            msg: msg.into(),
        }
    }
}

/// An IR op whose inputs' types do not fit it: which op, and what did not fit. Types arrive
/// already formatted, so that this module stays a leaf that `ir` can import.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    #[error("{op} takes {expected} inputs, got {got}")]
    Arity {
        op: &'static str,
        expected: usize,
        got: usize,
    },
    /// Two types that must be equal are not (`what` says which inputs).
    #[error("{what}: {found} vs {expected}")]
    Mismatch {
        op: &'static str,
        what: &'static str,
        found: String,
        expected: String,
    },
    /// The op works on the last (feature) axis, and its width is not known.
    #[error("{ty} has no known last axis")]
    UnknownWidth { op: &'static str, ty: String },
    /// Any other misfit, described in full.
    #[error("{what}")]
    Misfit { op: &'static str, what: String },
}

impl TypeError {
    /// The kind of the op that did not type.
    pub fn op(&self) -> &'static str {
        match self {
            Self::Arity { op, .. }
            | Self::Mismatch { op, .. }
            | Self::UnknownWidth { op, .. }
            | Self::Misfit { op, .. } => op,
        }
    }
}
