//! Stored tensor bytes as the IR sees them: which rows of which stored tensors make up a
//! weight, and the small trait through which a weight reads them. The IR knows nothing of
//! files; `checkpoint::FluxCheckpoint` is the store that implements it.

use crate::dtype::{DType, decode_f32};
use crate::error::Result;
use std::ops::Range;
use std::path::Path;

/// A run of whole rows (first-axis slices) of one stored tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Piece {
    pub key: String,
    pub rows: Range<usize>,
}

/// A tensor whose data lies in a store: its pieces, stacked along the first axis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTensor {
    pub shape: Vec<usize>,
    /// The stored type (of the first piece: a store does not mix types within a tensor).
    pub dtype: DType,
    pub pieces: Vec<Piece>,
}

impl StoredTensor {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Where stored tensors' bytes come from: borrowed, piece by piece, so that exporting a model
/// holds one tensor in memory at a time.
pub trait TensorStore {
    /// The bytes of one piece and the type they are stored in.
    fn piece_bytes(&self, piece: &Piece) -> Result<(&[u8], DType)>;

    /// Where a piece's bytes lie in a file, when they lie in one as they are: the file, the
    /// byte range in it, and the stored type. The exporter copies such bytes file to file
    /// (`copy_file_range`) instead of through memory. `None` (the default): read `piece_bytes`.
    fn piece_extent(&self, _piece: &Piece) -> Option<(&Path, Range<u64>, DType)> {
        None
    }

    /// Hands the memory behind `tensor` back once it has been written (a hint; reading it again
    /// stays valid).
    fn release(&self, tensor: &StoredTensor);

    /// Reads a tensor whole, converted to f32.
    fn read_f32(&self, tensor: &StoredTensor) -> Result<Vec<f32>> {
        let mut out = vec![0f32; tensor.numel()];
        let mut at = 0;
        for piece in &tensor.pieces {
            let (bytes, dtype) = self.piece_bytes(piece)?;
            let n = bytes.len() / dtype.size();
            decode_f32(dtype, bytes, &mut out[at..at + n]);
            at += n;
        }
        Ok(out)
    }
}
