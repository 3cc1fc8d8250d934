//! Lazy weights: a weight node names its data (a tensor in a store, such as the mapped
//! checkpoint, or a tensor fastflux computed), plus any low-rank deltas to fold in, and only the
//! exporter materializes it, one tensor at a time.

use super::delta::{Delta, fold};
use super::stored::{StoredTensor, TensorStore};
use crate::dtype::{DType, decode_f32, encode_f32};
use crate::error::Result;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

#[derive(Clone, Debug)]
pub struct Weight {
    /// The initializer name in the exported model: the canonical (BFL) parameter name.
    pub name: String,
    pub shape: Vec<usize>,
    /// The type it is exported in.
    pub dtype: DType,
    pub data: WeightData,
    /// Low-rank updates (folded LoRA pairs) added to the data at export.
    pub deltas: Vec<Delta>,
}

#[derive(Clone, Debug)]
pub enum WeightData {
    /// Bytes in the store the graph was lifted from (the checkpoint), read at export.
    Stored(StoredTensor),
    /// Values computed by fastflux (fitted matrices, constants), kept in f32.
    Owned(Arc<Vec<f32>>),
}

impl Weight {
    /// A weight with no deltas.
    pub fn new(name: impl Into<String>, shape: Vec<usize>, dtype: DType, data: WeightData) -> Self {
        Self {
            name: name.into(),
            shape,
            dtype,
            data,
            deltas: Vec::new(),
        }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn byte_len(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// Appends the weight's bytes in its export type to `out`. Stored bytes of the same type are
    /// copied as they are; anything else goes through f32. A weight with deltas is decoded
    /// whole to f32, folded, checked and encoded: one tensor in memory at a time.
    pub fn write_bytes(&self, store: &dyn TensorStore, out: &mut Vec<u8>) -> Result<()> {
        if !self.deltas.is_empty() {
            let mut values = self.to_f32(store)?;
            fold(
                &self.name,
                &self.shape,
                self.dtype,
                &self.deltas,
                &mut values,
            )?;
            encode_f32(self.dtype, &values, out);
            if let WeightData::Stored(source) = &self.data {
                store.release(source);
            }
            return Ok(());
        }
        match &self.data {
            WeightData::Owned(values) => encode_f32(self.dtype, values, out),
            WeightData::Stored(source) => {
                let mut scratch = Vec::new();
                for piece in &source.pieces {
                    let (bytes, stored) = store.piece_bytes(piece)?;
                    if stored == self.dtype {
                        out.extend_from_slice(bytes);
                    } else {
                        scratch.resize(bytes.len() / stored.size(), 0.0);
                        decode_f32(stored, bytes, &mut scratch);
                        encode_f32(self.dtype, &scratch, out);
                    }
                }
                store.release(source);
            }
        }
        Ok(())
    }

    /// The file extents that hold the weight's bytes exactly as they are exported, in order:
    /// `Some` only for a stored weight with no deltas whose every piece lies in a file (see
    /// `TensorStore::piece_extent`) in the export type. Such a weight can be copied file to file.
    pub fn file_extents<'s>(
        &self,
        store: &'s dyn TensorStore,
    ) -> Option<Vec<(&'s Path, Range<u64>)>> {
        let WeightData::Stored(source) = &self.data else {
            return None;
        };
        if !self.deltas.is_empty() {
            return None;
        }
        source
            .pieces
            .iter()
            .map(|piece| match store.piece_extent(piece)? {
                (path, range, dtype) if dtype == self.dtype => Some((path, range)),
                _ => None,
            })
            .collect()
    }

    /// The weight's values in f32 (for calibration and tests), without its deltas.
    pub fn to_f32(&self, store: &dyn TensorStore) -> Result<Vec<f32>> {
        match &self.data {
            WeightData::Owned(values) => Ok(values.as_ref().clone()),
            WeightData::Stored(source) => store.read_f32(source),
        }
    }
}
