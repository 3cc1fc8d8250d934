//! Activations spilled to disk, so that a walk over many samples holds one chunk of them in
//! memory: [`Rows`], a batched tensor whose rows live in an anonymous scratch file (in the
//! system's temporary folder, `TMPDIR`; unlinked on creation, so nothing is left behind even
//! when the process dies), and [`SpilledEnv`], the [`Activations`] store built on them.
//!
//! Reads and writes go through positioned file I/O rather than a memory map: the rows pass
//! through the page cache, which the kernel reclaims under pressure, and never count towards
//! the process's resident memory. That saves memory only where `TMPDIR` is on disk: on a tmpfs
//! (`/tmp` on some systems) the files are RAM themselves, and inside a container the page cache
//! counts against its memory limit (though the kernel can still write it back and drop it).

use super::activations::{Activations, not_held};
use crate::error::{Error, Result};
use crate::ir::Value;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Floats converted per read or write: bounds the byte buffer beside the tensor.
const PIECE: usize = 1 << 18;

/// A tensor of `f32` rows in a scratch file: `shape[0]` rows of `shape[1..]` each, appended in
/// order and read back by row. Clones share the file; only an unshared one may grow.
#[derive(Clone, Debug)]
pub struct Rows {
    file: Arc<File>,
    name: String,
    shape: Vec<usize>,
}

impl Rows {
    /// An empty tensor of rows shaped `row_shape`.
    pub fn new(name: &str, row_shape: &[usize]) -> Result<Self> {
        let file = tempfile::tempfile().map_err(scratch_error)?;
        let mut shape = vec![0];
        shape.extend_from_slice(row_shape);
        Ok(Self {
            file: Arc::new(file),
            name: name.to_owned(),
            shape,
        })
    }

    /// The tensor `t`'s rows, spilled.
    pub fn spill(t: &Tensor) -> Result<Self> {
        let row_shape = t
            .shape
            .get(1..)
            .ok_or_else(|| Error::Internal(format!("`{}` is a scalar and has no rows", t.name)))?;
        let mut rows = Self::new(&t.name, row_shape)?;
        rows.push(t)?;
        Ok(rows)
    }

    pub fn samples(&self) -> usize {
        self.shape[0]
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn row_len(&self) -> usize {
        self.shape[1..].iter().product()
    }

    /// Appends `chunk`'s rows.
    pub fn push(&mut self, chunk: &Tensor) -> Result<()> {
        if chunk.shape.get(1..) != Some(&self.shape[1..]) {
            return Err(Error::Internal(format!(
                "rows of `{}` are {:?}, but a chunk of shape {:?} was appended",
                self.name,
                &self.shape[1..],
                chunk.shape
            )));
        }
        let offset = (self.samples() * self.row_len() * 4) as u64;
        let file = Arc::get_mut(&mut self.file).ok_or_else(|| {
            Error::Internal(format!(
                "cannot append to the rows of `{}`: they are shared",
                self.name
            ))
        })?;
        write_floats(file, offset, &chunk.data)?;
        self.shape[0] += chunk.shape[0];
        Ok(())
    }

    /// Rows `rows`, in memory.
    pub fn range(&self, rows: Range<usize>) -> Result<Tensor> {
        self.check(rows.end)?;
        let row = self.row_len();
        let mut data = vec![0.0; rows.len() * row];
        read_floats(&self.file, (rows.start * row * 4) as u64, &mut data)?;
        Ok(self.tensor(rows.len(), data))
    }

    /// Rows `rows` (in that order, repeats allowed), in memory.
    pub fn gather(&self, rows: &[usize]) -> Result<Tensor> {
        for &r in rows {
            self.check(r + 1)?;
        }
        let row = self.row_len();
        let mut data = vec![0.0; rows.len() * row];
        for (&r, out) in rows.iter().zip(data.chunks_mut(row.max(1))) {
            read_floats(&self.file, (r * row * 4) as u64, out)?;
        }
        Ok(self.tensor(rows.len(), data))
    }

    fn check(&self, end: usize) -> Result<()> {
        match end <= self.samples() {
            true => Ok(()),
            false => Err(Error::Internal(format!(
                "row {} of `{}` is out of range: it holds {} rows",
                end - 1,
                self.name,
                self.samples()
            ))),
        }
    }

    fn tensor(&self, rows: usize, data: Vec<f32>) -> Tensor {
        let mut shape = self.shape.clone();
        shape[0] = rows;
        Tensor {
            name: self.name.clone(),
            shape,
            data,
        }
    }
}

/// One value of a [`SpilledEnv`]: a batched tensor's rows on disk, or a tensor every sample
/// shares, in memory.
#[derive(Clone, Debug)]
pub enum Held {
    Rows(Rows),
    Shared(Arc<Tensor>),
}

impl Held {
    /// Samples `rows` of a batched value; all of a shared one.
    pub fn gather(&self, rows: &[usize]) -> Result<Tensor> {
        match self {
            Held::Rows(r) => r.gather(rows),
            Held::Shared(t) => Ok(t.as_ref().clone()),
        }
    }

    /// The number of samples, for a batched value.
    pub fn samples(&self) -> Option<usize> {
        match self {
            Held::Rows(r) => Some(r.samples()),
            Held::Shared(_) => None,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Held::Rows(r) => r.name(),
            Held::Shared(t) => &t.name,
        }
    }
}

/// Activations by value with the batched ones spilled: a staged run over it holds one chunk of
/// samples in memory, plus the shared values.
#[derive(Default)]
pub struct SpilledEnv {
    held: HashMap<Value, Held>,
}

impl SpilledEnv {
    pub fn get(&self, v: Value) -> Option<&Held> {
        self.held.get(&v)
    }

    pub fn insert(&mut self, v: Value, value: Held) {
        self.held.insert(v, value);
    }
}

impl Activations for SpilledEnv {
    fn samples(&self, v: Value) -> Option<usize> {
        self.held.get(&v).map(|h| match h {
            Held::Rows(r) => r.samples(),
            Held::Shared(t) => t.shape.first().copied().unwrap_or(1),
        })
    }

    fn read(&self, v: Value, rows: Option<Range<usize>>) -> Result<Tensor> {
        match (self.held.get(&v).ok_or_else(|| not_held(v))?, rows) {
            (Held::Rows(r), Some(rows)) => r.range(rows),
            (Held::Rows(r), None) => r.range(0..r.samples()),
            (Held::Shared(t), _) => Ok(t.as_ref().clone()),
        }
    }

    fn append(&mut self, v: Value, chunk: Tensor, batched: bool) -> Result<()> {
        match (self.held.get_mut(&v), batched) {
            (Some(Held::Rows(rows)), true) => rows.push(&chunk)?,
            (None, true) => {
                self.held.insert(v, Held::Rows(Rows::spill(&chunk)?));
            }
            (None, false) => {
                self.held.insert(v, Held::Shared(Arc::new(chunk)));
            }
            (Some(Held::Shared(_)), false) => {}
            (Some(_), _) => {
                return Err(Error::Internal(format!(
                    "`{}` changed between batched and shared",
                    chunk.name
                )));
            }
        }
        Ok(())
    }

    fn retain(&mut self, keep: &dyn Fn(&Value) -> bool) {
        self.held.retain(|v, _| keep(v));
    }

    fn values(&self) -> Vec<Value> {
        self.held.keys().copied().collect()
    }
}

fn write_floats(file: &File, offset: u64, data: &[f32]) -> Result<()> {
    let mut bytes = Vec::with_capacity(PIECE.min(data.len()) * 4);
    for (k, piece) in data.chunks(PIECE).enumerate() {
        bytes.clear();
        bytes.extend(piece.iter().flat_map(|x| x.to_le_bytes()));
        let at = offset + (k * PIECE * 4) as u64;
        file.write_all_at(&bytes, at).map_err(scratch_error)?;
    }
    Ok(())
}

fn read_floats(file: &File, offset: u64, out: &mut [f32]) -> Result<()> {
    let mut bytes = vec![0u8; PIECE.min(out.len()) * 4];
    for (k, piece) in out.chunks_mut(PIECE).enumerate() {
        let bytes = &mut bytes[..piece.len() * 4];
        let at = offset + (k * PIECE * 4) as u64;
        file.read_exact_at(bytes, at).map_err(scratch_error)?;
        for (x, b) in piece.iter_mut().zip(bytes.chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
    }
    Ok(())
}

fn scratch_error(e: std::io::Error) -> Error {
    Error::io(
        &std::env::temp_dir(),
        std::io::Error::new(
            e.kind(),
            format!("a scratch file of spilled activations (TMPDIR chooses its folder): {e}"),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::activations::Env;

    fn tensor(rows: usize, start: f32) -> Tensor {
        Tensor {
            name: "x".into(),
            shape: vec![rows, 2, 3],
            data: (0..rows * 6).map(|i| start + i as f32 * 0.5).collect(),
        }
    }

    #[test]
    fn rows_read_back_what_was_appended() {
        let (a, b) = (tensor(3, 1.0), tensor(2, -7.25));
        let mut rows = Rows::spill(&a).unwrap();
        rows.push(&b).unwrap();
        let mut whole = a.clone();
        whole.data.extend_from_slice(&b.data);
        whole.shape[0] = 5;
        assert_eq!(rows.range(0..5).unwrap(), whole);
        assert_eq!(rows.range(2..4).unwrap().data, whole.data[12..24]);
        let picked = rows.gather(&[4, 0, 4]).unwrap();
        assert_eq!(picked.shape, vec![3, 2, 3]);
        assert_eq!(picked.data[..6], whole.data[24..30]);
        assert_eq!(picked.data[6..12], whole.data[..6]);
        assert!(rows.range(3..6).is_err());
        assert!(rows.gather(&[5]).is_err());
    }

    #[test]
    fn rows_of_no_width_still_check_their_indices() {
        let empty = Tensor {
            name: "e".into(),
            shape: vec![2, 0],
            data: Vec::new(),
        };
        let rows = Rows::spill(&empty).unwrap();
        assert_eq!(rows.gather(&[1, 0]).unwrap().shape, vec![2, 0]);
        assert!(rows.gather(&[2]).is_err());
    }

    #[test]
    fn a_shared_or_misshapen_rows_refuses_to_grow() {
        let mut rows = Rows::spill(&tensor(1, 0.0)).unwrap();
        let mut wrong = tensor(1, 0.0);
        wrong.shape = vec![1, 3, 2];
        assert!(rows.push(&wrong).is_err());
        assert_eq!(rows.samples(), 1);
        let shared = rows.clone();
        assert!(rows.push(&tensor(1, 0.0)).is_err());
        assert_eq!(shared.samples(), 1);
    }

    #[test]
    fn spilled_env_matches_the_in_memory_one() {
        let v = Value {
            node: petgraph::stable_graph::NodeIndex::new(0),
            port: 0,
        };
        let (mut env, mut spilled) = (Env::new(), SpilledEnv::default());
        for (rows, start) in [(2, 0.0), (3, 9.0)] {
            env.append(v, tensor(rows, start), true).unwrap();
            spilled.append(v, tensor(rows, start), true).unwrap();
        }
        assert_eq!(spilled.samples(v), Some(5));
        assert_eq!(spilled.read(v, None).unwrap(), env.read(v, None).unwrap());
        assert_eq!(
            spilled.read(v, Some(1..4)).unwrap(),
            env.read(v, Some(1..4)).unwrap()
        );
        spilled.retain(&|_| false);
        assert_eq!(spilled.samples(v), None);
    }
}
