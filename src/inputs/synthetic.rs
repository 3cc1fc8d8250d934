//! Synthetic calibration inputs: deterministic, the same on every machine for the same spec,
//! with distributions close to what a FLUX checkpoint sees in use.

use super::contract::model_inputs;
use super::{InputSet, SyntheticSpec};
use crate::checkpoint::FluxConfig;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::tensor::Tensor;

/// Standard deviation of the synthetic `encoder_hidden_states`. FLUX.1's text features are
/// T5-XXL's final RMS-normalised hidden states, which are small: apart from a few outlier
/// channels their elements have a spread of roughly 0.1–0.3, so unit-variance text would drive
/// `txt_in` far outside what a real checkpoint has seen. (Models trained on unit-variance text,
/// such as the toy in `shared/toy`, come with their own calibration file.)
pub const SYNTHETIC_TEXT_STD: f32 = 0.2;

/// The synthetic guidance scale: FLUX.1-dev's usual setting.
pub const SYNTHETIC_GUIDANCE: f32 = 3.5;

impl InputSet {
    /// Deterministic synthetic inputs, the same on every machine for the same spec:
    /// - `hidden_states` ~ N(0, 1): FLUX latents are normalised to about unit variance, and the
    ///   noised latent the model sees is a mix of latent and unit Gaussian noise;
    /// - `encoder_hidden_states` ~ N(0, [`SYNTHETIC_TEXT_STD`]²) = N(0, 0.2²), see there;
    /// - `pooled_projections` ~ N(0, 1);
    /// - `timestep`: stratified over (0, 1), sample k uniform in (k/S, (k+1)/S), so every noise
    ///   level is represented (ascending: a prefix of the set covers only the low noise levels);
    /// - `guidance` (guidance models only): [`SYNTHETIC_GUIDANCE`] = 3.5 for every sample;
    /// - `img_ids`: (0, row, col) with token `row·w + col` over the most square h×w grid (h ≤ w)
    ///   of the requested token count (for more than 3 axes the leading ones are 0);
    /// - `txt_ids`: zeros.
    ///
    /// Each tensor has its own stream of the crate's [`Rng`] seeded from `spec.seed`, which is
    /// bit-identical on every platform.
    pub fn synthetic(config: &FluxConfig, spec: &SyntheticSpec) -> Result<Self> {
        let SyntheticSpec {
            samples: s,
            image_tokens: n,
            text_tokens: l,
            seed,
        } = *spec;
        for (size, what) in [(s, "samples"), (n, "image tokens"), (l, "text tokens")] {
            if size == 0 {
                return Err(Error::Usage(format!(
                    "a synthetic calibration set needs at least one of its {what}, not 0"
                )));
            }
        }
        let axes = config.axes_dim.len();
        if axes < 2 {
            return Err(Error::Usage(format!(
                "synthetic image ids need at least two RoPE axes (row, column); the model has {axes}"
            )));
        }
        let normal = |stream: u64, shape: Vec<usize>, std: f32| {
            let mut rng = Rng::new(seed, stream);
            let numel = shape.iter().product();
            let data = (0..numel).map(|_| rng.normal() as f32 * std);
            (shape, data.collect())
        };
        let mut tensors = vec![
            normal(1, vec![s, n, config.in_channels], 1.0),
            normal(2, vec![s, l, config.context_dim], SYNTHETIC_TEXT_STD),
            normal(3, vec![s, config.pooled_dim], 1.0),
            (vec![s], stratified_timesteps(s, &mut Rng::new(seed, 4))),
        ];
        if config.guidance {
            tensors.push((vec![s], vec![SYNTHETIC_GUIDANCE; s]));
        }
        let (_, w) = grid(n);
        let img_ids = (0..n * axes).map(|i| {
            let (token, axis) = (i / axes, i % axes);
            match axes - axis {
                2 => (token / w) as f32,
                1 => (token % w) as f32,
                _ => 0.0,
            }
        });
        tensors.push((vec![n, axes], img_ids.collect()));
        tensors.push((vec![l, axes], vec![0.0; l * axes]));
        let names = model_inputs(config).into_iter().map(|input| input.name);
        let tensors = names.zip(tensors).map(|(name, (shape, data))| Tensor {
            name: name.to_string(),
            shape,
            data,
        });
        Ok(Self {
            samples: s,
            image_tokens: n,
            text_tokens: l,
            tensors: tensors.collect(),
        })
    }
}

/// The most square factorisation h × w = n with h ≤ w.
fn grid(n: usize) -> (usize, usize) {
    let h = (1..=n)
        .take_while(|h| h * h <= n)
        .filter(|&h| n.is_multiple_of(h))
        .last()
        .unwrap_or(1);
    (h, n / h)
}

/// One timestep per stratum: sample k uniform in the open interval (k/S, (k+1)/S).
fn stratified_timesteps(s: usize, rng: &mut Rng) -> Vec<f32> {
    (0..s)
        .map(|k| {
            let (lo, hi) = (k as f64 / s as f64, (k + 1) as f64 / s as f64);
            let mut t = ((k as f64 + rng.uniform()) / s as f64) as f32;
            // Rounding to f32 may land on a stratum edge; step back inside.
            if f64::from(t) <= lo {
                t = t.next_up();
            }
            if f64::from(t) >= hi {
                t = t.next_down();
            }
            t
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_are_most_square() {
        assert_eq!(grid(256), (16, 16));
        assert_eq!(grid(64), (8, 8));
        assert_eq!(grid(12), (3, 4));
        assert_eq!(grid(4096), (64, 64));
        assert_eq!(grid(8), (2, 4));
        assert_eq!(grid(7), (1, 7));
        assert_eq!(grid(1), (1, 1));
    }
}
