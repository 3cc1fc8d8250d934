//! An adapter whose alpha differs from its rank, trained by sandwich training's optimizer on a
//! sandwich of tiny-dev, saved as a LoRA file and folded into the weights by the LoRA pass,
//! computes what the candle forward with that adapter computes: alpha reaches the file and the
//! fold as the forward applies it.

mod support;

use candle_core::{DType, Device, Tensor};
use fastflux::checkpoint::lora::{LoraSpec, write_lora};
use fastflux::passes;
use fastflux::rng::Rng;
use fastflux::runtime::candle::{Lowered, Trainables};
use fastflux::train::{self, SandwichAdam, StOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use support::*;

fn host(outputs: &[Tensor]) -> Vec<Vec<f32>> {
    outputs
        .iter()
        .map(|t| t.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

/// The largest difference between `a` and `b`, relative to the largest entry of `a`.
fn relative_gap(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (mut gap, mut peak) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        for (p, q) in x.iter().zip(y) {
            gap = gap.max(f64::from((p - q).abs()));
            peak = peak.max(f64::from(p.abs()));
        }
    }
    gap / peak
}

#[test]
fn an_adapter_with_alpha_apart_from_its_rank_folds_to_its_forward() {
    let mut tiny = tiny_sandwich(2, DType::F32);
    for shape in tiny.trainables.lora.values_mut() {
        shape.alpha = 5.0;
    }
    let lowered = Lowered::new(
        &tiny.piece,
        &tiny.ckpt,
        &tiny.trainables,
        &Device::Cpu,
        DType::F32,
        &mut Rng::new(1, 0),
    )
    .unwrap();
    let untrained = host(&lowered.forward(&tiny.inputs).unwrap());
    // A target away from the start, so that the steps move every adapter.
    let target: Vec<Tensor> = lowered
        .forward(&tiny.inputs)
        .unwrap()
        .iter()
        .map(|t| t.affine(1.1, 0.05).unwrap().detach())
        .collect();
    let options = StOptions::default();
    let mut adam = SandwichAdam::new(lowered.params(), &tiny.trainables, &options).unwrap();
    for _ in 0..5 {
        let outputs = lowered.forward(&tiny.inputs).unwrap();
        let terms: Vec<Tensor> = outputs
            .iter()
            .zip(&target)
            .map(|(y, t)| (y - t).unwrap().sqr().unwrap().mean_all().unwrap())
            .collect();
        let loss = Tensor::stack(&terms, 0).unwrap().sum_all().unwrap();
        adam.backward_step(&loss).unwrap();
    }
    let trained = host(&lowered.forward(&tiny.inputs).unwrap());
    assert!(
        relative_gap(&trained, &untrained) > 1e-3,
        "training moved nothing"
    );

    let adapters = train::adapters(&lowered).unwrap();
    assert!(adapters.iter().all(|a| a.alpha == 5.0 && a.rank == 2));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("st.safetensors");
    let (scheme, config) = (&tiny.ckpt.scheme, &tiny.ckpt.config);
    write_lora(&file, scheme, config, &adapters, &BTreeMap::new()).unwrap();
    let mut folded = tiny.graph.clone();
    let fitted: Vec<(String, Arc<Vec<f32>>)> = lowered
        .full_values()
        .unwrap()
        .into_iter()
        .map(|(name, values)| (name, Arc::new(values)))
        .collect();
    train::apply_fitted(&mut folded, &fitted).unwrap();
    let spec = LoraSpec {
        path: file,
        scale: 1.0,
    };
    let report = passes::lora::run(&mut folded, &tiny.ckpt.config, &[spec], false).unwrap();
    assert!(report.is_some());
    let (piece, _) = piece(&folded, &tiny.sandwich);
    let frozen = Lowered::new(
        &piece,
        &tiny.ckpt,
        &Trainables::default(),
        &Device::Cpu,
        DType::F32,
        &mut Rng::new(1, 0),
    )
    .unwrap();
    let from_file = host(&frozen.forward(&tiny.inputs).unwrap());
    let gap = relative_gap(&trained, &from_file);
    assert!(
        gap < 1e-5,
        "the folded file computes {gap:.2e} (relative) away from the trained forward"
    );
}
