//! The product `x Wᵀ` with a frozen `W` whose backward computes only `x`'s gradient.
//!
//! candle's matmul backward always computes both operands' gradients: for a frozen weight
//! that is a second product as large as the forward one, and a weight-sized tensor that is
//! thrown away. Sandwich training freezes every neighbour weight (only their adapters train),
//! so most of its products are of this kind. Here the product is computed detached from the
//! graph and passed through a custom op whose backward returns `g W` for `x` and nothing for
//! `W`. CPU only: on other devices the plain matmul is used (the op's forward is a copy that
//! candle's CUDA backend would need its own kernel for).

use candle_core::{CpuStorage, CustomOp2, Layout, Result, Shape, Tensor};

/// `x Wᵀ` for `x [rows, in]` (tracked by autograd) and a frozen `w [out, in]`.
pub(super) fn frozen_product(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let product = x.detach().matmul(&w.t()?)?;
    x.apply_op2(
        &product,
        PassGradientToInput {
            weight: w.contiguous()?,
        },
    )
}

/// Forward: its second operand (the product, already computed) unchanged. Backward: `g W` for
/// the first operand (`x`), none for the product (it is detached).
struct PassGradientToInput {
    weight: Tensor,
}

impl CustomOp2 for PassGradientToInput {
    fn name(&self) -> &'static str {
        "frozen-weight-product"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        product: &CpuStorage,
        layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("frozen-weight-product: the product is not contiguous")
        };
        let copy = match product {
            CpuStorage::F32(v) => CpuStorage::F32(v[start..end].to_vec()),
            CpuStorage::F64(v) => CpuStorage::F64(v[start..end].to_vec()),
            _ => candle_core::bail!("frozen-weight-product: computes in f32 or f64 only"),
        };
        Ok((copy, layout.shape().clone()))
    }

    fn bwd(
        &self,
        _: &Tensor,
        _: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        Ok((Some(grad.matmul(&self.weight)?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The same values as the plain product, and the same gradient for `x`.
    #[test]
    fn equals_the_plain_product_forward_and_backward() -> Result<()> {
        let device = Device::Cpu;
        let x = Var::randn(0f64, 1.0, (5, 3), &device)?;
        let w = Tensor::randn(0f64, 1.0, (4, 3), &device)?;
        let probe = Tensor::randn(0f64, 1.0, (5, 4), &device)?;
        let plain = x.matmul(&w.t()?)?;
        let frozen = frozen_product(&x, &w)?;
        let gap = |a: &Tensor, b: &Tensor| -> Result<f64> {
            a.sub(b)?
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .to_scalar()
        };
        assert_eq!(gap(&plain, &frozen)?, 0.0);
        let plain_grad = plain.mul(&probe)?.sum_all()?.backward()?;
        let frozen_grad = frozen.mul(&probe)?.sum_all()?.backward()?;
        let (a, b) = (plain_grad.get(&x), frozen_grad.get(&x));
        assert!(gap(a.unwrap(), b.expect("x has a gradient"))? < 1e-12);
        Ok(())
    }
}
