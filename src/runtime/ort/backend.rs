//! ONNX Runtime as a [`Backend`]: a stage is lowered to an ONNX model with its weights embedded
//! and loaded as a session on the chosen execution provider.

use super::provider::ExecutionProvider;
use super::session::LoadedModel;
use crate::error::Result;
use crate::ir::Graph;
use crate::ir::TensorStore;
use crate::onnx::{self, Target};
use crate::runtime::backend::{Backend, StageExecutable};
use crate::tensor::Tensor;

/// How stages are lowered for ONNX Runtime. Both its CPU and its CUDA provider have f32 kernels
/// of every contrib op `Target::Cuda` emits (FusedMatMul, MultiHeadAttention, RotaryEmbedding,
/// BranchwiseRMSNorm, FastGelu), and calibration runs in f32, so either provider runs the same
/// fused lowering the compiled model ships: a block's activations are computed as the export
/// will compute them.
const LOWERING: Target = Target::Cuda;

/// ONNX Runtime on this host.
#[derive(Clone, Debug)]
pub struct OrtBackend {
    threads: usize,
    /// Resolved: `Cpu` or `Cuda`, never `Auto`.
    provider: ExecutionProvider,
    /// Whether idle intra-op threads spin-wait (ONNX Runtime's default).
    spinning: bool,
}

impl OrtBackend {
    /// ONNX Runtime's CPU kernels with `threads` intra-op threads (0 = one per physical core).
    pub fn cpu(threads: usize) -> Self {
        Self {
            threads,
            provider: ExecutionProvider::Cpu,
            spinning: true,
        }
    }

    /// On the given execution provider; `Auto` is resolved now (this loads ONNX Runtime).
    pub fn new(threads: usize, provider: ExecutionProvider) -> Result<Self> {
        Ok(Self {
            threads,
            provider: provider.resolve()?,
            spinning: true,
        })
    }

    /// Idle intra-op threads sleep instead of spinning: for stages kept loaded together
    /// (`StagedRunner::keep_loaded`), where every session's spinning threads would compete for
    /// the cores (on the toy, 2 cores: sampling 5.6 s reloading stages, 8.1 s kept loaded with
    /// spinning, 0.9 s kept loaded without; `examples/staged_sampling.rs`).
    pub fn without_spinning(mut self) -> Self {
        self.spinning = false;
        self
    }

    pub fn provider(&self) -> ExecutionProvider {
        self.provider
    }
}

impl Backend for OrtBackend {
    type Stage = LoadedModel;

    fn load(&self, piece: &Graph, weights: &dyn TensorStore) -> Result<LoadedModel> {
        let bytes = onnx::to_embedded_bytes(piece, weights, LOWERING)?;
        Ok(LoadedModel::from_bytes_with(
            &bytes,
            self.threads,
            self.provider,
            self.spinning,
        )?)
    }

    fn describe(&self) -> String {
        let threads = match self.threads {
            0 => "one thread per core".to_string(),
            n => format!("{n} threads"),
        };
        format!(
            "ONNX Runtime ({}), {} execution provider, {threads}",
            super::ORT_LIB_NAME,
            self.provider
        )
    }
}

impl StageExecutable for LoadedModel {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        Ok(LoadedModel::run(self, inputs)?)
    }
}
