//! The BRLL-rewritten model as a checkpoint (`--emit-safetensors`): what sandwich training in
//! PyTorch loads, and what fastflux reads back to compile the same ONNX again.
//!
//! One `.safetensors` in the input's naming: every stored tensor the rewritten model still
//! uses, under its original name and type, bytes copied from the input (streamed tensor by
//! tensor; written under a temporary name, then renamed); not the replaced branches' tensors;
//! plus each fitted node's F32 `<block>.brll.<stream>.{weight,bias[,cond_weight]}`, named as the
//! input names its blocks (`transformer_blocks.{i}.brll.img.weight` in diffusers). Header
//! metadata: `format: pt`, the replaced blocks as a JSON list in `fastflux.brll`
//! (`["double_blocks.1","single_blocks.2"]`), the kind of fit in `fastflux.brll.fit`. Reading,
//! `FluxCheckpoint::open` takes the blocks from that metadata (`replaced_blocks`) and expects
//! the fitted tensors instead of their branches (`parameters`); the lifter builds them directly.

use super::config::FluxConfig;
use super::model::FluxCheckpoint;
use super::naming::Layout;
use super::source::Checkpoint;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ir::{BlockId, Graph, Op, WeightData};
use crate::passes::brll::node_name;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

/// Header metadata: the replaced blocks, a JSON list of block names.
pub const BRLL_KEY: &str = "fastflux.brll";
/// Header metadata: `plain` or `conditioned` (`mixed`: a rewritten input refitted otherwise).
pub const FIT_KEY: &str = "fastflux.brll.fit";

/// The streams of a block, as the lifter records them in `BlockIo`.
pub fn streams(block: BlockId) -> &'static [&'static str] {
    match block {
        BlockId::Double(_) => &["img", "txt"],
        BlockId::Single(_) => &["x"],
    }
}

/// The blocks the `fastflux.brll` metadata lists (none without it), checked against the
/// counted (double, single) blocks.
pub fn replaced_blocks(ckpt: &Checkpoint, counted: (usize, usize)) -> Result<BTreeSet<BlockId>> {
    let Some(text) = ckpt.metadata(BRLL_KEY) else {
        return Ok(BTreeSet::new());
    };
    let bad = |why: String| {
        Error::file(
            &ckpt.origin,
            format!("header metadata `{BRLL_KEY}` = {text:?}: {why}"),
        )
    };
    let names: Vec<String> = serde_json::from_str(text)
        .map_err(|e| bad(format!("expected a JSON list of block names ({e})")))?;
    let mut blocks = BTreeSet::new();
    for name in names {
        let block: BlockId = name.parse().map_err(bad)?;
        let (index, count) = match block {
            BlockId::Double(i) => (i, counted.0),
            BlockId::Single(i) => (i, counted.1),
        };
        if index >= count {
            return Err(bad(format!(
                "lists {block}, but the file has only {count} blocks of that kind"
            )));
        }
        blocks.insert(block);
    }
    Ok(blocks)
}

/// The canonical parameters of a checkpoint whose `replaced` blocks hold fitted nodes: those of
/// `config`, less the replaced blocks', plus each fitted node's `weight` `[h,h]` and `bias`
/// `[h]`, and its `cond_weight` `[h,h]` for a conditioned fit (`fastflux.brll.fit`, or, when that
/// does not say, wherever `present` finds one).
pub fn parameters(
    config: &FluxConfig,
    replaced: &BTreeSet<BlockId>,
    ckpt: &Checkpoint,
    present: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<usize>)> {
    let fit = ckpt.metadata(FIT_KEY);
    let h = config.hidden;
    let in_replaced = |name: &str| replaced.iter().any(|b| name.starts_with(&format!("{b}.")));
    let mut params: Vec<_> = config
        .parameters()
        .into_iter()
        .filter(|(name, _)| !in_replaced(name))
        .collect();
    for &block in replaced {
        for stream in streams(block) {
            let node = node_name(block, stream);
            let cond = format!("{node}.cond_weight");
            let conditioned = match fit {
                Some("conditioned") => true,
                Some("plain") => false,
                _ => present(&cond),
            };
            params.push((format!("{node}.weight"), vec![h, h]));
            params.push((format!("{node}.bias"), vec![h]));
            if conditioned {
                params.push((cond, vec![h, h]));
            }
        }
    }
    params.sort();
    params
}

/// What `write` wrote.
pub struct Emitted {
    pub tensors: usize,
    pub bytes: u64,
    pub replaced: BTreeSet<BlockId>,
}

enum Data {
    /// A stored tensor of the input, copied whole.
    Stored(String),
    Fitted(Arc<Vec<f32>>),
}

struct Entry {
    name: String,
    dtype: DType,
    shape: Vec<usize>,
    data: Data,
}

/// Writes the model `graph` computes (lifted from `ckpt`, rewritten by BRLL, before any LoRA)
/// to `path` as a checkpoint in `ckpt`'s naming.
pub fn write(path: &Path, ckpt: &FluxCheckpoint, graph: &Graph) -> Result<Emitted> {
    let mut stored = BTreeSet::new();
    let mut entries = Vec::new();
    let (mut replaced, mut kinds) = (BTreeSet::new(), BTreeSet::new());
    for node in graph.graph.node_weights() {
        match &node.op {
            Op::LinearResidual { conditioned } => {
                replaced.extend(node.block);
                kinds.insert(*conditioned);
            }
            Op::Weight(w) if !w.deltas.is_empty() => {
                return Err(Error::Internal(format!(
                    "{}: a checkpoint is emitted before deltas are folded",
                    w.name
                )));
            }
            Op::Weight(w) => match &w.data {
                WeightData::Checkpoint(source) => {
                    stored.extend(source.pieces.iter().map(|p| p.key.clone()));
                }
                WeightData::Owned(values) => {
                    let Layout::Direct(name) = ckpt.scheme.layout(&w.name) else {
                        return Err(Error::Internal(format!(
                            "{}: not one stored tensor",
                            w.name
                        )));
                    };
                    let (dtype, shape) = (DType::F32, w.shape.clone());
                    let data = Data::Fitted(values.clone());
                    entries.push(Entry {
                        name,
                        dtype,
                        shape,
                        data,
                    });
                }
            },
            _ => {}
        }
    }
    for key in stored {
        let (_, info) = ckpt
            .checkpoint
            .get(&key)
            .ok_or_else(|| Error::Internal(format!("tensor `{key}` vanished after resolution")))?;
        let (dtype, shape) = (info.dtype, info.shape.clone());
        let (name, data) = (key.clone(), Data::Stored(key));
        entries.push(Entry {
            name,
            dtype,
            shape,
            data,
        });
    }
    // Widest types first, as the safetensors library orders them: every tensor stays aligned.
    entries.sort_by(|a, b| (b.dtype.size(), &a.name).cmp(&(a.dtype.size(), &b.name)));
    let blocks: Vec<String> = replaced.iter().map(ToString::to_string).collect();
    let fit = match kinds.into_iter().collect::<Vec<_>>()[..] {
        [true] => "conditioned",
        [false, true] => "mixed",
        _ => "plain",
    };
    let metadata = BTreeMap::from([
        ("format", "pt".to_owned()),
        (BRLL_KEY, serde_json::to_string(&blocks).expect("strings")),
        (FIT_KEY, fit.to_owned()),
    ]);
    let header = header(&entries, &metadata);
    let pending = Pending::new(path)?;
    let io = |e| Error::io(path, e);
    let mut out = BufWriter::new(std::fs::File::create(&pending.tmp).map_err(io)?);
    out.write_all(&(header.len() as u64).to_le_bytes())
        .map_err(io)?;
    out.write_all(header.as_bytes()).map_err(io)?;
    let mut bytes = 8 + header.len() as u64;
    for entry in &entries {
        match &entry.data {
            Data::Stored(key) => {
                let (file, info) = ckpt.checkpoint.get(key).expect("looked up above");
                out.write_all(file.bytes(info)).map_err(io)?;
                file.release(info);
                bytes += info.bytes.len() as u64;
            }
            Data::Fitted(values) => {
                let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                out.write_all(&le).map_err(io)?;
                bytes += le.len() as u64;
            }
        }
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)?;
    pending.commit()?;
    let tensors = entries.len();
    Ok(Emitted {
        tensors,
        bytes,
        replaced,
    })
}

/// The header JSON, entries in data order, padded with spaces to a multiple of 8 bytes.
fn header(entries: &[Entry], metadata: &BTreeMap<&str, String>) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("a string");
    let meta: Vec<String> = metadata
        .iter()
        .map(|(k, v)| format!("{}:{}", quote(k), quote(v)))
        .collect();
    let mut parts = vec![format!("\"__metadata__\":{{{}}}", meta.join(","))];
    let mut offset = 0;
    for e in entries {
        let end = offset + e.shape.iter().product::<usize>() * e.dtype.size();
        parts.push(format!(
            "{}:{{\"dtype\":{},\"shape\":{:?},\"data_offsets\":[{offset},{end}]}}",
            quote(&e.name),
            quote(e.dtype.safetensors_name()),
            e.shape
        ));
        offset = end;
    }
    let mut text = format!("{{{}}}", parts.join(","));
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    text
}

/// The output under a temporary name beside it, removed on drop unless committed.
struct Pending<'a> {
    path: &'a Path,
    tmp: std::path::PathBuf,
    committed: bool,
}

impl<'a> Pending<'a> {
    fn new(path: &'a Path) -> Result<Self> {
        let no_name = || Error::file(path, "has no file name");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(no_name)?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if !dir.is_dir() || path.is_dir() {
            return Err(Error::file(path, "is a folder, or its folder is missing"));
        }
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        Ok(Self {
            path,
            tmp,
            committed: false,
        })
    }

    fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, self.path).map_err(|e| Error::io(self.path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
