//! FLUX.2: its naming table, the one source of its parameter names. fastflux recognises FLUX.2
//! checkpoints by it and does not compile them yet (issue 19).

mod names;

pub use names::NAMES;
