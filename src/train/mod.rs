//! Sandwich training (FastFLUX's ST): after BRLL, the blocks around each run of replaced blocks
//! learn to absorb the replacement's error. LoRA adapters on every linear of the neighbours and
//! the fitted nodes' own weights are trained with candle, on the sandwich's subgraph of the
//! pruned model lowered from the IR (`runtime::candle`), to reproduce what the original model
//! computes where the sandwich ends, from the calibration inputs. The trained adapters become a
//! LoRA file that the LoRA pass folds into the exported weights, and the trained fitted weights
//! replace the fitted ones.

mod data;
mod optimize;
mod rates;
pub mod sandwich;

pub use rates::SandwichAdam;
pub use sandwich::{Sandwich, sandwiches};

use crate::checkpoint::FluxCheckpoint;
use crate::checkpoint::lora::Adapter;
use crate::error::{Error, Result};
use crate::fit::calibrate::{CalibrationOptions, staged_runner};
use crate::generation::flux1::NAMES;
use crate::generation::table::Scope;
use crate::inputs::InputSet;
use crate::ir::{BlockId, Graph, Op, WeightData};
use crate::runtime::candle::{self, CandleDevice, LoraShape, Lowered, Trainables};
use data::Walk;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

/// Where a sandwich's input activations come from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub enum Entry {
    /// The original model's activations at the sandwich's entry.
    Original,
    /// The pruned model's, with every earlier sandwich already trained: sandwiches are then
    /// trained in model order, as the BRLL fits are.
    #[default]
    Pruned,
}

#[derive(Clone, Debug)]
pub struct StOptions {
    /// `--st-steps`: optimizer steps per sandwich (0: no training).
    pub steps: usize,
    /// `--st-rank`: the adapters' rank (alpha = rank, so the update is `B·A`). The default, 16,
    /// is measured: on the trained toy, 500 steps at batch 4 bring BRLL's held-out error from
    /// 0.164 to 0.138 at rank 8 and to 0.130 at rank 16 (BENCHMARKS.md).
    pub rank: usize,
    /// `--st-lr`: the learning rate at fan-in 1. Each trainable's Adam rate is this over its
    /// fan-in (and over an adapter's alpha/rank), times RAdam's rectification (`rates`). The
    /// default, 0.064, is the toy's old rate for its 64-wide `W`: it lowers the exit loss at
    /// widths 64, 512 and 3072 (BENCHMARKS.md, "Sandwich training at any width").
    pub lr: f64,
    /// `--st-batch`: calibration samples per step.
    pub batch: usize,
    /// `--st-entry`.
    pub entry: Entry,
    /// Seeds the adapters' initialisation and the mini-batch order.
    pub seed: u64,
    pub show_progress: bool,
    /// `--st-log`: a file that gets one line per optimizer step (sandwich, step, RAdam's
    /// rectification factor, the step's mini-batch loss), written as training goes.
    pub log: Option<PathBuf>,
}

impl StOptions {
    /// How the trained adapters are named among the folded LoRAs in the exported model's
    /// metadata: by the options that trained them (with the calibration set and the checkpoint,
    /// what decides them), not by a file's path, so the same command gives the same bytes
    /// wherever it runs and whether or not `--st-save` kept the file. Folded at scale 1.
    pub fn label(&self) -> String {
        let entry = match self.entry {
            Entry::Original => "original",
            Entry::Pruned => "pruned",
        };
        format!(
            "sandwich-training(steps={},rank={},lr={},batch={},entry={entry},seed={}):1",
            self.steps, self.rank, self.lr, self.batch, self.seed
        )
    }
}

impl Default for StOptions {
    fn default() -> Self {
        Self {
            steps: 0,
            rank: 16,
            lr: 0.064,
            batch: 4,
            entry: Entry::default(),
            seed: 0,
            show_progress: false,
            log: None,
        }
    }
}

/// What training one sandwich did.
#[derive(Clone, Debug)]
pub struct SandwichReport {
    pub sandwich: Sandwich,
    /// Mean over the calibration samples of the summed per-stream MSE at the sandwich's exit,
    /// before and after training.
    pub loss_before: f64,
    pub loss_after: f64,
    pub steps: usize,
    pub trainable_parameters: usize,
    /// Wall time of the whole sandwich (lowering, both loss measurements, the steps) and of
    /// its optimizer steps alone.
    pub seconds: f64,
    pub step_seconds: f64,
    /// The loss training ended at when that was above `loss_before`: the sandwich then kept
    /// its starting point (its BRLL fit, adapters that change nothing) and `loss_after` is
    /// `loss_before`.
    pub reverted_from: Option<f64>,
    /// Each step's mini-batch loss, in step order (before that step's update).
    pub curve: Vec<f64>,
}

impl SandwichReport {
    /// The mean mini-batch loss over each fifth of the steps (`a, b, c, d, e`): the loss
    /// curve's shape, not only its ends. None below 5 steps.
    pub fn curve_by_fifths(&self) -> Option<String> {
        let curve = &self.curve;
        if curve.len() < 5 {
            return None;
        }
        let parts: Vec<String> = (0..5)
            .map(|k| {
                let part = &curve[k * curve.len() / 5..(k + 1) * curve.len() / 5];
                format!("{:.4e}", part.iter().sum::<f64>() / part.len() as f64)
            })
            .collect();
        Some(parts.join(", "))
    }
}

/// What sandwich training produced.
pub struct StOutcome {
    pub sandwiches: Vec<SandwichReport>,
    /// The neighbours' trained adapters.
    pub adapters: Vec<Adapter>,
    /// The fitted nodes' trained weights, by weight name.
    pub fitted: Vec<(String, Arc<Vec<f32>>)>,
    pub samples: usize,
    pub options: StOptions,
    /// Where candle trained: `--execution-provider` as candle resolved it.
    pub device: CandleDevice,
}

/// Trains every sandwich of `pruned`, the f32 model BRLL rewrote, against `original`, the f32
/// model it was rewritten from, on `inputs` (the calibration set).
pub fn run(
    ckpt: &FluxCheckpoint,
    original: &Graph,
    pruned: &Graph,
    inputs: &InputSet,
    calibration: &CalibrationOptions,
    options: &StOptions,
) -> Result<StOutcome> {
    let order: Vec<BlockId> = original.blocks().into_iter().collect();
    let replaced = pruned.replaced_blocks();
    check(pruned, &replaced, inputs, options)?;
    let plan = sandwiches(&order, &replaced);
    let device = candle::device(calibration.provider)?;
    if let Some(path) = &options.log {
        std::fs::write(path, "sandwich\tstep\trectification\tbatch_loss\n")
            .map_err(|e| Error::io(path, e))?;
    }
    let mut walk = Walk::new(
        (
            original,
            staged_runner(original, ckpt, calibration, inputs)?,
        ),
        (pruned, staged_runner(pruned, ckpt, calibration, inputs)?),
        &inputs.tensors,
        options.entry,
    )?;
    let mut outcome = StOutcome {
        sandwiches: Vec::new(),
        adapters: Vec::new(),
        fitted: Vec::new(),
        samples: inputs.samples,
        options: options.clone(),
        device: CandleDevice::of(&device),
    };
    for (k, sandwich) in plan.iter().enumerate() {
        let data = walk.sandwich(sandwich)?;
        let trainables = trainables(pruned, sandwich, options.rank)?;
        let trained = optimize::train(ckpt, &data, &trainables, sandwich, k, options, &device)?;
        walk.trained(sandwich, &data, trained.exits)?;
        outcome.adapters.extend(trained.adapters);
        outcome.fitted.extend(trained.fitted);
        outcome.sandwiches.push(trained.report);
    }
    Ok(outcome)
}

/// Refuses what cannot train, before any stage runs.
fn check(
    pruned: &Graph,
    replaced: &BTreeSet<BlockId>,
    inputs: &InputSet,
    options: &StOptions,
) -> Result<()> {
    if replaced.is_empty() {
        return Err(Error::Usage(
            "--st-steps trains the blocks around replaced ones, but no block is replaced: \
             pass --replace or --prune (with a fraction that replaces at least one block)"
                .into(),
        ));
    }
    if options.rank == 0 {
        return Err(Error::Usage("--st-rank must be at least 1".into()));
    }
    if options.batch == 0 || inputs.samples < options.batch {
        return Err(Error::Usage(format!(
            "--st-batch {}: the calibration set has {} samples, too few for one batch",
            options.batch, inputs.samples
        )));
    }
    let first = rates::first_step();
    if (1..first).contains(&options.steps) {
        return Err(Error::Usage(format!(
            "--st-steps {}: sandwich training's rectified Adam takes its first step at step \
             {first} (the earlier ones only estimate the gradient's moments): pass 0 for no \
             training, or at least {first}",
            options.steps
        )));
    }
    if !(options.lr.is_finite() && options.lr > 0.0) {
        return Err(Error::Usage(format!(
            "--st-lr {}: expected a positive learning rate",
            options.lr
        )));
    }
    let order: Vec<BlockId> = pruned.blocks().into_iter().collect();
    for sandwich in sandwiches(&order, replaced) {
        for (name, shape) in adapted_weights(pruned, &sandwich) {
            let limit = shape[0].min(shape[1]);
            if options.rank > limit {
                return Err(Error::Usage(format!(
                    "--st-rank {}: `{name}` is {shape:?}, which allows rank at most {limit}",
                    options.rank
                )));
            }
        }
    }
    Ok(())
}

/// The weights of the sandwich's neighbours that get adapters, with their shapes: the linears
/// the naming table marks adapted (attention qkv and output projections and the MLPs of both
/// streams of a double block, and a single block's two linears). The modulation linears read
/// only `silu(vec)` and are left as they are, as the method prescribes.
fn adapted_weights(graph: &Graph, sandwich: &Sandwich) -> Vec<(String, [usize; 2])> {
    let neighbours: BTreeSet<BlockId> = sandwich.neighbours().collect();
    let mut found = Vec::new();
    for node in graph.graph.node_weights() {
        let Op::Weight(w) = &node.op else { continue };
        let Some(block) = node.block.filter(|b| neighbours.contains(b)) else {
            continue;
        };
        let module = w
            .name
            .strip_prefix(&format!("{block}."))
            .and_then(|m| m.strip_suffix(".weight"));
        let scope = match block {
            BlockId::Double(_) => Scope::Double,
            BlockId::Single(_) => Scope::Single,
        };
        if let (Some(module), &[rows, cols]) = (module, w.shape.as_slice())
            && NAMES.adapted(scope, module)
        {
            found.push((w.name.clone(), [rows, cols]));
        }
    }
    found.sort();
    found
}

/// What trains in `sandwich` of `graph` (the pruned model): adapters of rank `rank` (alpha =
/// rank) on its neighbours' linears, and its fitted nodes' weights whole.
pub fn trainables(graph: &Graph, sandwich: &Sandwich, rank: usize) -> Result<Trainables> {
    let mut trainables = Trainables::default();
    for (name, _) in adapted_weights(graph, sandwich) {
        trainables.lora.insert(
            name,
            LoraShape {
                rank,
                alpha: rank as f32,
            },
        );
    }
    for node in graph.graph.node_weights() {
        if let (Op::Weight(w), Some(block)) = (&node.op, node.block)
            && sandwich.replaced.contains(&block)
        {
            trainables.full.insert(w.name.clone());
        }
    }
    if trainables.full.is_empty() {
        return Err(Error::Internal(format!(
            "sandwich {sandwich} has no fitted weights"
        )));
    }
    Ok(trainables)
}

/// The adapters of `lowered` as they are now, for a LoRA file.
pub fn adapters(lowered: &Lowered) -> Result<Vec<Adapter>> {
    Ok(lowered
        .lora_values()?
        .into_iter()
        .map(|l| Adapter {
            weight: l.weight,
            shape: l.weight_shape,
            rank: l.rank,
            alpha: l.alpha,
            down: l.down,
            up: l.up,
        })
        .collect())
}

/// Replaces the fitted weights of `graph` with their trained values (by weight name).
pub fn apply_fitted(graph: &mut Graph, fitted: &[(String, Arc<Vec<f32>>)]) -> Result<()> {
    for (name, values) in fitted {
        let weight = graph
            .graph
            .node_weights_mut()
            .find_map(|n| match &mut n.op {
                Op::Weight(w) if &w.name == name => Some(w),
                _ => None,
            });
        let weight = weight.ok_or_else(|| {
            Error::Internal(format!("trained weight `{name}` is not in the model"))
        })?;
        if weight.numel() != values.len() {
            return Err(Error::Internal(format!(
                "trained weight `{name}`: {} values for shape {:?}",
                values.len(),
                weight.shape
            )));
        }
        weight.data = WeightData::Owned(values.clone());
    }
    Ok(())
}
