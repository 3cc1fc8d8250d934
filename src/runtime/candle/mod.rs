//! candle as an executor: an IR piece (what `Graph::extract` returns for a set of stages, the
//! same piece the staged ONNX Runtime runner runs) lowered to candle tensor ops, either frozen
//! ([`CandleBackend`], a [`super::Backend`] for the staged runner) or with trainable LoRA
//! adapters and fully trained weights ([`Lowered`] with [`Trainables`]), for sandwich training.
//! The ops' rules live in `lower/`, one op family per file, as `onnx::lower` organises them.

mod backend;
mod convert;
mod lower;
mod lowered;
mod trainables;

pub use backend::{CandleBackend, CandleStage};
pub use convert::{from_host, to_host};
pub use lowered::Lowered;
pub use trainables::{LoraShape, LoraValues, Param, ParamKind, Trainables};

use crate::error::Error;

/// A candle failure, with what was being done when it happened.
pub(crate) fn candle_error(context: impl std::fmt::Display, err: candle_core::Error) -> Error {
    Error::Candle(format!("{context}: {err}"))
}
