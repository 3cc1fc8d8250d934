//! candle as a [`Backend`]: each stage lowered frozen (no trainables) in f32, so the staged
//! runner runs any stage on candle, f32 in and out, as it runs them on ONNX Runtime.

use super::convert::{from_host, to_host};
use super::lowered::Lowered;
use super::trainables::Trainables;
use crate::error::{Error, Result};
use crate::ir::{Graph, TensorStore};
use crate::rng::Rng;
use crate::runtime::backend::{Backend, StageExecutable};
use crate::tensor::Tensor;
use candle_core::{DType, Device};

/// candle on one device, computing in f32.
#[derive(Clone, Debug)]
pub struct CandleBackend {
    device: Device,
}

impl CandleBackend {
    pub fn new(device: Device) -> Self {
        Self { device }
    }

    pub fn cpu() -> Self {
        Self::new(Device::Cpu)
    }

    pub fn device(&self) -> &Device {
        &self.device
    }
}

/// A stage lowered frozen on candle.
pub struct CandleStage {
    lowered: Lowered,
}

impl CandleStage {
    pub fn lowered(&self) -> &Lowered {
        &self.lowered
    }
}

impl Backend for CandleBackend {
    type Stage = CandleStage;

    fn load(&self, piece: &Graph, weights: &dyn TensorStore) -> Result<CandleStage> {
        // Nothing trains, so the generator that would draw LoRA matrices is never read.
        let mut unused = Rng::new(0, 0);
        let lowered = Lowered::new(
            piece,
            weights,
            &Trainables::default(),
            &self.device,
            DType::F32,
            &mut unused,
        )?;
        Ok(CandleStage { lowered })
    }

    fn describe(&self) -> String {
        format!("candle on {:?}, f32", self.device)
    }
}

impl StageExecutable for CandleStage {
    /// Takes the inputs by name, as ONNX Runtime does.
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let names = self.lowered.input_names();
        let ordered = names
            .iter()
            .map(|name| {
                let t = inputs.iter().find(|t| &t.name == name).ok_or_else(|| {
                    Error::Usage(format!("missing `{name}` (stage inputs: {names:?})"))
                })?;
                from_host(t, self.lowered.device(), DType::F32)
            })
            .collect::<Result<Vec<_>>>()?;
        let outputs = self.lowered.forward(&ordered)?;
        outputs
            .iter()
            .zip(self.lowered.output_names())
            .map(|(t, name)| to_host(name, t))
            .collect()
    }
}
