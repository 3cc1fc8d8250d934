//! Sampling a FLUX model with FLUX.1's flow-matching Euler sampler: the schedule (`schedule`),
//! the Euler loop over seeded noise (`euler`), the executors the loop drives through the one
//! [`Denoiser`] trait (`denoiser`: a compiled `.onnx` in ONNX Runtime, or the staged original),
//! the image grid the latents live on (`grid`), recording calibration inputs along the
//! trajectories (`trajectories`) and drawing latents that are images (`png`).

pub mod denoiser;
pub mod euler;
pub mod grid;
pub mod png;
pub mod schedule;
pub mod trajectories;

pub use denoiser::{OnnxDenoiser, StagedDenoiser};
pub use euler::{SampleSpec, Sampled, Step, sample};
pub use grid::Grid;
pub use schedule::Schedule;

use crate::error::Result;
use crate::inputs::Signature;
use crate::tensor::Tensor;

/// What the sampler sees of a model: the inputs it takes, and its output for one step.
pub trait Denoiser {
    /// The model's inputs (see `inputs::Signature::inputs`).
    fn signature(&self) -> Signature;

    /// The model's output, the velocity `[S, N, C]`, for one step's inputs, named and ordered
    /// as the signature's inputs (every prompt of the step stacked on the batch axis).
    fn velocity(&mut self, inputs: &[Tensor]) -> Result<Tensor>;
}
