//! Shared by every integration test binary (each declares `mod support;` and uses its subset):
//! where the golden references are, running the compiler binary and the checks a refused input
//! must pass, reading and writing variants of safetensors checkpoints and LoRA files, running a
//! compiled model in ONNX Runtime, and the Python side (the `onnx` checker).

#![allow(dead_code, unused_imports)] // each test binary uses its own subset

mod binary;
mod checkpoint;
mod lora_file;
mod ort;
mod paths;
mod python;

pub use binary::*;
pub use checkpoint::*;
pub use lora_file::*;
pub use ort::*;
pub use paths::*;
pub use python::*;
