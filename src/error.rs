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
    Runtime(#[from] RuntimeError),
    /// The candle executor failed (a shape a node cannot take, a device error): which node or
    /// tensor, and candle's message.
    #[error("candle: {0}")]
    Candle(String),
    /// A broken invariant inside fastflux: a bug, reported instead of panicking.
    #[error("internal error: {0}")]
    Internal(String),
    /// An IR node whose inputs do not type: a bug in the lifter or a pass, like `Internal`.
    #[error("internal error: node `{node}`: {source}")]
    Type { node: String, source: TypeError },
    /// Least squares could not fit a linear replacement from the calibration statistics.
    #[error("fitting a linear replacement failed: {0}")]
    Fit(#[from] FitError),
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

/// Errors from loading ONNX Runtime and building or running its sessions. ort's errors are kept
/// as their message so the type stays `Clone` (the cached init result is handed out).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The library's file name, and every place that was searched.
    #[error(
        "could not find {library}; looked in: {searched}. Run `scripts/setup.sh` to create .venv, \
         or set ORT_DYLIB_PATH to the library's path"
    )]
    LibraryNotFound {
        library: &'static str,
        searched: String,
    },
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
}

/// Why the normal equations of a linear replacement could not be solved.
#[derive(Debug, thiserror::Error)]
pub enum FitError {
    #[error(
        "no calibration rows were accumulated: run at least one calibration sample through the block before fitting"
    )]
    NoRows,
    #[error("ridge must be finite and ≥ 0, got {0}")]
    InvalidRidge(f64),
    #[error(
        "the accumulated statistics contain NaN or infinity: the block's captured activations are not finite ({rows} rows)"
    )]
    NonFinite { rows: usize },
    #[error(
        "the normal equations are not positive definite (Cholesky failed at pivot {pivot} of {order}) \
         with relative ridge {ridge:e} over {rows} rows for {features} features: raise `--ridge` or add calibration samples"
    )]
    NotPositiveDefinite {
        pivot: usize,
        order: usize,
        ridge: f64,
        rows: usize,
        features: usize,
    },
}
