//! Where a staged run keeps the activations between stages: the [`Activations`] interface the
//! runner reads stage inputs from and appends stage outputs to, chunk of samples by chunk, and
//! its in-memory implementation ([`Env`], every sample stacked in one tensor). The spilled one,
//! which holds only a chunk in memory, is `runtime::spill`.

use crate::error::{Error, Result};
use crate::ir::Value;
use crate::tensor::Tensor;
use std::collections::HashMap;
use std::ops::Range;

/// Activations by value, every sample stacked on the batch axis, in memory.
pub type Env = HashMap<Value, Tensor>;

/// A store of activations by value. A batched value holds one row per sample (its first axis);
/// a shared one (RoPE tables) is the same for every sample and held whole.
pub trait Activations {
    /// The number of rows `v` holds (its first axis), or `None` when `v` is not held.
    fn samples(&self, v: Value) -> Option<usize>;
    /// Rows `rows` of `v`, or all of `v` when `rows` is `None`.
    fn read(&self, v: Value, rows: Option<Range<usize>>) -> Result<Tensor>;
    /// Adds `chunk` to `v`: its next rows when `batched`, else its whole value (once).
    fn append(&mut self, v: Value, chunk: Tensor, batched: bool) -> Result<()>;
    /// Forgets every value `keep` refuses.
    fn retain(&mut self, keep: &dyn Fn(&Value) -> bool);
    /// Every value held, in no particular order.
    fn values(&self) -> Vec<Value>;
}

impl Activations for Env {
    fn samples(&self, v: Value) -> Option<usize> {
        self.get(&v).map(|t| t.shape.first().copied().unwrap_or(1))
    }

    fn read(&self, v: Value, rows: Option<Range<usize>>) -> Result<Tensor> {
        let t = self.get(&v).ok_or_else(|| not_held(v))?;
        let Some(rows) = rows else {
            return Ok(t.clone());
        };
        let samples = t.shape.first().copied().unwrap_or(1);
        if rows.start > rows.end || rows.end > samples {
            return Err(Error::Internal(format!(
                "rows {rows:?} of `{}`, which holds {samples}",
                t.name
            )));
        }
        let row: usize = t.shape[1..].iter().product();
        let mut shape = t.shape.clone();
        shape[0] = rows.len();
        Ok(Tensor {
            name: t.name.clone(),
            shape,
            data: t.data[rows.start * row..rows.end * row].to_vec(),
        })
    }

    fn append(&mut self, v: Value, chunk: Tensor, batched: bool) -> Result<()> {
        match self.get_mut(&v) {
            None => {
                self.insert(v, chunk);
            }
            Some(held) if batched => {
                if held.shape[1..] != chunk.shape[1..] {
                    return Err(Error::Internal(format!(
                        "rows of `{}` change shape: {:?} after {:?}",
                        held.name, chunk.shape, held.shape
                    )));
                }
                held.data.extend_from_slice(&chunk.data);
                held.shape[0] += chunk.shape[0];
            }
            // A shared value is the same in every chunk.
            Some(_) => {}
        }
        Ok(())
    }

    fn retain(&mut self, keep: &dyn Fn(&Value) -> bool) {
        HashMap::retain(self, |v, _| keep(v));
    }

    fn values(&self) -> Vec<Value> {
        self.keys().copied().collect()
    }
}

/// A read of a value the store does not hold. A store has no graph to name `v` by, so the
/// runner checks its stage inputs first and names them (`StagedRunner::run_stage`); this is the
/// backstop for other readers.
pub(crate) fn not_held(v: Value) -> Error {
    Error::Internal(format!(
        "activation {v:?} was read before the stage that computes it ran"
    ))
}
