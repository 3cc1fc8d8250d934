//! fastflux: compiles a FLUX.1 transformer checkpoint into an ONNX model for ONNX Runtime,
//! optionally pruned with FastFLUX's block-wise replacement by linear layers (BRLL) and with
//! sandwich-training LoRA deltas folded in.
//!
//! The pipeline: `checkpoint` (naming, configuration, the store of weight bytes) → `lift`
//! (FLUX → IR) → `passes` (rewrites) → `onnx` (lowering and export), driven step by step by
//! `compile` and rendered by `report`; `emit` writes the rewritten IR back out as a checkpoint,
//! `io` holds the file readers and writers, `runtime` runs the result, `sample` samples it.
//! `generation` holds what is particular to each FLUX generation, beginning with its naming
//! table, the one source of its parameter names.

pub mod checkpoint;
pub mod cli;
pub mod compile;
pub mod dtype;
pub mod emit;
pub mod error;
pub mod fit;
pub mod generation;
pub mod inputs;
pub mod io;
pub mod ir;
pub mod lift;
pub mod metrics;
pub mod onnx;
pub mod passes;
pub mod report;
pub mod rng;
pub mod runtime;
pub mod sample;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
