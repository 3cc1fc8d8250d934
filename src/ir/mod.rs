//! The petgraph IR: FLUX-level ops, typed values, lazy weights and a deterministic text dump.

mod dump;
pub mod graph;
pub mod op;
pub mod types;
pub mod weight;

pub use graph::{BlockId, Graph, Node, Value};
pub use op::Op;
pub use types::{Dim, TensorType};
pub use weight::{Weight, WeightData};
