//! The BRLL-rewritten model written out as a checkpoint (`--emit-safetensors`): what sandwich
//! training in PyTorch loads, and what fastflux reads back to compile the same ONNX again.
//!
//! One `.safetensors` in the input's naming: every stored tensor the rewritten model still
//! uses, under its original name and type, bytes copied from the input (streamed tensor by
//! tensor; written under a temporary name, then renamed); not the replaced branches' tensors;
//! plus each fitted node's F32 `<block>.brll.<stream>.{weight,bias[,cond_weight]}`, named as the
//! input names its blocks (`transformer_blocks.{i}.brll.img.weight` in diffusers). Header
//! metadata: `format: pt`, the replaced blocks as a JSON list in `fastflux.brll`
//! (`["double_blocks.1","single_blocks.2"]`), the kind of fit in `fastflux.brll.fit`. Reading,
//! `FluxCheckpoint::open` takes the blocks from that metadata (`replaced_blocks`) and expects
//! the fitted tensors instead of their branches (`parameters`, in `checkpoint::brll_meta`,
//! which also names the fitted nodes); the lifter builds them directly.

use crate::checkpoint::FluxCheckpoint;
use crate::checkpoint::brll_meta::{BRLL_KEY, FIT_KEY};
use crate::checkpoint::naming::Layout;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::io::{AtomicFile, SafetensorsWriter, TensorEntry};
use crate::ir::{BlockId, Graph, Op, WeightData};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What `write` wrote.
pub struct Emitted {
    pub path: PathBuf,
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
    tensor: TensorEntry,
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
                WeightData::Stored(source) => {
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
                    let tensor = TensorEntry { name, dtype, shape };
                    entries.push(Entry { tensor, data });
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
        let tensor = TensorEntry { name, dtype, shape };
        entries.push(Entry { tensor, data });
    }
    // Widest types first, as the safetensors library orders them: every tensor stays aligned.
    entries.sort_by(|a, b| {
        let (a, b) = (&a.tensor, &b.tensor);
        (b.dtype.size(), &a.name).cmp(&(a.dtype.size(), &b.name))
    });
    let blocks: Vec<String> = replaced.iter().map(ToString::to_string).collect();
    let fit = match kinds.into_iter().collect::<Vec<_>>()[..] {
        [true] => "conditioned",
        [false, true] => "mixed",
        _ => "plain",
    };
    let metadata = BTreeMap::from([
        ("format".to_owned(), "pt".to_owned()),
        (
            BRLL_KEY.to_owned(),
            serde_json::to_string(&blocks).expect("strings"),
        ),
        (FIT_KEY.to_owned(), fit.to_owned()),
    ]);
    let header: Vec<TensorEntry> = entries.iter().map(|e| e.tensor.clone()).collect();
    let mut out = SafetensorsWriter::create(AtomicFile::new(path)?, &header, &metadata)?;
    for entry in &entries {
        match &entry.data {
            Data::Stored(key) => {
                let (file, info) = ckpt.checkpoint.get(key).expect("looked up above");
                out.write(file.bytes(info))?;
                file.release(info);
            }
            Data::Fitted(values) => {
                let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                out.write(&le)?;
            }
        }
    }
    let bytes = out.finish()?;
    let tensors = entries.len();
    Ok(Emitted {
        path: path.to_owned(),
        tensors,
        bytes,
        replaced,
    })
}
