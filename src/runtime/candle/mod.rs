//! candle as an executor: an IR piece (what `Graph::extract` returns for a set of stages, the
//! same piece the staged ONNX Runtime runner runs) lowered to candle tensor ops, either frozen
//! ([`CandleBackend`], a [`super::Backend`] for the staged runner) or with trainable LoRA
//! adapters and fully trained weights ([`Lowered`] with [`Trainables`]), for sandwich training.
//! The ops' rules live in `lower/`, one op family per file, as `onnx::lower` organises them.

mod backend;
mod convert;
mod lower;
mod lowered;
mod trainables;

pub use backend::{CandleBackend, CandleStage};
pub use convert::{from_host, to_host};
pub use lowered::Lowered;
pub use trainables::{LoraShape, LoraValues, Param, ParamKind, Trainables};

use crate::error::{Error, Result};
use crate::runtime::ExecutionProvider;
use candle_core::{Device, DeviceLocation};

/// The candle device for `provider`, the `--execution-provider` that ONNX Runtime's sessions
/// also follow: `cuda` needs a build with the `cuda` feature and a GPU; `auto` takes GPU 0
/// when this build has CUDA, else the CPU.
pub fn device(provider: ExecutionProvider) -> Result<Device> {
    let device = match provider {
        ExecutionProvider::Cpu => Ok(Device::Cpu),
        ExecutionProvider::Cuda if !candle_core::utils::cuda_is_available() => {
            return Err(Error::Usage(
                "--execution-provider cuda: this fastflux was built without CUDA for candle \
                 (sandwich training); rebuild with `cargo build --release --features cuda`"
                    .into(),
            ));
        }
        ExecutionProvider::Cuda => Device::new_cuda(0),
        ExecutionProvider::Auto => Device::cuda_if_available(0),
    };
    device.map_err(|e| candle_error("opening the CUDA device for candle", e))
}

/// Where candle computes, as a summary states it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum CandleDevice {
    Cpu,
    /// A CUDA GPU, by ordinal.
    Cuda(usize),
    /// An Apple GPU (not built by fastflux, but a location candle has).
    Metal(usize),
}

impl CandleDevice {
    /// Where `device` is.
    pub fn of(device: &Device) -> Self {
        match device.location() {
            DeviceLocation::Cpu => Self::Cpu,
            DeviceLocation::Cuda { gpu_id } => Self::Cuda(gpu_id),
            DeviceLocation::Metal { gpu_id } => Self::Metal(gpu_id),
        }
    }
}

/// A candle failure, with what was being done when it happened.
pub(crate) fn candle_error(context: impl std::fmt::Display, err: candle_core::Error) -> Error {
    Error::Candle(format!("{context}: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_the_cpu_and_auto_falls_back_to_it_without_cuda() {
        assert!(device(ExecutionProvider::Cpu).unwrap().is_cpu());
        let cpu = CandleDevice::of(&device(ExecutionProvider::Cpu).unwrap());
        assert_eq!(cpu, CandleDevice::Cpu);
        if !candle_core::utils::cuda_is_available() {
            assert!(device(ExecutionProvider::Auto).unwrap().is_cpu());
            let err = device(ExecutionProvider::Cuda).unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }
}
