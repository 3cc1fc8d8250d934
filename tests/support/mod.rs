//! Shared by every integration test binary (each declares `mod support;` and uses its subset):
//! where the golden references are, running the compiler binary and the checks a refused input
//! must pass, reading and writing variants of safetensors checkpoints and LoRA files, running a
//! compiled model in ONNX Runtime, the Python side (the `onnx` checker), the tiny model's
//! stages with their ONNX Runtime activations, and a sandwich of it as production trains it.

#![allow(dead_code, unused_imports)] // each test binary uses its own subset

mod binary;
mod brll_calib;
mod checkpoint;
mod lora_file;
mod ort;
mod paths;
mod python;
mod sandwich;
mod stages;

pub use binary::*;
pub use brll_calib::*;
pub use checkpoint::*;
pub use lora_file::*;
pub use ort::*;
pub use paths::*;
pub use python::*;
pub use sandwich::*;
pub use stages::*;
