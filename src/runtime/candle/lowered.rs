//! A piece lowered to candle: its nodes as a list of steps over numbered value slots, its
//! weights bound as constant tensors or trainable variables, run forward on candle tensors so
//! that autograd reaches every trainable variable.

use super::candle_error;
use super::lower::{NodeCx, Rule, rule};
use super::trainables::{self, LoraValues, Param, Trainables, Trained, values_f32};
use crate::error::{Error, Result};
use crate::ir::delta::fold;
use crate::ir::{Graph, Op, TensorStore, TensorType, Value};
use crate::rng::Rng;
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;

/// An IR piece lowered to candle on one device, computing in one type (f32 or f64). Cast nodes
/// compute nothing: every value is in that type, and weights are read in f32 (with their
/// deltas folded, as export folds them) and converted to it.
pub struct Lowered {
    steps: Vec<Step>,
    slots: usize,
    inputs: Vec<(usize, TensorType)>,
    input_names: Vec<String>,
    /// Slots bound before the first step: the weights (constants and variables).
    bound: Vec<(usize, Tensor)>,
    outputs: Vec<usize>,
    output_names: Vec<String>,
    trained: Trained,
    device: Device,
    dtype: DType,
}

struct Step {
    name: String,
    op: Op,
    rule: Rule,
    inputs: Vec<usize>,
    outputs: Vec<usize>,
    /// The weight whose LoRA adapter this node applies.
    adapter: Option<String>,
    /// Slots no later step reads and no output is: dropped after this step.
    release: Vec<usize>,
}

impl Lowered {
    /// Lowers `piece` (weights read from `weights`) on `device` in `dtype`, with `trainables`
    /// as variables (LoRA A drawn from `rng`). Errors name any trainable that does not fit.
    pub fn new(
        piece: &Graph,
        weights: &dyn TensorStore,
        trainables: &Trainables,
        device: &Device,
        dtype: DType,
        rng: &mut Rng,
    ) -> Result<Self> {
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(Error::Usage(format!(
                "candle computes in f32 or f64, not {dtype:?}"
            )));
        }
        let mut trained = trainables::make(piece, trainables, device, dtype, rng)?;
        let order = piece.topo_order();
        let mut slot_of: HashMap<Value, usize> = HashMap::new();
        for &n in &order {
            for port in 0..piece.node(n).outputs.len() {
                let next = slot_of.len();
                slot_of.insert(Value { node: n, port }, next);
            }
        }
        let mut inputs = Vec::new();
        let mut bound = Vec::new();
        let mut steps = Vec::new();
        let mut full_bound: HashMap<String, Tensor> = HashMap::new();
        for &n in &order {
            let node = piece.node(n);
            let slot = slot_of[&Value { node: n, port: 0 }];
            match &node.op {
                Op::Input { name, ty } => inputs.push((node.seq, slot, name.clone(), ty.clone())),
                Op::Weight(w) => {
                    let tensor = match full_bound.get(&w.name) {
                        Some(t) => t.clone(),
                        None => {
                            let mut values = w.to_f32(weights)?;
                            if !w.deltas.is_empty() {
                                fold(&w.name, &w.shape, w.dtype, &w.deltas, &mut values)?;
                            }
                            let t = Tensor::from_vec(values, w.shape.as_slice(), device)
                                .and_then(|t| t.to_dtype(dtype))
                                .map_err(|e| {
                                    candle_error(format_args!("weight `{}`", w.name), e)
                                })?;
                            if trainables.full.contains(&w.name) {
                                let t = trained.add_full(&w.name, t)?;
                                full_bound.insert(w.name.clone(), t.clone());
                                t
                            } else {
                                t
                            }
                        }
                    };
                    bound.push((slot, tensor));
                }
                op => {
                    let lowering = rule(op.kind()).ok_or_else(|| {
                        Error::Internal(format!("candle has no rule for {}", op.kind()))
                    })?;
                    let ins = piece.inputs(n);
                    let adapter = match ins.get(1).map(|v| &piece.node(v.node).op) {
                        Some(Op::Weight(w)) if trained.adapters.contains_key(&w.name) => {
                            Some(w.name.clone())
                        }
                        _ => None,
                    };
                    steps.push(Step {
                        name: node.name.clone(),
                        op: op.clone(),
                        rule: lowering,
                        inputs: ins.iter().map(|v| slot_of[v]).collect(),
                        outputs: (0..node.outputs.len())
                            .map(|port| slot_of[&Value { node: n, port }])
                            .collect(),
                        adapter,
                        release: Vec::new(),
                    });
                }
            }
        }
        inputs.sort_by_key(|(seq, ..)| *seq);
        let outputs: Vec<usize> = piece.outputs.iter().map(|(_, v)| slot_of[v]).collect();
        let output_names = piece.outputs.iter().map(|(name, _)| name.clone()).collect();
        plan_releases(&mut steps, &outputs);
        Ok(Self {
            steps,
            slots: slot_of.len(),
            input_names: inputs.iter().map(|(_, _, name, _)| name.clone()).collect(),
            inputs: inputs
                .into_iter()
                .map(|(_, slot, _, ty)| (slot, ty))
                .collect(),
            bound,
            outputs,
            output_names,
            trained,
            device: device.clone(),
            dtype,
        })
    }

    /// Runs the piece on `inputs`, in the order of [`Lowered::input_names`] (the piece's Input
    /// nodes in the order they were added: for a piece from `Graph::extract`, the order of the
    /// outside values it returns; each named by `Graph::value_name`). Inputs of another float
    /// type are converted to the compute type. Returns the outputs in the piece's output order
    /// ([`Lowered::output_names`]), in the compute type.
    pub fn forward(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        if inputs.len() != self.inputs.len() {
            return Err(Error::Usage(format!(
                "the piece takes {} inputs ({}), got {}",
                self.inputs.len(),
                self.input_names.join(", "),
                inputs.len()
            )));
        }
        let mut slots: Vec<Option<Tensor>> = vec![None; self.slots];
        for ((slot, ty), (name, t)) in self.inputs.iter().zip(self.input_names.iter().zip(inputs)) {
            check_input(name, ty, t)?;
            let t = t
                .to_device(&self.device)
                .and_then(|t| t.to_dtype(self.dtype))
                .map_err(|e| candle_error(format_args!("input `{name}`"), e))?;
            slots[*slot] = Some(t);
        }
        for (slot, t) in &self.bound {
            slots[*slot] = Some(t.clone());
        }
        for step in &self.steps {
            let ins = step
                .inputs
                .iter()
                .map(|&s| {
                    slots[s].clone().ok_or_else(|| {
                        Error::Internal(format!("`{}` reads a value not computed", step.name))
                    })
                })
                .collect::<Result<Vec<Tensor>>>()?;
            let cx = NodeCx {
                op: &step.op,
                lora: step.adapter.as_ref().map(|w| &self.trained.adapters[w]),
            };
            let context = || format!("node `{}` ({})", step.name, step.op.kind());
            let outs = (step.rule)(&cx, &ins).map_err(|e| candle_error(context(), e))?;
            if outs.len() != step.outputs.len() {
                return Err(Error::Internal(format!(
                    "{}: {} outputs, expected {}",
                    context(),
                    outs.len(),
                    step.outputs.len()
                )));
            }
            for (&slot, t) in step.outputs.iter().zip(outs) {
                slots[slot] = Some(t);
            }
            for &slot in &step.release {
                slots[slot] = None;
            }
        }
        self.outputs
            .iter()
            .zip(&self.output_names)
            .map(|(&slot, name)| {
                slots[slot]
                    .clone()
                    .ok_or_else(|| Error::Internal(format!("output `{name}` not computed")))
            })
            .collect()
    }

    /// The names of the inputs `forward` takes, in order.
    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    /// The names of the outputs `forward` returns, in order.
    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Every trainable variable: LoRA A and B of each adapted weight (in weight name order),
    /// then the weights trained whole (in the order the piece reads them).
    pub fn params(&self) -> &[Param] {
        &self.trained.params
    }

    /// The adapters' current values, in weight name order.
    pub fn lora_values(&self) -> Result<Vec<LoraValues>> {
        self.trained
            .shapes
            .iter()
            .map(|(weight, &(shape, weight_shape))| {
                let var = |suffix: &str| -> Result<Vec<f32>> {
                    let name = format!("{weight}.{suffix}");
                    let param = self
                        .trained
                        .params
                        .iter()
                        .find(|p| p.name == name)
                        .ok_or_else(|| Error::Internal(format!("no variable `{name}`")))?;
                    values_f32(&name, &param.var)
                };
                Ok(LoraValues {
                    weight: weight.clone(),
                    down: var("lora_down")?,
                    up: var("lora_up")?,
                    rank: shape.rank,
                    alpha: shape.alpha,
                    weight_shape,
                })
            })
            .collect()
    }

    /// The current values of the weights trained whole, as f32, in weight name order.
    pub fn full_values(&self) -> Result<Vec<(String, Vec<f32>)>> {
        self.trained
            .full
            .iter()
            .map(|(name, var)| Ok((name.clone(), values_f32(name, var)?)))
            .collect()
    }
}

/// An input's rank and known extents must be the piece's.
fn check_input(name: &str, ty: &TensorType, t: &Tensor) -> Result<()> {
    let dims = t.dims();
    let fits = dims.len() == ty.rank()
        && dims
            .iter()
            .zip(&ty.shape)
            .all(|(&d, want)| want.known().is_none_or(|w| w == d));
    if fits {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "input `{name}` has shape {dims:?}, but the piece takes {ty}"
        )))
    }
}

/// Fills each step's `release` with the slots it reads for the last time (outputs stay).
fn plan_releases(steps: &mut [Step], outputs: &[usize]) {
    let mut last_read: HashMap<usize, usize> = HashMap::new();
    for (k, step) in steps.iter().enumerate() {
        for &slot in &step.inputs {
            last_read.insert(slot, k);
        }
    }
    for (slot, k) in last_read {
        if !outputs.contains(&slot) {
            steps[k].release.push(slot);
        }
    }
    for step in steps.iter_mut() {
        step.release.sort_unstable();
    }
}
