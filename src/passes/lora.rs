//! The LoRA folding pass: every resolved LoRA pair becomes a lazy delta on the weight node it
//! targets (`W ← W + scale · alpha/rank · B·A`, folded while the data file is written), so the
//! exported model carries no LoRA ops. It runs after every pass that replaces weights, so a
//! delta for a weight that BRLL removed is caught here, naming the block.

use crate::checkpoint::FluxConfig;
use crate::checkpoint::lora::{LoraFile, LoraPair, LoraSpec, ModuleNames};
use crate::error::{Error, Result};
use crate::ir::{BlockId, Delta, Graph, Op};
use petgraph::stable_graph::NodeIndex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;

/// How many unmatched keys an error lists before it says "and N more".
const LISTED_KEYS: usize = 20;

/// What folding did, per LoRA file.
#[derive(Clone, Debug, Default)]
pub struct LoraReport {
    pub files: Vec<FileReport>,
}

#[derive(Clone, Debug)]
pub struct FileReport {
    pub path: PathBuf,
    pub formats: String,
    pub scale: f32,
    pub deltas: usize,
    /// Deltas per block or top-level module, in model order.
    pub parts: BTreeMap<Part, usize>,
    /// The distinct alpha/rank factors of the file's modules.
    pub factors: Vec<f64>,
    /// Keys skipped under `--lora-allow-unmatched`.
    pub unmatched: usize,
}

/// Where in the model a delta lands.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// An embedder, named by its module (`img_in`, `time_in` …).
    Embedder(String),
    Block(BlockId),
    FinalLayer,
}

/// The tables that resolve LoRA module names against `graph`: the configuration's parameters
/// and every weight node, such as BRLL's fitted linear nodes.
pub fn module_names(graph: &Graph, config: &FluxConfig) -> ModuleNames {
    let weights: Vec<(&str, &[usize])> = graph
        .graph
        .node_weights()
        .filter_map(|n| match &n.op {
            Op::Weight(w) => Some((w.name.as_str(), w.shape.as_slice())),
            _ => None,
        })
        .collect();
    ModuleNames::new(config, weights)
}

/// Reads every `--lora` file against `graph` and folds it in. `None` when there are none.
pub fn run(
    graph: &mut Graph,
    config: &FluxConfig,
    specs: &[LoraSpec],
    allow_unmatched: bool,
) -> Result<Option<LoraReport>> {
    if specs.is_empty() {
        return Ok(None);
    }
    let names = module_names(graph, config);
    let files = specs
        .iter()
        .map(|spec| LoraFile::open(spec, &names))
        .collect::<Result<Vec<_>>>()?;
    fold_lora(graph, config, &files, allow_unmatched).map(Some)
}

/// Attaches every pair of `files` to its weight node as a delta.
pub fn fold_lora(
    graph: &mut Graph,
    config: &FluxConfig,
    files: &[LoraFile],
    allow_unmatched: bool,
) -> Result<LoraReport> {
    if !allow_unmatched && let Some(file) = files.iter().find(|f| !f.unmatched.is_empty()) {
        return Err(unmatched_error(file));
    }
    let params: BTreeSet<String> = config.parameters().into_iter().map(|(n, _)| n).collect();
    let nodes: HashMap<String, NodeIndex> = graph
        .graph
        .node_indices()
        .filter_map(|n| match &graph.graph[n].op {
            Op::Weight(w) => Some((w.name.clone(), n)),
            _ => None,
        })
        .collect();
    let mut report = LoraReport::default();
    for file in files {
        let mut parts = BTreeMap::<Part, usize>::new();
        for pair in &file.pairs {
            let node = locate(&nodes, &params, file, pair)?;
            let module = pair.target.weight.split('.').next().unwrap_or_default();
            let part = match graph.graph[node].block {
                Some(block) => Part::Block(block),
                None if module == "final_layer" => Part::FinalLayer,
                None => Part::Embedder(module.to_owned()),
            };
            *parts.entry(part).or_default() += 1;
            if let Op::Weight(w) = &mut graph.graph[node].op {
                w.deltas.push(delta(file, pair));
            }
        }
        let mut factors: Vec<f64> = file.pairs.iter().map(|p| p.factor).collect();
        factors.sort_by(f64::total_cmp);
        factors.dedup();
        let formats: Vec<String> = file.formats().iter().map(ToString::to_string).collect();
        report.files.push(FileReport {
            path: file.path.clone(),
            formats: formats.join(" + "),
            scale: file.scale,
            deltas: file.pairs.len(),
            parts,
            factors,
            unmatched: file.unmatched.len(),
        });
    }
    Ok(report)
}

/// The weight node a pair updates.
///   `Weight` named like the target                    → that node
///   absent, but a parameter of the model's config     → removed by BRLL: an error naming the block
fn locate(
    nodes: &HashMap<String, NodeIndex>,
    params: &BTreeSet<String>,
    file: &LoraFile,
    pair: &LoraPair,
) -> Result<NodeIndex> {
    let weight = &pair.target.weight;
    if let Some(&node) = nodes.get(weight) {
        return Ok(node);
    }
    let why = if params.contains(weight) {
        let block = block_of(weight).unwrap_or(weight);
        format!("`{weight}` was removed by BRLL (block {block} replaced by a fitted linear layer)")
    } else {
        format!("`{weight}` is not a weight of the compiled graph")
    };
    Err(Error::tensor(
        &file.path,
        &pair.module,
        format!("cannot be folded: {why}"),
    ))
}

/// `double_blocks.3` of `double_blocks.3.img_mlp.0.weight`; `None` outside the blocks.
fn block_of(weight: &str) -> Option<&str> {
    let kind = ["double_blocks.", "single_blocks."]
        .into_iter()
        .find(|k| weight.starts_with(k))?;
    let index_len = weight[kind.len()..].find('.')?;
    Some(&weight[..kind.len() + index_len])
}

fn delta(file: &LoraFile, pair: &LoraPair) -> Delta {
    Delta {
        rows: pair.target.rows.clone(),
        down: pair.down.clone(),
        up: pair.up.clone(),
        rank: pair.rank,
        scale: (f64::from(file.scale) * pair.factor) as f32,
        file: file.path.clone(),
        module: pair.module.clone(),
    }
}

fn unmatched_error(file: &LoraFile) -> Error {
    let keys = &file.unmatched;
    let mut listed: Vec<String> = keys
        .iter()
        .take(LISTED_KEYS)
        .map(|k| format!("`{k}`"))
        .collect();
    if keys.len() > LISTED_KEYS {
        listed.push(format!("and {} more", keys.len() - LISTED_KEYS));
    }
    Error::file(
        &file.path,
        format!(
            "{} LoRA keys match no weight of this model: {}. Pass --lora-allow-unmatched to fold \
             the rest and skip these",
            keys.len(),
            listed.join(", ")
        ),
    )
}

/// `double_blocks.0-18 (4 each)`: runs of consecutive blocks of one kind that received the same
/// number of deltas are written as one range, so a full FLUX model stays a line or two.
fn describe_parts(parts: &BTreeMap<Part, usize>) -> Vec<String> {
    let mut runs: Vec<(Part, Part, usize)> = Vec::new();
    for (part, &n) in parts {
        if let Some((_, last, count)) = runs.last_mut()
            && *count == n
            && follows(last, part)
        {
            *last = part.clone();
            continue;
        }
        runs.push((part.clone(), part.clone(), n));
    }
    runs.into_iter()
        .map(|(first, last, n)| match (&first, &last) {
            (Part::Block(a), Part::Block(b)) if a != b => {
                let end = match b {
                    BlockId::Double(i) | BlockId::Single(i) => i,
                };
                format!("{a}-{end} ({n} each)")
            }
            _ => format!("{first} ({n})"),
        })
        .collect()
}

/// Whether `next` is the block right after `prev`, of the same kind.
fn follows(prev: &Part, next: &Part) -> bool {
    matches!(
        (prev, next),
        (Part::Block(BlockId::Double(a)), Part::Block(BlockId::Double(b)))
            | (Part::Block(BlockId::Single(a)), Part::Block(BlockId::Single(b)))
            if *b == a + 1
    )
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embedder(module) => f.write_str(module),
            Self::Block(block) => write!(f, "{block}"),
            Self::FinalLayer => f.write_str("final_layer"),
        }
    }
}

impl fmt::Display for FileReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let factors = match self.factors.as_slice() {
            [one] => format!("{one}"),
            [first, .., last] => format!("{first} to {last}"),
            [] => "-".into(),
        };
        write!(
            f,
            "{} ({}): {} deltas at scale {} × alpha/rank {factors}",
            self.path.display(),
            self.formats,
            self.deltas,
            self.scale,
        )?;
        if !self.parts.is_empty() {
            write!(f, "\n      into {}", describe_parts(&self.parts).join(", "))?;
        }
        if self.unmatched > 0 {
            write!(
                f,
                "\n      warning: skipped {} keys that match no weight (--lora-allow-unmatched)",
                self.unmatched
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for LoraReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: usize = self.files.iter().map(|r| r.deltas).sum();
        write!(f, "  lora         {total} deltas folded")?;
        for file in &self.files {
            write!(f, "\n    {file}")?;
        }
        Ok(())
    }
}
