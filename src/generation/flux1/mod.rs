//! FLUX.1 ([dev] and [schnell]): its naming table, the one source of its parameter names.

mod names;

pub use names::NAMES;
