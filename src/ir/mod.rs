//! The petgraph IR: FLUX-level ops, typed values, lazy weights (with the low-rank deltas that
//! export folds into them) and a deterministic text dump.

pub mod cost;
pub mod delta;
mod dump;
pub mod graph;
pub mod op;
mod stored;
mod subgraph;
pub mod types;
pub mod weight;

pub use delta::Delta;
pub use graph::{BlockId, BlockIo, Graph, Node, Stream, Value};
pub use op::Op;
pub use stored::{Piece, StoredTensor, TensorStore};
pub use types::{Dim, TensorType};
pub use weight::{Weight, WeightData};
