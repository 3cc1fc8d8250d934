//! The training data of each sandwich, from the calibration inputs: the activations entering it
//! and what the original model computes where it ends. One walk through the model, stage by
//! stage through ONNX Runtime as calibration runs it; when sandwiches take their entry from the
//! pruned model (`Entry::Pruned`), the pruned model's activations are walked beside the
//! original's, and each trained sandwich's own outputs carry the pruned walk on.
//!
//! Both walks spill their activations (`runtime::spill`): memory holds one chunk of samples of
//! a stage, and a sandwich's data is read back batch by batch, whatever the number of samples.
//! The calibration inputs themselves (the caller's `InputSet`) stay in memory.

use super::Entry;
use super::sandwich::Sandwich;
use crate::error::{Error, Result};
use crate::ir::{Graph, Value};
use crate::runtime::spill::{Held, SpilledEnv};
use crate::runtime::staged::StagedRunner;
use crate::tensor::Tensor;
use petgraph::stable_graph::NodeIndex;
use std::collections::{HashMap, HashSet};

/// One sandwich's subgraph and the data it trains on: every calibration sample's rows, spilled.
pub struct SandwichData {
    /// The sandwich's stages of the pruned model, extracted as one piece.
    pub piece: Graph,
    /// One value per piece input, in its input order: per-sample rows, or a shared tensor
    /// (RoPE tables).
    pub entry: Vec<Held>,
    /// The original model's values of the piece's outputs, in its output order.
    pub targets: Vec<Held>,
    /// The pruned model's values the piece's outputs stand for.
    pub exits: Vec<Value>,
}

/// The walk through the stages of the original and the pruned model.
pub struct Walk<'a> {
    original: (&'a Graph, StagedRunner<'a>, SpilledEnv),
    pruned: (&'a Graph, StagedRunner<'a>, SpilledEnv),
    /// The next stage each walk runs.
    next: (usize, usize),
    entry: Entry,
    original_nodes: HashMap<&'a str, NodeIndex>,
}

impl<'a> Walk<'a> {
    /// Starts both walks on `inputs`. The two runners must run the same stages: the pruned
    /// model is the original with block branches replaced, which keeps each block's stage.
    pub fn new(
        original: (&'a Graph, StagedRunner<'a>),
        pruned: (&'a Graph, StagedRunner<'a>),
        inputs: &[Tensor],
        entry: Entry,
    ) -> Result<Self> {
        let (os, ps) = (original.1.stages(), pruned.1.stages());
        let same = os.len() == ps.len() && os.iter().zip(ps).all(|(a, b)| a.block == b.block);
        if !same {
            return Err(Error::Internal(
                "the pruned model's stages are not the original's".into(),
            ));
        }
        let spill = |runner: &StagedRunner| {
            let mut env = SpilledEnv::default();
            runner.load_inputs_into(inputs, &mut env).map(|_| env)
        };
        let original_env = spill(&original.1)?;
        let pruned_env = match entry {
            Entry::Pruned => spill(&pruned.1)?,
            Entry::Original => SpilledEnv::default(),
        };
        let original_nodes = original
            .0
            .graph
            .node_indices()
            .map(|n| (original.0.node(n).name.as_str(), n))
            .collect();
        Ok(Self {
            original: (original.0, original.1, original_env),
            pruned: (pruned.0, pruned.1, pruned_env),
            next: (0, 0),
            entry,
            original_nodes,
        })
    }

    /// Walks on to `sandwich` (which must come after the previous one) and returns its data.
    pub fn sandwich(&mut self, sandwich: &Sandwich) -> Result<SandwichData> {
        let (first, last) = self.stage_range(sandwich)?;
        if first < self.next.0.max(self.next.1) {
            return Err(Error::Internal(format!(
                "sandwich {sandwich} comes before one already trained"
            )));
        }
        let (graph, runner) = (self.pruned.0, &self.pruned.1);
        let range: Vec<usize> = (first..=last).collect();
        let nodes: Vec<NodeIndex> = range
            .iter()
            .flat_map(|&k| runner.stages()[k].nodes.iter().copied())
            .collect();
        let inside: HashSet<NodeIndex> = nodes.iter().copied().collect();
        let model_outputs: Vec<Value> = graph.outputs.iter().map(|(_, v)| *v).collect();
        let exits: Vec<Value> = range
            .iter()
            .flat_map(|&k| runner.stages()[k].outputs.iter().copied())
            .filter(|&v| {
                model_outputs.contains(&v)
                    || graph.users(v).iter().any(|(u, _)| !inside.contains(u))
            })
            .collect();
        let (piece, external) = graph.extract(&nodes, &exits)?;

        self.run_original(first)?;
        let entry = match self.entry {
            Entry::Original => {
                let mapped = external
                    .iter()
                    .map(|&v| self.to_original(v))
                    .collect::<Result<Vec<_>>>()?;
                take(self.original.0, &self.original.2, &mapped)?
            }
            Entry::Pruned => {
                self.run_pruned(first)?;
                take(self.pruned.0, &self.pruned.2, &external)?
            }
        };
        self.run_original(last + 1)?;
        let mapped = exits
            .iter()
            .map(|&v| self.to_original(v))
            .collect::<Result<Vec<_>>>()?;
        let targets = take(self.original.0, &self.original.2, &mapped)?;
        Ok(SandwichData {
            piece,
            entry,
            targets,
            exits,
        })
    }

    /// Carries the pruned walk past `sandwich` with `outputs`, the trained sandwich's values of
    /// its exits (nothing to do when entries come from the original model).
    pub fn trained(
        &mut self,
        sandwich: &Sandwich,
        data: &SandwichData,
        outputs: Vec<Held>,
    ) -> Result<()> {
        if self.entry == Entry::Original {
            return Ok(());
        }
        let (_, last) = self.stage_range(sandwich)?;
        for (&v, t) in data.exits.iter().zip(outputs) {
            self.pruned.2.insert(v, t);
        }
        self.pruned.1.release(last, &mut self.pruned.2);
        self.next.1 = last + 1;
        Ok(())
    }

    /// The stages from the sandwich's first block through its last.
    fn stage_range(&self, sandwich: &Sandwich) -> Result<(usize, usize)> {
        let stages = self.pruned.1.stages();
        let stage_of = |b| {
            stages
                .iter()
                .position(|s| s.block == Some(b))
                .ok_or_else(|| Error::Internal(format!("{b} has no stage")))
        };
        let (first, last) = match (sandwich.blocks.first(), sandwich.blocks.last()) {
            (Some(&f), Some(&l)) => (stage_of(f)?, stage_of(l)?),
            _ => return Err(Error::Internal("an empty sandwich".into())),
        };
        Ok((first, last))
    }

    /// Runs the original model's stages up to (not including) `until`.
    fn run_original(&mut self, until: usize) -> Result<()> {
        let (_, runner, env) = &mut self.original;
        advance(runner, env, &mut self.next.0, until)
    }

    fn run_pruned(&mut self, until: usize) -> Result<()> {
        let (_, runner, env) = &mut self.pruned;
        advance(runner, env, &mut self.next.1, until)
    }

    /// The original model's value that pruned value `v` stands for: the node of the same
    /// name, or, for a fitted node's output, the original block's output of that stream.
    fn to_original(&self, v: Value) -> Result<Value> {
        let (original, pruned) = (self.original.0, self.pruned.0);
        let name = pruned.node(v.node).name.as_str();
        if let Some(&node) = self.original_nodes.get(name) {
            return Ok(Value { node, port: v.port });
        }
        for (block, io) in &pruned.block_io {
            for stream in io.streams.iter().filter(|s| s.output == v) {
                let found = original.block_io.get(block).and_then(|o| {
                    o.streams
                        .iter()
                        .find(|s| s.name == stream.name)
                        .map(|s| s.output)
                });
                if let Some(found) = found {
                    return Ok(found);
                }
            }
        }
        Err(Error::Internal(format!(
            "`{}` of the pruned model has no counterpart in the original",
            pruned.value_name(v)
        )))
    }
}

/// Runs `runner`'s stages from `*next` up to (not including) `until`, dropping what no later
/// stage reads.
fn advance(
    runner: &StagedRunner,
    env: &mut SpilledEnv,
    next: &mut usize,
    until: usize,
) -> Result<()> {
    for k in *next..until {
        runner.run_stage(k, env)?;
        runner.release(k, env);
    }
    *next = (*next).max(until);
    Ok(())
}

/// The held activations of `values` (of `graph`), each named in the error when it is missing.
fn take(graph: &Graph, env: &SpilledEnv, values: &[Value]) -> Result<Vec<Held>> {
    values
        .iter()
        .map(|&v| {
            env.get(v).cloned().ok_or_else(|| {
                Error::Internal(format!(
                    "the sandwich's activation `{}` was not computed by the walk",
                    graph.value_name(v)
                ))
            })
        })
        .collect()
}
