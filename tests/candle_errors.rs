//! Trainables that do not fit a piece, and inputs that do not fit it, are refused with an
//! error that names the weight (or input) and the shapes.

mod support;

use candle_core::{DType, Device, Tensor};
use fastflux::Error;
use fastflux::ir::{BlockId, Graph};
use fastflux::rng::Rng;
use fastflux::runtime::candle::{LoraShape, Lowered, Trainables};
use support::*;

fn graph() -> Graph {
    let ckpt = tiny_checkpoint();
    let graph = calibration_graph(&ckpt);
    with_fits(&graph, &[random_fit(&graph, BlockId::Single(0), false, 4)])
}

fn lower(graph: &Graph, trainables: &Trainables, dtype: DType) -> Result<Lowered, Error> {
    let ckpt = tiny_checkpoint();
    let mut rng = Rng::new(0, 0);
    Lowered::new(graph, &ckpt, trainables, &Device::Cpu, dtype, &mut rng)
}

fn lora(name: &str, rank: usize) -> Trainables {
    let mut trainables = Trainables::default();
    trainables
        .lora
        .insert(name.into(), LoraShape { rank, alpha: 1.0 });
    trainables
}

/// The usage error `trainables` get, as text.
fn refused(graph: &Graph, trainables: &Trainables) -> String {
    match lower(graph, trainables, DType::F32) {
        Err(err @ Error::Usage(_)) => err.to_string(),
        Err(err) => panic!("not a usage error: {err:?}"),
        Ok(_) => panic!("accepted"),
    }
}

#[test]
fn a_trainable_that_names_no_weight_is_refused() {
    let graph = graph();
    let err = refused(&graph, &lora("double_blocks.9.img_attn.qkv.weight", 2));
    assert!(
        err.starts_with(
            "trainable `double_blocks.9.img_attn.qkv.weight` is no weight of the piece"
        ),
        "{err}"
    );
    let mut full = Trainables::default();
    full.full.insert("single_blocks.0.linear1.weight".into());
    let err = refused(&graph, &full);
    assert!(
        err.contains("`single_blocks.0.linear1.weight` is no weight"),
        "{err}"
    );
}

#[test]
fn lora_on_what_is_not_a_linear_matrix_is_refused() {
    let graph = graph();
    let err = refused(&graph, &lora("single_blocks.1.norm.query_norm.scale", 1));
    assert_eq!(
        err,
        "a LoRA adapter on `single_blocks.1.norm.query_norm.scale` [16]: it is not the matrix \
         of a Linear (`single_blocks.1.norm.query_norm`, a RmsNorm, reads it as input 1)"
    );
    let err = refused(&graph, &lora("single_blocks.1.linear1.bias", 1));
    assert!(
        err.contains("`single_blocks.1.linear1`, a Linear, reads it as input 2"),
        "{err}"
    );
    let err = refused(&graph, &lora("single_blocks.0.brll.weight", 1));
    assert!(
        err.contains("a LinearResidual, reads it as input 1"),
        "{err}"
    );
}

#[test]
fn a_rank_the_layer_does_not_allow_is_refused() {
    let graph = graph();
    let err = refused(&graph, &lora("single_blocks.1.linear2.weight", 65));
    assert_eq!(
        err,
        "LoRA rank 65 on `single_blocks.1.linear2.weight` [64, 320]: the rank must be 1 to \
         min(out, in) = 64"
    );
    assert!(
        lower(
            &graph,
            &lora("single_blocks.1.linear2.weight", 64),
            DType::F32
        )
        .is_ok()
    );
    let err = refused(&graph, &lora("single_blocks.1.linear2.weight", 0));
    assert!(err.starts_with("LoRA rank 0 on"), "{err}");
}

#[test]
fn a_weight_trained_both_ways_or_an_unsupported_type_is_refused() {
    let graph = graph();
    let mut both = lora("single_blocks.1.linear2.weight", 2);
    both.full.insert("single_blocks.1.linear2.weight".into());
    let err = refused(&graph, &both);
    assert!(
        err.contains("both whole and through a LoRA adapter"),
        "{err}"
    );
    let err = lower(&graph, &Trainables::default(), DType::BF16)
        .err()
        .unwrap();
    assert_eq!(err.to_string(), "candle computes in f32 or f64, not BF16");
}

#[test]
fn inputs_that_do_not_fit_the_piece_are_refused() {
    let graph = graph();
    let lowered = lower(&graph, &Trainables::default(), DType::F32).unwrap();
    let err = lowered.forward(&[]).err().unwrap().to_string();
    assert!(
        err.starts_with("the piece takes 7 inputs (hidden_states, "),
        "{err}"
    );
    let inputs: Vec<Tensor> = lowered
        .input_names()
        .iter()
        .map(|_| Tensor::zeros((2, 3), DType::F32, &Device::Cpu).unwrap())
        .collect();
    let err = lowered.forward(&inputs).err().unwrap().to_string();
    assert_eq!(
        err,
        "input `hidden_states` has shape [2, 3], but the piece takes f32[B,N,16]"
    );
}
