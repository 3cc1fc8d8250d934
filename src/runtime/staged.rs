//! Running a graph stage by stage through a [`Backend`]: the prologue (embedders), each
//! transformer block, and what lies between and after. Each stage is extracted from the IR and
//! loaded by the backend on its own, so memory holds one block's weights plus the activations
//! that are still needed. Calibration reads and rewrites activations between stages. Where the
//! activations are kept between stages is the caller's choice (`Activations`): in memory, or
//! spilled to disk a chunk of samples at a time.

pub use super::activations::{Activations, Env};
use super::backend::{Backend, StageExecutable};
use super::ort::OrtBackend;
use super::spill::SpilledEnv;
use crate::error::{Error, Result};
use crate::ir::TensorStore;
use crate::ir::cost::Tokens;
use crate::ir::{BlockId, Dim, Graph, Op, Value};
use crate::tensor::Tensor;
use indicatif::ProgressBar;
use petgraph::stable_graph::NodeIndex;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug)]
pub struct Stage {
    /// The block this stage computes, or `None` for the nodes around the blocks.
    pub block: Option<BlockId>,
    pub nodes: Vec<NodeIndex>,
    pub inputs: Vec<Value>,
    pub outputs: Vec<Value>,
}

pub struct StagedRunner<'a, B: Backend = OrtBackend> {
    graph: &'a Graph,
    weights: &'a dyn TensorStore,
    backend: B,
    stages: Vec<Stage>,
    /// The last stage that reads each value.
    last_use: HashMap<Value, usize>,
    /// Samples per stage run: attention needs (tokens² · heads) floats per sample.
    batch: usize,
    progress: ProgressBar,
    /// Loaded stages kept between runs (`keep_loaded`): a sampler runs every stage once per
    /// step, and reloading means lowering and loading the stage's weights again.
    loaded: Option<RefCell<HashMap<usize, B::Stage>>>,
}

impl<'a> StagedRunner<'a> {
    /// Runs on ONNX Runtime's CPU kernels with `threads` intra-op threads.
    pub fn new(
        graph: &'a Graph,
        weights: &'a dyn TensorStore,
        batch: usize,
        threads: usize,
    ) -> Self {
        Self::with_backend(graph, weights, OrtBackend::cpu(threads), batch)
    }
}

impl<'a, B: Backend> StagedRunner<'a, B> {
    pub fn with_backend(
        graph: &'a Graph,
        weights: &'a dyn TensorStore,
        backend: B,
        batch: usize,
    ) -> Self {
        let stages = plan_stages(graph);
        let last_use = last_uses(&stages);
        Self {
            graph,
            weights,
            backend,
            stages,
            last_use,
            batch: batch.max(1),
            progress: ProgressBar::hidden(),
            loaded: None,
        }
    }

    /// Keeps every stage loaded after its first run (memory then holds all the weights the
    /// backend loaded, not one block's): for running the same graph many times, as sampling does.
    pub fn keep_loaded(mut self) -> Self {
        self.loaded = Some(RefCell::new(HashMap::new()));
        self
    }

    pub fn with_progress(mut self, progress: ProgressBar) -> Self {
        self.progress = progress;
        self
    }

    /// Samples per stage run from now on.
    pub fn with_batch(mut self, batch: usize) -> Self {
        self.batch = batch.max(1);
        self
    }

    /// Samples per stage run.
    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The graph's inputs, taken by name from `inputs`.
    /// Checked here, not left to the backend: the runner slices inputs into chunks of samples
    /// itself, and a tensor whose shape does not describe its data would make it panic.
    pub fn load_inputs(&self, inputs: &[Tensor]) -> Result<Env> {
        let mut env = Env::new();
        self.load_inputs_into(inputs, &mut env)?;
        Ok(env)
    }

    /// The graph's inputs, taken by name from `inputs`, added to `env` one at a time (a spilled
    /// store then never holds a second copy of the whole set).
    pub fn load_inputs_into(&self, inputs: &[Tensor], env: &mut impl Activations) -> Result<()> {
        for n in self.graph.graph.node_indices() {
            if let Op::Input { name, ty } = &self.graph.node(n).op {
                let tensor = inputs
                    .iter()
                    .find(|t| &t.name == name)
                    .ok_or_else(|| Error::Usage(format!("the inputs lack `{name}`")))?;
                let (shape, len) = (&tensor.shape, tensor.data.len());
                if shape.len() != ty.rank() {
                    return Err(Error::Usage(format!(
                        "input `{name}` has shape {shape:?}, but the graph takes {ty}"
                    )));
                }
                if shape.iter().product::<usize>() != len {
                    return Err(Error::Usage(format!(
                        "input `{name}` has shape {shape:?} but {len} values"
                    )));
                }
                let v = Value { node: n, port: 0 };
                env.append(v, tensor.clone(), self.batched(v))?;
            }
        }
        Ok(())
    }

    /// Runs every stage; returns the graph's outputs by name. The activations between stages
    /// are spilled (`runtime::spill`): memory holds one chunk of samples, however many there are.
    pub fn run(&self, inputs: &[Tensor]) -> Result<BTreeMap<String, Tensor>> {
        let mut env = SpilledEnv::default();
        self.load_inputs_into(inputs, &mut env)?;
        for k in 0..self.stages.len() {
            self.run_stage(k, &mut env)?;
            self.release(k, &mut env);
        }
        self.graph
            .outputs
            .iter()
            .map(|(name, v)| {
                let t = env
                    .read(*v, None)
                    .map_err(|_| Error::Internal(format!("output `{name}` not computed")))?;
                Ok((name.clone(), t))
            })
            .collect()
    }

    /// Runs stage `k` over all samples, chunk by chunk, and appends its outputs to `env`. Values
    /// of those outputs left in `env` from an earlier run are removed first; on an error, `env`
    /// may hold the chunks computed before it.
    pub fn run_stage(&self, k: usize, env: &mut impl Activations) -> Result<()> {
        let stage = &self.stages[k];
        let (piece, external) = self.graph.extract(&stage.nodes, &stage.outputs)?;
        let kept = self.loaded.as_ref().and_then(|l| l.borrow_mut().remove(&k));
        let mut model = match kept {
            Some(model) => model,
            None => self.backend.load(&piece, self.weights)?,
        };
        if let Some(&v) = external.iter().find(|&&v| env.samples(v).is_none()) {
            return Err(self.not_held(k, v));
        }
        let samples = self.samples(env, &external)?;
        // Outputs are appended chunk by chunk, so none may be left from an earlier run.
        env.retain(&|v| !stage.outputs.contains(v));
        for start in (0..samples).step_by(self.batch) {
            let rows = start..(start + self.batch).min(samples);
            let inputs: Vec<Tensor> = external
                .iter()
                .map(|&v| env.read(v, self.batched(v).then(|| rows.clone())))
                .collect::<Result<_>>()?;
            let outputs = model.run(&inputs)?;
            for (&v, out) in stage.outputs.iter().zip(outputs) {
                env.append(v, out, self.batched(v))?;
            }
            self.progress.inc(1);
        }
        if let Some(loaded) = &self.loaded {
            loaded.borrow_mut().insert(k, model);
        }
        Ok(())
    }

    /// Drops what no stage after `k` reads (model outputs stay).
    pub fn release(&self, k: usize, env: &mut impl Activations) {
        let outputs: Vec<Value> = self.graph.outputs.iter().map(|(_, v)| *v).collect();
        env.retain(&|v| outputs.contains(v) || self.last_use.get(v).is_some_and(|&last| last > k));
    }

    /// How many chunks a full run makes (for progress bars).
    pub fn chunks(&self, samples: usize) -> u64 {
        (self.stages.len() * samples.div_ceil(self.batch)) as u64
    }

    /// Whether `v` holds one row per sample (RoPE tables are shared by all).
    pub fn batched(&self, v: Value) -> bool {
        batched(self.graph, v)
    }

    fn samples(&self, env: &impl Activations, external: &[Value]) -> Result<usize> {
        match external.iter().find(|&&v| self.batched(v)) {
            Some(&v) => Ok(env.samples(v).unwrap_or(1)),
            None => Ok(1),
        }
    }

    /// Stage `k` needs `v`, which `env` does not hold: named as exported models name it.
    fn not_held(&self, k: usize, v: Value) -> Error {
        let part = match self.stages[k].block {
            Some(block) => block.to_string(),
            None => "outside the blocks".to_owned(),
        };
        Error::Internal(format!(
            "stage {k} ({part}) reads `{}`, which no stage before it computed",
            self.graph.value_name(v)
        ))
    }
}

/// Splits the graph's compute nodes into stages by their position in the model
/// (`Graph::model_order`): a block's nodes form one stage; the nodes outside the blocks run
/// right after the last block they depend on (the embedders, and all that reads only them, first).
pub fn plan_stages(graph: &Graph) -> Vec<Stage> {
    let blocks: Vec<BlockId> = graph.blocks().into_iter().collect();
    let mut groups: BTreeMap<usize, Vec<NodeIndex>> = BTreeMap::new();
    for (n, pos) in graph.model_order() {
        if !matches!(graph.node(n).op, Op::Weight(_) | Op::Input { .. }) {
            groups.entry(pos).or_default().push(n);
        }
    }
    let mut stages: Vec<Stage> = groups
        .into_iter()
        .map(|(pos, nodes)| Stage {
            block: (pos > 0 && pos % 2 == 0).then(|| blocks[pos / 2 - 1]),
            nodes,
            inputs: Vec::new(),
            outputs: Vec::new(),
        })
        .collect();
    let stage_of: HashMap<NodeIndex, usize> = stages
        .iter()
        .enumerate()
        .flat_map(|(k, s)| s.nodes.iter().map(move |&n| (n, k)))
        .collect();
    let model_outputs: Vec<Value> = graph.outputs.iter().map(|(_, v)| *v).collect();
    for (k, stage) in stages.iter_mut().enumerate() {
        let mut inputs = Vec::new();
        let mut outputs = Vec::new();
        for &n in &stage.nodes {
            for v in graph.inputs(n) {
                let outside = stage_of.get(&v.node).is_none_or(|&s| s != k);
                let is_weight = matches!(graph.node(v.node).op, Op::Weight(_));
                if outside && !is_weight && !inputs.contains(&v) {
                    inputs.push(v);
                }
            }
            for port in 0..graph.node(n).outputs.len() {
                let v = Value { node: n, port };
                let read_elsewhere = graph
                    .users(v)
                    .iter()
                    .any(|(u, _)| stage_of.get(u) != Some(&k));
                if read_elsewhere || model_outputs.contains(&v) {
                    outputs.push(v);
                }
            }
        }
        stage.inputs = inputs;
        stage.outputs = outputs;
    }
    stages
}

/// Bytes of one sample's activations held between `stages` at the widest point of a walk (a
/// stage's inputs still held while its outputs are appended), at `tokens`.
pub fn held_bytes(graph: &Graph, stages: &[Stage], tokens: Tokens) -> u64 {
    let last_use = last_uses(stages);
    let outputs: Vec<Value> = graph.outputs.iter().map(|(_, v)| *v).collect();
    let mut held: Vec<Value> = (graph.graph.node_indices())
        .filter(|&n| matches!(graph.node(n).op, Op::Input { .. }))
        .map(|node| Value { node, port: 0 })
        .collect();
    let mut widest = 0;
    for (k, stage) in stages.iter().enumerate() {
        held.extend(stage.outputs.iter().copied());
        let bytes = held
            .iter()
            .filter(|&&v| batched(graph, v))
            .map(|&v| graph.sample_bytes(v, tokens))
            .sum();
        widest = widest.max(bytes);
        held.retain(|v| outputs.contains(v) || last_use.get(v).is_some_and(|&l| l > k));
    }
    widest
}

/// Bytes one sample takes while the largest of `stages` runs: its inputs, and every
/// intermediate of its nodes (`Graph::working_bytes`), at `tokens`.
pub fn working_bytes(graph: &Graph, stages: &[Stage], tokens: Tokens) -> u64 {
    stages
        .iter()
        .map(|s| {
            let inputs: u64 = s
                .inputs
                .iter()
                .map(|&v| graph.sample_bytes(v, tokens))
                .sum();
            inputs + graph.working_bytes(&s.nodes, tokens)
        })
        .max()
        .unwrap_or(0)
}

/// Whether `v` carries one row per sample: the runner stacks samples on the batch axis `B`
/// (RoPE tables are shared by all).
pub fn batched(graph: &Graph, v: Value) -> bool {
    graph.ty(v).shape.first() == Some(&Dim::sym("B"))
}

/// The last stage that reads each value.
fn last_uses(stages: &[Stage]) -> HashMap<Value, usize> {
    let mut last_use = HashMap::new();
    for (k, stage) in stages.iter().enumerate() {
        for &v in &stage.inputs {
            last_use.insert(v, k);
        }
    }
    last_use
}
