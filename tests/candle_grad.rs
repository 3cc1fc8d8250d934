//! Training through the candle lowering: on a sandwich of tiny-dev (double block 1, single
//! block 0 replaced by a conditioned BRLL fit, single block 1), with the trainables production
//! training builds (`fastflux::train::trainables`: LoRA on every linear of the unreplaced blocks
//! but their modulation, the fitted node trained whole), in f64, the autograd gradient of an MSE
//! loss matches central finite differences for every trainable tensor, and every trainable
//! tensor receives a gradient.

mod support;

use candle_core::{DType, Device, Tensor, Var};
use fastflux::ir::op::OpKind;
use fastflux::ir::{BlockId, Op};
use fastflux::rng::Rng;
use fastflux::runtime::candle::{Lowered, ParamKind};
use support::*;

struct Sandwich {
    lowered: Lowered,
    inputs: Vec<Tensor>,
    target: Vec<Tensor>,
}

fn sandwich() -> Sandwich {
    let tiny = tiny_sandwich(2, DType::F64);
    let mut rng = Rng::new(11, 0);
    let lowered = Lowered::new(
        &tiny.piece,
        &tiny.ckpt,
        &tiny.trainables,
        &Device::Cpu,
        DType::F64,
        &mut rng,
    )
    .unwrap();
    let inputs = tiny.inputs;
    // B starts at zero, which would make A's gradient zero: give every B values first.
    let mut rng = Rng::new(12, 0);
    for p in lowered.params() {
        if let ParamKind::LoraUp { .. } = p.kind {
            let values: Vec<f64> = (0..p.var.elem_count())
                .map(|_| 0.1 * rng.normal())
                .collect();
            p.var
                .set(&Tensor::from_vec(values, p.var.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }
    let target = lowered
        .forward(&inputs)
        .unwrap()
        .iter()
        .map(|t| {
            let noise: Vec<f64> = (0..t.elem_count()).map(|_| rng.normal()).collect();
            let noise = Tensor::from_vec(noise, t.shape(), &Device::Cpu).unwrap();
            (t + noise).unwrap().detach()
        })
        .collect();
    Sandwich {
        lowered,
        inputs,
        target,
    }
}

/// Every linear of a neighbour but its modulation carries an adapter: the 8 of a double block
/// (qkv, proj and the two MLP linears of each stream) and the 2 of a single block; the fitted
/// node's W, b and U train whole.
#[test]
fn production_adapts_every_linear_of_every_neighbour() {
    let tiny = tiny_sandwich(2, DType::F32);
    let t = &tiny.trainables;
    for (block, expected) in [(BlockId::Double(1), 8), (BlockId::Single(1), 2)] {
        let prefix = format!("{block}.");
        let adapted = t.lora.keys().filter(|w| w.starts_with(&prefix)).count();
        assert_eq!(adapted, expected, "{block}: {:?}", t.lora.keys());
        for n in tiny.piece.graph.node_indices() {
            let node = tiny.piece.node(n);
            if node.block != Some(block) || node.op.kind() != OpKind::Linear {
                continue;
            }
            let Op::Weight(w) = &tiny.piece.node(tiny.piece.inputs(n)[1].node).op else {
                panic!("`{}` reads no weight", node.name)
            };
            let modulation = w.name.contains("_mod.") || w.name.contains("modulation.");
            assert_eq!(
                t.lora.contains_key(&w.name),
                !modulation,
                "`{}` (adapted: modulation linears only are left out)",
                w.name
            );
        }
    }
    assert_eq!(t.lora.len(), 8 + 2);
    assert!(t.lora.values().all(|s| s.rank == 2));
    assert_eq!(t.full.len(), 3, "{:?}", t.full);
    assert!(t.full.iter().all(|w| w.starts_with("single_blocks.0.")));
}

/// The mean squared error over every output of the piece.
fn loss(s: &Sandwich) -> Tensor {
    let outputs = s.lowered.forward(&s.inputs).unwrap();
    let terms: Vec<Tensor> = outputs
        .iter()
        .zip(&s.target)
        .map(|(y, t)| (y - t).unwrap().sqr().unwrap().mean_all().unwrap())
        .collect();
    Tensor::stack(&terms, 0).unwrap().sum_all().unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_scalar::<f64>().unwrap()
}

fn with_entry(var: &Var, index: usize, value: f64) {
    let mut values = var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    values[index] = value;
    var.set(&Tensor::from_vec(values, var.shape(), var.device()).unwrap())
        .unwrap();
}

#[test]
fn every_trainable_gradient_matches_finite_differences() {
    let s = sandwich();
    let grads = loss(&s).backward().unwrap();
    let mut rng = Rng::new(13, 0);
    let step = 1e-5;
    for p in s.lowered.params() {
        let grad = grads
            .get(&p.var)
            .unwrap_or_else(|| panic!("`{}` received no gradient", p.name))
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap();
        let largest = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        assert!(largest > 0.0, "`{}`: the gradient is zero", p.name);
        let peak = grad.iter().position(|g| g.abs() == largest).unwrap();
        let mut entries = vec![peak];
        entries.extend((0..2).map(|_| rng.next_u64() as usize % grad.len()));
        let values = p.var.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for i in entries {
            with_entry(&p.var, i, values[i] + step);
            let up = scalar(&loss(&s));
            with_entry(&p.var, i, values[i] - step);
            let down = scalar(&loss(&s));
            with_entry(&p.var, i, values[i]);
            let numeric = (up - down) / (2.0 * step);
            let error = (numeric - grad[i]).abs() / largest;
            assert!(
                error < 1e-6,
                "`{}`[{i}]: autograd {:.9e}, finite differences {numeric:.9e} \
                 (error {error:.1e} of the largest entry {largest:.3e})",
                p.name,
                grad[i]
            );
        }
    }
}

#[test]
fn every_trainable_tensor_receives_a_gradient() {
    let s = sandwich();
    let grads = loss(&s).backward().unwrap();
    let missing: Vec<&str> = s
        .lowered
        .params()
        .iter()
        .filter(|p| grads.get(&p.var).is_none())
        .map(|p| p.name.as_str())
        .collect();
    assert!(missing.is_empty(), "no gradient for {missing:?}");
    assert_eq!(s.lowered.params().len(), 2 * 10 + 3);
}
