//! The executor seam: what the staged plan needs from whatever runs a stage. ONNX Runtime
//! ([`super::ort::OrtBackend`]) is the first implementation; another executor (candle, for
//! sandwich training) implements the same two traits beside it.

use crate::error::Result;
use crate::ir::Graph;
use crate::ir::TensorStore;
use crate::tensor::Tensor;

/// Turns a stage — a piece of the IR extracted by `Graph::extract`, inputs named by
/// `Graph::value_name` — into something that runs, lowering it however the executor needs.
pub trait Backend {
    type Stage: StageExecutable;

    /// Prepares `piece` to run; its weights are read from `weights`.
    fn load(&self, piece: &Graph, weights: &dyn TensorStore) -> Result<Self::Stage>;

    /// One line on what runs the stages (for logs and reports).
    fn describe(&self) -> String;
}

/// A loaded stage. It is run once per chunk of samples, so loading is paid once per stage.
pub trait StageExecutable {
    /// Runs the stage on tensors named as the piece's inputs; returns its outputs in the
    /// piece's output order.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>>;
}
