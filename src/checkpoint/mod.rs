//! Reading FLUX checkpoints: naming schemes, configuration inference, LoRA files, the BRLL
//! rewrite a checkpoint may already hold, and the resolution of every parameter to the stored
//! bytes behind it (the store the lifted graph's weights read from).

pub mod brll_meta;
pub mod config;
pub mod config_builder;
pub mod diffusers_config;
pub mod lora;
pub mod model;
pub mod naming;
pub mod source;

pub use config::FluxConfig;
pub use model::FluxCheckpoint;
pub use naming::Scheme;
pub use source::Checkpoint;
