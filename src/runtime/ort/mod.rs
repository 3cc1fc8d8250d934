//! ONNX Runtime (through ort), the first executor: finding and loading the pinned
//! `libonnxruntime`, sessions on a selectable execution provider, running models from a file or
//! from memory, and the [`OrtBackend`] that runs staged plans.

mod backend;
mod library;
mod provider;
mod session;

pub use backend::OrtBackend;
pub use library::{ORT_LIB_NAME, ensure_initialized, library_path};
pub use provider::{ExecutionProvider, cuda_available};
pub use session::{LoadedModel, Port, run_model_bytes, run_model_file};
