//! fastflux: compiles a FLUX.1 transformer checkpoint into an ONNX model for ONNX Runtime,
//! optionally pruned with FastFLUX's block-wise replacement by linear layers (BRLL) and with
//! sandwich-training LoRA deltas folded in.
//!
//! The pipeline: `checkpoint` (mapped files, naming, configuration) → `lift` (FLUX → IR) →
//! `passes` (rewrites) → `onnx` (lowering and export) ; `runtime` runs the result.

pub mod checkpoint;
pub mod compile;
pub mod dtype;
pub mod error;
pub mod fit;
pub mod inputs;
pub mod ir;
pub mod lift;
pub mod metrics;
pub mod onnx;
pub mod passes;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod tensor;

pub use error::{Error, Result};
