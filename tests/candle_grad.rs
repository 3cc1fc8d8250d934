//! Training through the candle lowering: on a sandwich of tiny-dev (double block 1, single
//! block 0 replaced by a conditioned BRLL fit, single block 1), with LoRA on every linear of
//! the unreplaced blocks and the fitted node trained whole, in f64, the autograd gradient of an
//! MSE loss matches central finite differences for every trainable tensor, and every trainable
//! tensor receives a gradient.

mod support;

use candle_core::{DType, Device, Tensor, Var};
use fastflux::ir::op::OpKind;
use fastflux::ir::{BlockId, Graph, Op};
use fastflux::rng::Rng;
use fastflux::runtime::candle::{LoraShape, Lowered, ParamKind, Trainables, from_host};
use fastflux::runtime::staged::plan_stages;
use support::*;

const NEIGHBOURS: [BlockId; 2] = [BlockId::Double(1), BlockId::Single(1)];
const REPLACED: BlockId = BlockId::Single(0);

struct Sandwich {
    lowered: Lowered,
    inputs: Vec<Tensor>,
    target: Vec<Tensor>,
}

/// Every Linear matrix of the neighbours gets an adapter; the fitted node's W, b and U train.
fn trainables(piece: &Graph) -> Trainables {
    let mut trainables = Trainables::default();
    for n in piece.graph.node_indices() {
        let node = piece.node(n);
        let Some(block) = node.block else { continue };
        let inputs = piece.inputs(n);
        let weight = |slot: usize| match &piece.node(inputs[slot].node).op {
            Op::Weight(w) => w.name.clone(),
            _ => panic!("`{}` input {slot} is not a weight", node.name),
        };
        match node.op.kind() {
            OpKind::Linear if NEIGHBOURS.contains(&block) => {
                let shape = LoraShape {
                    rank: 2,
                    alpha: 3.0,
                };
                trainables.lora.insert(weight(1), shape);
            }
            OpKind::LinearResidual if block == REPLACED => {
                trainables.full.extend([weight(1), weight(2), weight(4)]);
            }
            _ => {}
        }
    }
    trainables
}

fn sandwich() -> Sandwich {
    let ckpt = tiny_checkpoint();
    let original = calibration_graph(&ckpt);
    let graph = with_fits(&original, &[random_fit(&original, REPLACED, true, 3)]);
    let env = ort_activations(&graph, &ckpt);
    let stages = plan_stages(&graph);
    let first = stages
        .iter()
        .position(|s| s.block == Some(NEIGHBOURS[0]))
        .unwrap();
    let last = stages
        .iter()
        .position(|s| s.block == Some(NEIGHBOURS[1]))
        .unwrap();
    let nodes: Vec<_> = stages[first..=last]
        .iter()
        .flat_map(|s| s.nodes.clone())
        .collect();
    let (piece, external) = graph.extract(&nodes, &stages[last].outputs).unwrap();
    let trainables = trainables(&piece);
    assert_eq!(
        trainables.lora.len(),
        10 + 3,
        "{:?}",
        trainables.lora.keys()
    );
    assert_eq!(trainables.full.len(), 3);
    let mut rng = Rng::new(11, 0);
    let lowered = Lowered::new(
        &piece,
        &ckpt,
        &trainables,
        &Device::Cpu,
        DType::F64,
        &mut rng,
    )
    .unwrap();
    let inputs: Vec<Tensor> = external
        .iter()
        .map(|v| from_host(&env[v], &Device::Cpu, DType::F64).unwrap())
        .collect();
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
    assert_eq!(s.lowered.params().len(), 2 * 13 + 3);
}
