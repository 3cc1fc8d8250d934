//! A sandwich of tiny-dev for the candle training tests: double block 1, single block 0 replaced
//! by a conditioned BRLL fit of random weights, single block 1; its piece of the pruned graph,
//! the trainables production training builds for it, and its inputs as ONNX Runtime computes
//! them on the golden inputs.

use super::stages::{calibration_graph, ort_activations, random_fit, tiny_checkpoint, with_fits};
use candle_core::{DType, Device, Tensor};
use fastflux::checkpoint::FluxCheckpoint;
use fastflux::ir::{BlockId, Graph};
use fastflux::runtime::candle::{Trainables, from_host};
use fastflux::runtime::staged::plan_stages;
use fastflux::train::{self, Sandwich, sandwiches};

pub const NEIGHBOURS: [BlockId; 2] = [BlockId::Double(1), BlockId::Single(1)];
pub const REPLACED: BlockId = BlockId::Single(0);

pub struct TinySandwich {
    pub ckpt: FluxCheckpoint,
    /// The pruned model (f32) the piece is cut from.
    pub graph: Graph,
    pub sandwich: Sandwich,
    pub piece: Graph,
    /// What `fastflux::train` trains in it, at rank `rank`.
    pub trainables: Trainables,
    /// The piece's inputs on the golden inputs (2 samples), in its input order.
    pub inputs: Vec<Tensor>,
}

/// The sandwich around `REPLACED`, with production's trainables at `rank`, inputs in `dtype`.
pub fn tiny_sandwich(rank: usize, dtype: DType) -> TinySandwich {
    let ckpt = tiny_checkpoint();
    let original = calibration_graph(&ckpt);
    let graph = with_fits(&original, &[random_fit(&original, REPLACED, true, 3)]);
    let order: Vec<BlockId> = graph.blocks().into_iter().collect();
    let plan = sandwiches(&order, &[REPLACED].into_iter().collect());
    let [sandwich] = &plan[..] else {
        panic!("one sandwich expected: {plan:?}")
    };
    assert_eq!(sandwich.neighbours().collect::<Vec<_>>(), NEIGHBOURS);
    let piece_of = |graph: &Graph| piece(graph, sandwich);
    let (piece, external) = piece_of(&graph);
    let env = ort_activations(&graph, &ckpt);
    let inputs = external
        .iter()
        .map(|v| from_host(&env[v], &Device::Cpu, dtype).unwrap())
        .collect();
    let trainables = train::trainables(&graph, sandwich, rank).unwrap();
    TinySandwich {
        ckpt,
        sandwich: sandwich.clone(),
        piece,
        trainables,
        inputs,
        graph,
    }
}

/// The stages of `graph` from the sandwich's first block to its last, as one piece, and the
/// outside values it reads.
pub fn piece(graph: &Graph, sandwich: &Sandwich) -> (Graph, Vec<fastflux::ir::Value>) {
    let stages = plan_stages(graph);
    let at = |block: BlockId| stages.iter().position(|s| s.block == Some(block)).unwrap();
    let (first, last) = (at(sandwich.blocks[0]), at(*sandwich.blocks.last().unwrap()));
    let nodes: Vec<_> = stages[first..=last]
        .iter()
        .flat_map(|s| s.nodes.clone())
        .collect();
    graph.extract(&nodes, &stages[last].outputs).unwrap()
}
