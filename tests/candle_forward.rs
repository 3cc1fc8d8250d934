//! The candle lowering computes what ONNX Runtime computes: every stage of tiny-dev (prologue,
//! double and single blocks, the stages between and after them) and of a BRLL-rewritten model,
//! run through both backends on the same inputs; and the whole model run on candle stage by
//! stage matches diffusers. A lowered piece is deterministic, and an untrained LoRA adapter
//! (B = 0) changes nothing.

mod support;

use candle_core::{DType, Device};
use fastflux::ir::{BlockId, Graph};
use fastflux::metrics::relative_l2;
use fastflux::rng::Rng;
use fastflux::runtime::candle::{CandleBackend, LoraShape, Lowered, Trainables, from_host};
use fastflux::runtime::staged::StagedRunner;
use fastflux::tensor::read_f32_tensors;
use support::*;

/// Runs every stage of `graph` on candle from ONNX Runtime's activations and compares each of
/// its outputs with ONNX Runtime's.
fn every_stage_matches_ort(graph: &Graph, what: &str) {
    let ckpt = tiny_checkpoint();
    let reference = ort_activations(graph, &ckpt);
    let runner = StagedRunner::with_backend(graph, &ckpt, CandleBackend::cpu(), 2);
    let mut compared = 0;
    for (k, stage) in runner.stages().iter().enumerate() {
        let mut env = reference.clone();
        for v in &stage.outputs {
            env.remove(v);
        }
        runner.run_stage(k, &mut env).unwrap();
        for v in &stage.outputs {
            let name = graph.value_name(*v);
            let (ours, theirs) = (&env[v], &reference[v]);
            assert_eq!(ours.shape, theirs.shape, "{what}: `{name}`");
            let error = relative_l2(&ours.data, &theirs.data);
            assert!(
                error < 1e-5,
                "{what}, stage {k} ({:?}): `{name}` differs from ONNX Runtime by {error:.2e}",
                stage.block
            );
            compared += 1;
        }
    }
    let blocks = runner.stages().iter().filter(|s| s.block.is_some()).count();
    assert_eq!(blocks, 6, "{what}: every block is a stage");
    assert!(
        compared > runner.stages().len(),
        "{what}: {compared} outputs"
    );
}

#[test]
fn every_tiny_dev_stage_matches_onnx_runtime() {
    let ckpt = tiny_checkpoint();
    every_stage_matches_ort(&calibration_graph(&ckpt), "tiny-dev");
}

#[test]
fn every_brll_rewritten_stage_matches_onnx_runtime() {
    let ckpt = tiny_checkpoint();
    let graph = calibration_graph(&ckpt);
    let fits = [
        random_fit(&graph, BlockId::Double(1), false, 1),
        random_fit(&graph, BlockId::Single(2), true, 2),
    ];
    every_stage_matches_ort(
        &with_fits(&graph, &fits),
        "BRLL double.1 + conditioned single.2",
    );
}

#[test]
fn the_whole_model_on_candle_matches_diffusers() {
    let ckpt = tiny_checkpoint();
    let graph = calibration_graph(&ckpt);
    let runner = StagedRunner::with_backend(&graph, &ckpt, CandleBackend::cpu(), 1);
    let inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    let outputs = runner.run(&inputs).unwrap();
    let (_, reference) = golden_io("expected.safetensors");
    let error = relative_l2(&outputs["latent"].data, &reference);
    assert!(
        error < 1e-5,
        "candle, stage by stage: relative L2 error {error:.3e}"
    );
}

/// The whole model as one piece, its inputs from the golden file in the piece's order.
fn whole_model_inputs(lowered: &Lowered) -> Vec<candle_core::Tensor> {
    let golden_inputs = read_f32_tensors(&golden("inputs.safetensors")).unwrap();
    lowered
        .input_names()
        .iter()
        .map(|name| {
            let t = golden_inputs.iter().find(|t| &t.name == name).unwrap();
            from_host(t, &Device::Cpu, DType::F32).unwrap()
        })
        .collect()
}

fn values(t: &candle_core::Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn forward_is_deterministic_and_an_untrained_adapter_changes_nothing() {
    let ckpt = tiny_checkpoint();
    let graph = calibration_graph(&ckpt);
    let lower = |trainables: &Trainables| {
        let mut rng = Rng::new(5, 0);
        Lowered::new(
            &graph,
            &ckpt,
            trainables,
            &Device::Cpu,
            DType::F32,
            &mut rng,
        )
        .unwrap()
    };
    let frozen = lower(&Trainables::default());
    let inputs = whole_model_inputs(&frozen);
    let first = values(&frozen.forward(&inputs).unwrap()[0]);
    let second = values(&frozen.forward(&inputs).unwrap()[0]);
    assert!(
        first
            .iter()
            .zip(&second)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );

    let shape = LoraShape {
        rank: 4,
        alpha: 8.0,
    };
    let mut trainables = Trainables::default();
    for name in [
        "double_blocks.0.img_attn.qkv.weight",
        "double_blocks.1.txt_mlp.0.weight",
        "single_blocks.3.linear1.weight",
        "single_blocks.3.linear2.weight",
    ] {
        trainables.lora.insert(name.into(), shape);
    }
    trainables
        .full
        .insert("single_blocks.2.linear2.bias".into());
    let adapted = lower(&trainables);
    assert_eq!(adapted.params().len(), 9);
    let with_zero_up = values(&adapted.forward(&inputs).unwrap()[0]);
    assert!(
        first.iter().zip(&with_zero_up).all(|(a, b)| a == b),
        "B = 0 must give exactly the frozen forward"
    );

    // Each adapter's B made non-zero on its own moves the output: every adapter is on the path
    // (one that is not would leave its run equal to the frozen one), and so is the trained bias.
    let set_to = |p: &fastflux::runtime::candle::Param, value: f64| {
        let filled = p.var.ones_like().unwrap().affine(value, 0.0).unwrap();
        p.var.set(&filled).unwrap();
    };
    let ups: Vec<_> = adapted
        .params()
        .iter()
        .filter(|p| p.name.ends_with(".lora_up"))
        .collect();
    assert_eq!(ups.len(), 4);
    for chosen in &ups {
        for p in &ups {
            set_to(p, if p.name == chosen.name { 0.05 } else { 0.0 });
        }
        let moved = values(&adapted.forward(&inputs).unwrap()[0]);
        let error = relative_l2(&moved, &first);
        assert!(
            error > 1e-4,
            "`{}` alone moves the output by only {error:.2e}",
            chosen.name
        );
    }
    for p in &ups {
        set_to(p, 0.0);
    }
    let bias = adapted
        .params()
        .iter()
        .find(|p| p.name == "single_blocks.2.linear2.bias")
        .unwrap();
    let frozen_bias = bias.var.as_tensor().copy().unwrap();
    bias.var.set(&(&frozen_bias + 0.05).unwrap()).unwrap();
    let moved = values(&adapted.forward(&inputs).unwrap()[0]);
    let error = relative_l2(&moved, &first);
    assert!(
        error > 1e-4,
        "the trained bias moves the output by only {error:.2e}"
    );
    bias.var.set(&frozen_bias).unwrap();
    for p in &ups {
        set_to(p, 0.05);
    }
    let lora = adapted.lora_values().unwrap();
    assert_eq!(lora.len(), 4);
    assert!(lora.iter().all(|l| l.up.iter().all(|&v| v == 0.05f32)));
    assert_eq!(lora[0].weight_shape, [192, 64], "{}", lora[0].weight);
}
