//! The petgraph IR: FLUX-level ops, typed values, lazy weights and a deterministic text dump.

pub mod cost;
mod dump;
pub mod graph;
pub mod op;
mod subgraph;
pub mod types;
pub mod weight;

pub use graph::{BlockId, BlockIo, Graph, Node, Stream, Value};
pub use op::Op;
pub use types::{Dim, TensorType};
pub use weight::{Weight, WeightData};
