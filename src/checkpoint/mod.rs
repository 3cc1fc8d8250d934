//! Reading FLUX checkpoints: safetensors files (memory-mapped), naming schemes, configuration
//! inference, LoRA files, and the resolution of every parameter to the stored bytes behind it.

pub mod config;
pub mod config_builder;
pub mod emit;
pub mod lora;
pub mod model;
pub mod naming;
pub mod safetensors;
pub mod source;

pub use config::FluxConfig;
pub use model::{FluxCheckpoint, Piece, TensorSource};
pub use naming::Scheme;
pub use source::Checkpoint;
