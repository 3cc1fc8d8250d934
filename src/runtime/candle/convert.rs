//! Between the host tensor every executor speaks ([`crate::tensor::Tensor`], f32) and candle's
//! tensors on a device, in the compute type.

use super::candle_error;
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use candle_core::{DType, Device};

/// `t` on `device` in `dtype`. Its shape must describe its data.
pub fn from_host(t: &Tensor, device: &Device, dtype: DType) -> Result<candle_core::Tensor> {
    if t.shape.iter().product::<usize>() != t.data.len() {
        return Err(Error::Usage(format!(
            "input `{}` has shape {:?} but {} values",
            t.name,
            t.shape,
            t.data.len()
        )));
    }
    candle_core::Tensor::from_slice(&t.data, t.shape.as_slice(), device)
        .and_then(|x| x.to_dtype(dtype))
        .map_err(|e| candle_error(format_args!("input `{}`", t.name), e))
}

/// `t` back on the host as f32, named `name`.
pub fn to_host(name: &str, t: &candle_core::Tensor) -> Result<Tensor> {
    let data = t
        .flatten_all()
        .and_then(|x| x.to_dtype(DType::F32))
        .and_then(|x| x.to_vec1::<f32>())
        .map_err(|e| candle_error(format_args!("output `{name}`"), e))?;
    Ok(Tensor {
        name: name.to_owned(),
        shape: t.dims().to_vec(),
        data,
    })
}
