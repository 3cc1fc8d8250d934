//! Model inputs: the typed contract of the ONNX inputs (names and shapes for a `FluxConfig`),
//! and the calibration `InputSet` — the inputs the original blocks run on to capture the
//! activations BRLL fits — either read from a `--calib` file (validated against the contract)
//! or made up deterministically from a seed, and written back in the `--calib` format; and the
//! conditioning file a sampler reads (`cond`).

pub mod cond;
pub mod contract;
mod load;
mod save;
mod synthetic;

pub use cond::Conditioning;
pub use contract::{InputDim, ModelInput, Signature, model_inputs};
pub use synthetic::{SYNTHETIC_GUIDANCE, SYNTHETIC_TEXT_STD};

use crate::tensor::Tensor;
use contract::ID_INPUTS;

/// A set of model inputs, samples stacked on the batch axis, named and ordered as
/// [`model_inputs`] says.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSet {
    pub samples: usize,
    pub image_tokens: usize,
    pub text_tokens: usize,
    pub tensors: Vec<Tensor>,
}

/// Sizes and seed of a synthetic set (see [`InputSet::synthetic`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyntheticSpec {
    pub samples: usize,
    pub image_tokens: usize,
    pub text_tokens: usize,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    /// 16 samples of 256 image tokens (a 16×16 latent grid) and 64 text tokens, seed 0.
    fn default() -> Self {
        Self {
            samples: 16,
            image_tokens: 256,
            text_tokens: 64,
            seed: 0,
        }
    }
}

/// The seed of the held-out set that goes with a synthetic calibration set made from `seed`:
/// `seed` with a fixed bit pattern flipped, so the two sets draw from unrelated random streams.
pub fn held_out_seed(seed: u64) -> u64 {
    seed ^ 0x6a09_e667_f3bc_c909
}

impl InputSet {
    /// The set's token counts, for cost and memory estimates.
    pub fn tokens(&self) -> crate::ir::cost::Tokens {
        crate::ir::cost::Tokens {
            image: self.image_tokens,
            text: self.text_tokens,
        }
    }

    /// Samples `[start, end)` as a new set (the runner processes samples in chunks); the ids are
    /// shared, so copied whole. Panics unless `start <= end <= self.samples`.
    pub fn slice(&self, start: usize, end: usize) -> InputSet {
        assert!(
            start <= end && end <= self.samples,
            "slice {start}..{end} of a set of {} samples",
            self.samples
        );
        let tensors = self.tensors.iter().map(|t| {
            if ID_INPUTS.contains(&t.name.as_str()) {
                return t.clone();
            }
            let per_sample: usize = t.shape[1..].iter().product();
            let mut shape = t.shape.clone();
            shape[0] = end - start;
            let data = t.data[start * per_sample..end * per_sample].to_vec();
            Tensor {
                name: t.name.clone(),
                shape,
                data,
            }
        });
        InputSet {
            samples: end - start,
            image_tokens: self.image_tokens,
            text_tokens: self.text_tokens,
            tensors: tensors.collect(),
        }
    }

    /// The tensor with this ONNX input name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_seed_differs() {
        assert_ne!(held_out_seed(0), 0);
        assert_ne!(held_out_seed(3), 3);
    }
}
