//! The tiny-dev model as the candle tests run it: its f32 calibration graph (plain, or with
//! BRLL fits of random weights applied), and every stage's activations as ONNX Runtime computes
//! them on the golden inputs, stage by stage.

use super::paths::golden;
use fastflux::checkpoint::FluxCheckpoint;
use fastflux::dtype::DType;
use fastflux::ir::{BlockId, Graph};
use fastflux::lift::{LiftOptions, lift};
use fastflux::passes::brll::{BlockFit, StreamFit, apply_fits};
use fastflux::passes::retype;
use fastflux::rng::Rng;
use fastflux::runtime::staged::{Env, StagedRunner};
use fastflux::tensor::read_f32_tensors;
use std::sync::Arc;

pub fn tiny_checkpoint() -> FluxCheckpoint {
    FluxCheckpoint::open(&golden("diffusers"), None).expect("tiny-dev checkpoint")
}

/// The calibration graph: the lifted model retyped to f32.
pub fn calibration_graph(ckpt: &FluxCheckpoint) -> Graph {
    let lifted = lift(ckpt, LiftOptions { dtype: DType::BF16 }).expect("tiny-dev lifts");
    retype::to_f32(&lifted).expect("retyped to f32")
}

/// A fit of `block` with small random weights (and a conditioning map when `conditioned`).
pub fn random_fit(graph: &Graph, block: BlockId, conditioned: bool, seed: u64) -> BlockFit {
    let mut rng = Rng::new(seed, 7);
    let io = &graph.block_io[&block];
    let cond_width = graph.ty(io.condition).shape[1].known().unwrap();
    let mut draw = |n: usize, scale: f64| -> Arc<Vec<f32>> {
        Arc::new((0..n).map(|_| (rng.normal() * scale) as f32).collect())
    };
    let streams = io
        .streams
        .iter()
        .map(|s| {
            let width = graph.ty(s.input).shape[2].known().unwrap();
            let scale = 0.5 / (width as f64).sqrt();
            StreamFit {
                stream: s.name.clone(),
                weight: draw(width * width, scale),
                bias: draw(width, 0.1),
                cond_weight: conditioned.then(|| draw(width * cond_width, scale)),
                relative_error: 0.0,
            }
        })
        .collect();
    BlockFit { block, streams }
}

/// `graph` with `fits` applied.
pub fn with_fits(graph: &Graph, fits: &[BlockFit]) -> Graph {
    let mut graph = graph.clone();
    apply_fits(&mut graph, fits).expect("fits apply");
    graph
}

/// Every stage's outputs on the golden inputs (2 samples), computed by ONNX Runtime (CPU)
/// stage by stage, none released.
pub fn ort_activations(graph: &Graph, ckpt: &FluxCheckpoint) -> Env {
    let runner = StagedRunner::new(graph, ckpt, 2, 1);
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).expect("golden inputs");
    let mut env = runner.load_inputs(&inputs).expect("golden inputs fit");
    for k in 0..runner.stages().len() {
        runner
            .run_stage(k, &mut env)
            .expect("stage runs in ONNX Runtime");
    }
    env
}
