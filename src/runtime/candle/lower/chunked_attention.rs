//! Attention `softmax(q kᵀ · D^-½) v` on heads `[B,H,S,D]` without the `[S,S]` scores: the
//! forward runs a chunk of query rows at a time, and under autograd the result is attached to
//! q, k, v by a custom op whose backward recomputes each chunk's scores (flash-attention style)
//! instead of keeping them. Written out op by op, autograd would keep several `[B,H,S,S]`
//! tensors per attention: ~40 GB in f32 at FLUX's 4608 tokens, 24 heads and batch 4.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, D, Layout, Result, Shape, Storage, Tensor};
use std::sync::Mutex;

/// Score elements (`B·H·rows·S`) one chunk of query rows may hold: 64 MiB in f32. The backward
/// keeps at most four such blocks alive at once (the probabilities, their gradient, that minus
/// the row term, the scores' gradient), so attention's working memory stays near a quarter of
/// a GB (half in f64) whatever the sequence length, while each chunk's products stay large
/// enough (2^24 · D multiply-adds when S is long) to keep a GPU busy.
const SCORES_PER_CHUNK: usize = 1 << 24;

/// Query rows per chunk for `batch` samples of `heads` heads over `keys` keys: as many as fit
/// [`SCORES_PER_CHUNK`], at least one, at most all of them.
pub(super) fn rows_per_chunk(batch: usize, heads: usize, keys: usize) -> usize {
    let per_row = (batch * heads * keys).max(1);
    (SCORES_PER_CHUNK / per_row).clamp(1, keys.max(1))
}

/// `softmax(q kᵀ / √D) v` for q, k `[B,H,S,D]` and v `[B,H,S,Dv]`, in chunks of the default
/// size.
pub(super) fn attention_of(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (batch, heads, keys, _) = k.dims4()?;
    attention_in_chunks(q, k, v, rows_per_chunk(batch, heads, keys))
}

/// [`attention_of`] with `rows` query rows per chunk. Gradients flow to q, k and v when any of
/// them is tracked by autograd.
pub(super) fn attention_in_chunks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rows: usize,
) -> Result<Tensor> {
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let output = forward_in_chunks(&q.detach(), &k.detach(), &v.detach(), rows, scale)?;
    if !(q.track_op() || k.track_op() || v.track_op()) {
        return Ok(output);
    }
    // A fresh copy, so that its storage holds exactly its elements in order, which is what
    // the op's forward hands over (`BackendStorage::try_clone` copies the whole storage).
    let output = output.force_contiguous()?;
    let op = RecomputingAttention {
        output: Mutex::new(Some(output)),
        rows,
        scale,
    };
    q.apply_op3(k, v, op)
}

/// The row ranges `(start, len)` of `total` rows in chunks of `rows`; the last may be shorter.
fn chunks(total: usize, rows: usize) -> impl Iterator<Item = (usize, usize)> {
    let rows = rows.max(1);
    (0..total)
        .step_by(rows)
        .map(move |start| (start, rows.min(total - start)))
}

/// Rows `start..start + len` of axis 2 (the sequence), contiguous.
fn rows_of(x: &Tensor, start: usize, len: usize) -> Result<Tensor> {
    x.narrow(2, start, len)?.contiguous()
}

/// `softmax((qc · scale) kᵀ)` for a chunk of query rows against every key (`kt` is kᵀ; the
/// scale goes on the chunk, the smaller operand): candle's fused softmax, which subtracts the
/// row maximum; it detaches its output, and nothing here is tracked anyway.
fn probabilities(qc: &Tensor, kt: &Tensor, scale: f64) -> Result<Tensor> {
    candle_nn::ops::softmax_last_dim(&qc.affine(scale, 0.0)?.matmul(kt)?)
}

/// The attention of untracked q, k, v, one chunk of query rows at a time.
fn forward_in_chunks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    rows: usize,
    scale: f64,
) -> Result<Tensor> {
    let (batch, heads, queries, _) = q.dims4()?;
    let kt = k.transpose(2, 3)?.contiguous()?;
    let v = v.contiguous()?;
    let outputs = chunks(queries, rows)
        .map(|(start, len)| probabilities(&rows_of(q, start, len)?, &kt, scale)?.matmul(&v))
        .collect::<Result<Vec<_>>>()?;
    match outputs.is_empty() {
        true => Tensor::zeros((batch, heads, 0, v.dim(3)?), v.dtype(), v.device()),
        false => Tensor::cat(&outputs, 2),
    }
}

/// Forward: the attention already computed by [`forward_in_chunks`] (handed over once, so the
/// op does not keep a second copy). Backward: q's, k's and v's gradients from the scores
/// recomputed one chunk of query rows at a time.
struct RecomputingAttention {
    output: Mutex<Option<Tensor>>,
    rows: usize,
    scale: f64,
}

impl RecomputingAttention {
    fn take_output(&self) -> Result<Tensor> {
        let taken = self.output.lock().map(|mut slot| slot.take());
        taken.ok().flatten().ok_or_else(|| {
            candle_core::Error::Msg(format!("{}: the forward ran twice", self.name()))
        })
    }
}

/// A copy of `output`'s storage (which holds exactly its elements: see `attention_in_chunks`)
/// on the device `pick` selects, with its shape.
fn copy_of<S: BackendStorage>(
    output: &Tensor,
    pick: impl Fn(&Storage) -> Option<&S>,
) -> Result<(S, Shape)> {
    let (storage, layout) = output.storage_and_layout();
    let Some(storage) = pick(&storage) else {
        candle_core::bail!("recomputing-attention: the output is on another device than q, k, v")
    };
    Ok((storage.try_clone(layout)?, layout.shape().clone()))
}

impl CustomOp3 for RecomputingAttention {
    fn name(&self) -> &'static str {
        "recomputing-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        copy_of(&self.take_output()?, |s| match s {
            Storage::Cpu(s) => Some(s),
            _ => None,
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        copy_of(&self.take_output()?, |s| match s {
            Storage::Cuda(s) => Some(s),
            _ => None,
        })
    }

    /// Per chunk `c` of query rows, with `P = softmax(Qc Kᵀ·s)` recomputed:
    /// `dV += Pᵀ dOc`, `dS = P ⊙ (dOc Vᵀ − rowsum(dOc ⊙ Oc))`, `dQc = dS K·s`, `dK += dSᵀ Qc·s`.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [q, k, v, output, grad] = [q, k, v, output, grad].map(Tensor::detach);
        let (k, v) = (k.contiguous()?, v.contiguous()?);
        let (kt, vt) = (
            k.transpose(2, 3)?.contiguous()?,
            v.transpose(2, 3)?.contiguous()?,
        );
        let (mut grad_k, mut grad_v) = (k.zeros_like()?, v.zeros_like()?);
        let mut grad_q = Vec::new();
        for (start, len) in chunks(q.dim(2)?, self.rows) {
            let qc = rows_of(&q, start, len)?;
            let grad_c = rows_of(&grad, start, len)?;
            let p = probabilities(&qc, &kt, self.scale)?;
            grad_v = grad_v.add(&p.t()?.matmul(&grad_c)?)?;
            let row_dot = grad_c.mul(&rows_of(&output, start, len)?)?.sum_keepdim(3)?;
            let grad_scores = p.mul(&grad_c.matmul(&vt)?.broadcast_sub(&row_dot)?)?;
            drop(p);
            grad_q.push(grad_scores.matmul(&k)?.affine(self.scale, 0.0)?);
            grad_k = grad_k.add(&grad_scores.t()?.matmul(&qc)?.affine(self.scale, 0.0)?)?;
        }
        let grad_q = match grad_q.is_empty() {
            true => q.zeros_like()?,
            false => Tensor::cat(&grad_q, 2)?,
        };
        Ok((Some(grad_q), Some(grad_k), Some(grad_v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The formula written out: `softmax(q kᵀ / √D) v`.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let scores = q
            .matmul(&k.t()?)?
            .affine(1.0 / (q.dim(3)? as f64).sqrt(), 0.0)?;
        let exp = scores.exp()?;
        exp.broadcast_div(&exp.sum_keepdim(3)?)?.matmul(v)
    }

    fn largest_gap(a: &Tensor, b: &Tensor) -> Result<f64> {
        a.sub(b)?
            .abs()?
            .max_all()?
            .to_dtype(DType::F64)?
            .to_scalar()
    }

    /// q, k `[2,3,7,4]` and v `[2,3,7,5]`: 7 tokens, so chunks of 3 leave a short last one.
    fn qkv(dtype: DType) -> Result<[Var; 3]> {
        let device = Device::Cpu;
        let make = |d: usize| -> Result<Var> {
            Var::from_tensor(&Tensor::randn(0f64, 1.0, (2, 3, 7, d), &device)?.to_dtype(dtype)?)
        };
        Ok([make(4)?, make(4)?, make(5)?])
    }

    #[test]
    fn chunks_cover_every_row_once() {
        let ranges: Vec<_> = chunks(7, 3).collect();
        assert_eq!(ranges, [(0, 3), (3, 3), (6, 1)]);
        assert_eq!(chunks(6, 3).collect::<Vec<_>>(), [(0, 3), (3, 3)]);
        assert_eq!(chunks(0, 3).count(), 0);
    }

    /// FLUX's 4608 tokens, 24 heads, batch 4: 37 rows, under the budget; tiny inputs take one
    /// chunk.
    #[test]
    fn a_chunk_holds_at_most_the_budgeted_scores() {
        let rows = rows_per_chunk(4, 24, 4608);
        assert_eq!(rows, 37);
        assert!(4 * 24 * rows * 4608 <= SCORES_PER_CHUNK);
        assert_eq!(rows_per_chunk(1, 1, 10), 10);
        assert_eq!(rows_per_chunk(1 << 20, 1 << 10, 4608), 1);
    }

    #[test]
    fn the_chunked_forward_equals_the_composed_formula() -> Result<()> {
        for (dtype, tolerance) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            let [q, k, v] = qkv(dtype)?;
            let plain = composed(&q, &k, &v)?;
            for rows in [1, 3, 7, 10] {
                let chunked = attention_in_chunks(&q, &k, &v, rows)?;
                assert_eq!(chunked.dims(), plain.dims());
                let gap = largest_gap(&chunked, &plain)?;
                assert!(gap < tolerance, "{dtype:?}, {rows} rows: {gap:e}");
                let detached = [&q, &k, &v].map(|t| t.detach());
                let untracked =
                    attention_in_chunks(&detached[0], &detached[1], &detached[2], rows)?;
                assert_eq!(largest_gap(&untracked, &chunked)?, 0.0);
            }
        }
        Ok(())
    }

    /// In f64, chunks of 3 over 7 tokens: every entry of q's, k's and v's gradient of
    /// `Σ attention ⊙ probe` matches central finite differences.
    #[test]
    fn gradients_match_central_finite_differences() -> Result<()> {
        let [q, k, v] = qkv(DType::F64)?;
        let probe = Tensor::randn(0f64, 1.0, (2, 3, 7, 5), &Device::Cpu)?;
        let loss = || -> Result<f64> {
            attention_in_chunks(&q, &k, &v, 3)?
                .mul(&probe)?
                .sum_all()?
                .to_scalar()
        };
        let grads = attention_in_chunks(&q, &k, &v, 3)?
            .mul(&probe)?
            .sum_all()?
            .backward()?;
        let step = 1e-5;
        for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
            let grad = grads
                .get(var)
                .expect("a gradient")
                .flatten_all()?
                .to_vec1::<f64>()?;
            let values = var.flatten_all()?.to_vec1::<f64>()?;
            let largest = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            assert!(largest > 0.0, "{name}: the gradient is zero");
            for i in 0..values.len() {
                let at = |value: f64| -> Result<f64> {
                    let mut moved = values.clone();
                    moved[i] = value;
                    var.set(&Tensor::from_vec(moved, var.shape(), &Device::Cpu)?)?;
                    loss()
                };
                let numeric = (at(values[i] + step)? - at(values[i] - step)?) / (2.0 * step);
                at(values[i])?;
                let error = (numeric - grad[i]).abs() / largest;
                assert!(
                    error < 1e-8,
                    "{name}[{i}]: autograd {:.9e}, finite differences {numeric:.9e}",
                    grad[i]
                );
            }
        }
        Ok(())
    }

    /// f32 gives f64's gradients to f32 precision, through the same op.
    #[test]
    fn f32_gradients_agree_with_f64() -> Result<()> {
        let [q, k, v] = qkv(DType::F64)?;
        let probe = Tensor::randn(0f64, 1.0, (2, 3, 7, 5), &Device::Cpu)?;
        let gradients = |dtype: DType| -> Result<Vec<Tensor>> {
            let vars = [&q, &k, &v].map(|t| t.to_dtype(dtype).and_then(|t| Var::from_tensor(&t)));
            let [q, k, v] = vars.map(|var| var.expect("a variable"));
            let grads = attention_in_chunks(&q, &k, &v, 3)?
                .mul(&probe.to_dtype(dtype)?)?
                .sum_all()?
                .backward()?;
            [q, k, v]
                .iter()
                .map(|var| grads.get(var).expect("a gradient").to_dtype(DType::F64))
                .collect()
        };
        for (wide, narrow) in gradients(DType::F64)?.iter().zip(gradients(DType::F32)?) {
            assert!(largest_gap(wide, &narrow)? < 1e-5);
        }
        Ok(())
    }
}
