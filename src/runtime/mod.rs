//! Executing graphs: the backend interface a stage runs through ([`Backend`]), the staged plan
//! that runs a graph block by block through it (its activations in memory or spilled to disk
//! a chunk at a time), ONNX Runtime as its first implementation and
//! candle (with autograd, for training) as its second.

pub mod activations;
pub mod backend;
pub mod budget;
pub mod candle;
pub mod ort;
pub mod spill;
pub mod staged;

pub use self::ort::{
    ExecutionProvider, LoadedModel, ORT_LIB_NAME, OrtBackend, Port, ensure_initialized,
    run_model_bytes, run_model_file,
};
pub use backend::{Backend, StageExecutable};
pub use budget::MemoryBudget;
