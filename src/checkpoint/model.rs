//! A FLUX checkpoint resolved: naming detected, configuration inferred, and every parameter of
//! that configuration located (possibly in pieces) and checked for its shape. Nothing is read
//! beyond the headers; tensor bytes are fetched piece by piece when the exporter streams them.

use super::brll_meta;
use super::config::{FluxConfig, ShapeLookup};
use super::naming::{self, Layout, Scheme};
use super::source::Checkpoint;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::ir::{BlockId, Piece, StoredTensor, TensorStore};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::Path;

pub struct FluxCheckpoint {
    pub checkpoint: Checkpoint,
    pub scheme: Scheme,
    pub config: FluxConfig,
    sources: BTreeMap<String, StoredTensor>,
    /// Blocks whose branch a BRLL rewrite replaced before this file was written (its
    /// `fastflux.brll` metadata): they hold the fitted node's tensors instead of the branch's.
    replaced: BTreeSet<BlockId>,
}

impl FluxCheckpoint {
    /// Opens and resolves a checkpoint. `axes` overrides the RoPE axes (`--axes-dim`).
    pub fn open(path: &Path, axes: Option<Vec<usize>>) -> Result<Self> {
        let checkpoint = Checkpoint::open(path)?;
        naming::require_flux1(&checkpoint)?;
        let scheme = Scheme::detect(&checkpoint)?;
        let blocks = count_blocks(&checkpoint, &scheme);
        let replaced = brll_meta::replaced_blocks(&checkpoint, blocks)?;
        let axes = axes.or_else(|| config_axes(&checkpoint));
        let lookup = Lookup {
            checkpoint: &checkpoint,
            scheme: &scheme,
        };
        let config = FluxConfig::infer(&checkpoint.origin, &lookup, blocks, &replaced, axes)?;
        let present = |name: &str| lookup.shape(name).is_some();
        let mut sources = BTreeMap::new();
        for (name, shape) in brll_meta::parameters(&config, &replaced, &checkpoint, present) {
            let source = lookup.resolve(&name, &shape)?;
            sources.insert(name, source);
        }
        Ok(Self {
            checkpoint,
            scheme,
            config,
            sources,
            replaced,
        })
    }

    /// The blocks a BRLL rewrite already replaced in this checkpoint (empty for a plain one).
    pub fn replaced_blocks(&self) -> &BTreeSet<BlockId> {
        &self.replaced
    }

    /// Whether the checkpoint holds canonical parameter `name` (fitted `cond_weight`s are
    /// optional: only a conditioned fit has them).
    pub fn has(&self, name: &str) -> bool {
        self.sources.contains_key(name)
    }

    pub fn origin(&self) -> &Path {
        &self.checkpoint.origin
    }

    /// The source of a canonical parameter; an internal error if the configuration lacks it.
    pub fn source(&self, name: &str) -> Result<&StoredTensor> {
        self.sources
            .get(name)
            .ok_or_else(|| Error::Internal(format!("no parameter `{name}` in this configuration")))
    }

    pub fn sources(&self) -> &BTreeMap<String, StoredTensor> {
        &self.sources
    }

    /// Stored tensors the model does not use (other models in a combined file, extra state).
    pub fn unused_keys(&self) -> Vec<&str> {
        let used: BTreeSet<&str> = self
            .sources
            .values()
            .flat_map(|s| s.pieces.iter().map(|p| p.key.as_str()))
            .collect();
        self.checkpoint
            .keys()
            .filter(|k| !used.contains(k))
            .collect()
    }
}

/// The checkpoint's mapped files are the store its lifted weights read from.
impl TensorStore for FluxCheckpoint {
    /// The bytes of one piece, borrowed from the map, and the type they are stored in.
    fn piece_bytes(&self, piece: &Piece) -> Result<(&[u8], DType)> {
        let (file, info) = self.checkpoint.get(&piece.key).ok_or_else(|| {
            Error::Internal(format!("tensor `{}` vanished after resolution", piece.key))
        })?;
        let row_bytes = info.shape[1..].iter().product::<usize>() * info.dtype.size();
        let all = file.bytes(info);
        Ok((
            &all[piece.rows.start * row_bytes..piece.rows.end * row_bytes],
            info.dtype,
        ))
    }

    /// The piece's rows as a byte range of the safetensors file that holds them.
    fn piece_extent(&self, piece: &Piece) -> Option<(&Path, Range<u64>, DType)> {
        let (file, info) = self.checkpoint.get(&piece.key)?;
        let row_bytes = (info.shape[1..].iter().product::<usize>() * info.dtype.size()) as u64;
        let start = info.bytes.start as u64 + piece.rows.start as u64 * row_bytes;
        let end = info.bytes.start as u64 + piece.rows.end as u64 * row_bytes;
        Some((file.path(), start..end, info.dtype))
    }

    /// Releases the pages of every stored tensor behind `tensor` (see `SafetensorsFile::release`).
    fn release(&self, tensor: &StoredTensor) {
        for piece in &tensor.pieces {
            if let Some((file, info)) = self.checkpoint.get(&piece.key) {
                file.release(info);
            }
        }
    }
}

struct Lookup<'a> {
    checkpoint: &'a Checkpoint,
    scheme: &'a Scheme,
}

impl ShapeLookup for Lookup<'_> {
    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let keys = match self.scheme.layout(name) {
            Layout::Direct(k) | Layout::SwappedHalves(k) => vec![k],
            Layout::Concat(ks) => ks,
        };
        let shapes: Vec<Vec<usize>> = keys
            .iter()
            .map(|k| self.checkpoint.get(k).map(|(_, info)| info.shape.clone()))
            .collect::<Option<_>>()?;
        let mut shape = shapes.first()?.clone();
        if let Some(rows) = shape.first_mut() {
            *rows = shapes.iter().map(|s| s.first().copied().unwrap_or(0)).sum();
        }
        Some(shape)
    }
}

impl Lookup<'_> {
    /// Locates `name` and checks it holds `shape`.
    fn resolve(&self, name: &str, shape: &[usize]) -> Result<StoredTensor> {
        let origin = &self.checkpoint.origin;
        let find = |key: &str| {
            self.checkpoint.get(key).ok_or_else(|| {
                Error::tensor(
                    origin,
                    key,
                    format!("missing: the model needs it (canonical `{name}`, shape {shape:?})"),
                )
            })
        };
        // Named against the file that holds the tensor: for a sharded diffusers checkpoint
        // that is the shard to look at, not the index the user passed.
        let wrong_shape = |file: &Path, key: &str, found: &[usize], expected: &[usize]| {
            Error::tensor(
                file,
                key,
                format!("expected shape {expected:?} (canonical `{name}`), found {found:?}"),
            )
        };
        let (pieces, dtype) = match self.scheme.layout(name) {
            Layout::Direct(key) => {
                let (file, info) = find(&key)?;
                if info.shape != shape {
                    return Err(wrong_shape(file.path(), &key, &info.shape, shape));
                }
                (
                    vec![Piece {
                        key,
                        rows: 0..shape[0],
                    }],
                    info.dtype,
                )
            }
            Layout::SwappedHalves(key) => {
                let (file, info) = find(&key)?;
                if info.shape != shape || !shape[0].is_multiple_of(2) {
                    return Err(wrong_shape(file.path(), &key, &info.shape, shape));
                }
                let half = shape[0] / 2;
                let pieces = vec![
                    Piece {
                        key: key.clone(),
                        rows: half..shape[0],
                    },
                    Piece { key, rows: 0..half },
                ];
                (pieces, info.dtype)
            }
            Layout::Concat(keys) => {
                let mut pieces = Vec::new();
                let mut rows = 0;
                let mut dtype = None;
                for key in keys {
                    let (file, info) = find(&key)?;
                    if info.shape.len() != shape.len() || info.shape[1..] != shape[1..] {
                        let mut expected = shape.to_vec();
                        expected[0] = info.shape.first().copied().unwrap_or(0);
                        return Err(wrong_shape(file.path(), &key, &info.shape, &expected));
                    }
                    dtype.get_or_insert(info.dtype);
                    rows += info.shape[0];
                    pieces.push(Piece {
                        key,
                        rows: 0..info.shape[0],
                    });
                }
                if rows != shape[0] {
                    let found: Vec<String> = pieces.iter().map(|p| p.key.clone()).collect();
                    return Err(Error::tensor(
                        origin,
                        found.join(" + "),
                        format!(
                            "stacked they have {rows} rows; canonical `{name}` needs shape {shape:?}"
                        ),
                    ));
                }
                (pieces, dtype.unwrap_or(DType::F32))
            }
        };
        Ok(StoredTensor {
            shape: shape.to_vec(),
            dtype,
            pieces,
        })
    }
}

/// Blocks are counted as one past the highest index present, so that a gap (block 7 of 19
/// missing) is reported as block 7's missing tensors rather than as a 7-block model. Past the
/// first gap the count stops one beyond it: resolution fails on that block anyway, and a stray
/// index (`double_blocks.18446744073709551615.…`) must not overflow or list absurdly many blocks.
fn count_blocks(checkpoint: &Checkpoint, scheme: &Scheme) -> (usize, usize) {
    let (double, single) = scheme.block_prefixes();
    let count = |prefix: &str| {
        let present: BTreeSet<usize> = checkpoint
            .keys()
            .filter_map(|k| {
                k.strip_prefix(prefix)?
                    .split('.')
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .collect();
        // At most `present.len()`, so neither this nor the `+ 1` below can overflow.
        let gap = (0..).find(|i| !present.contains(i)).unwrap_or(0);
        match present.last() {
            Some(&last) if last > gap => gap + 1,
            _ => gap,
        }
    };
    (count(&double), count(&single))
}

fn config_axes(checkpoint: &Checkpoint) -> Option<Vec<usize>> {
    let axes = checkpoint
        .config_json
        .as_ref()?
        .get("axes_dims_rope")?
        .as_array()?;
    axes.iter()
        .map(|a| a.as_u64().map(|a| a as usize))
        .collect()
}
