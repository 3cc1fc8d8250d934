//! Calibration inputs: the model inputs the original blocks are run on to capture the
//! activations that BRLL fits. Either read from a `--calib` file (validated against the model)
//! or made up deterministically from a seed.

use crate::checkpoint::FluxConfig;
use crate::dtype::{DType, decode_f32};
use crate::error::{Error, Result};
use crate::runtime::NamedTensor;
use memmap2::Mmap;
use safetensors::SafeTensors;
use std::fmt;
use std::fs::File;
use std::path::Path;

/// Standard deviation of the synthetic `encoder_hidden_states`. FLUX.1's text features are
/// T5-XXL's final RMS-normalised hidden states, which are small: apart from a few outlier
/// channels their elements have a spread of roughly 0.1–0.3, so unit-variance text would drive
/// `txt_in` far outside what a real checkpoint has seen. (Models trained on unit-variance text,
/// such as the toy in `shared/toy`, come with their own calibration file.)
pub const SYNTHETIC_TEXT_STD: f32 = 0.2;

/// The synthetic guidance scale: FLUX.1-dev's usual setting.
pub const SYNTHETIC_GUIDANCE: f32 = 3.5;

/// A set of model inputs, samples stacked on the batch axis, named as the ONNX inputs:
/// `hidden_states [S,N,C]`, `encoder_hidden_states [S,L,ctx]`, `pooled_projections [S,pooled]`,
/// `timestep [S]`, `guidance [S]` (only for models with a guidance embedding), `img_ids [N,axes]`,
/// `txt_ids [L,axes]`, in that order.
#[derive(Clone, Debug, PartialEq)]
pub struct InputSet {
    pub samples: usize,
    pub image_tokens: usize,
    pub text_tokens: usize,
    pub tensors: Vec<NamedTensor>,
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

/// The inputs that share one id grid across the batch rather than having a batch axis.
const ID_INPUTS: [&str; 2] = ["img_ids", "txt_ids"];

/// One dimension of an expected shape: a size shared between inputs, or one the model fixes.
#[derive(Clone, Copy)]
enum Dim {
    S,
    N,
    L,
    Fixed(usize, &'static str),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::S => f.write_str("S"),
            Dim::N => f.write_str("N"),
            Dim::L => f.write_str("L"),
            Dim::Fixed(n, _) => write!(f, "{n}"),
        }
    }
}

fn show(dims: &[Dim]) -> String {
    let dims: Vec<String> = dims.iter().map(Dim::to_string).collect();
    format!("[{}]", dims.join(", "))
}

/// The inputs the model takes, in order, with their expected shapes.
fn expected_inputs(config: &FluxConfig) -> Vec<(&'static str, Vec<Dim>)> {
    use Dim::{Fixed, L, N, S};
    let axes = Fixed(config.axes_dim.len(), "number of RoPE axes");
    let mut inputs = vec![
        (
            "hidden_states",
            vec![S, N, Fixed(config.in_channels, "in_channels")],
        ),
        (
            "encoder_hidden_states",
            vec![S, L, Fixed(config.context_dim, "context width")],
        ),
        (
            "pooled_projections",
            vec![S, Fixed(config.pooled_dim, "pooled width")],
        ),
        ("timestep", vec![S]),
    ];
    if config.guidance {
        inputs.push(("guidance", vec![S]));
    }
    inputs.extend([("img_ids", vec![N, axes]), ("txt_ids", vec![L, axes])]);
    inputs
}

impl InputSet {
    /// Reads a calibration file and validates it against the model: every input the model
    /// takes must be present (any float dtype) with the right shape and the same sample count
    /// S, image tokens N and text tokens L throughout, all values finite, and `timestep` the
    /// sigma in [0, 1]. Errors name the file, the tensor, the expected shape (`[S, N, 64]`) and
    /// what was found. Other tensors are ignored, so is `guidance` for a model without a
    /// guidance embedding. The ids may also carry a leading batch axis (`[S,N,3]` or `[1,N,3]`,
    /// diffusers' old format) if every sample has the same ids.
    pub fn load(path: &Path, config: &FluxConfig) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only map of a file nobody edits while we read it (as for checkpoints).
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&map)
            .map_err(|e| Error::file(path, format!("not a valid safetensors file: {e}")))?;
        let mut bound: [Option<(usize, &'static str)>; 3] = [None; 3];
        let mut tensors = Vec::new();
        for (name, dims) in expected_inputs(config) {
            let bad = |msg: String| Error::tensor(path, name, msg);
            let view = st.tensor(name).map_err(|_| {
                let mut held: Vec<&str> = st.names();
                held.sort_unstable();
                let held = match held.is_empty() {
                    true => "no tensors".to_string(),
                    false => format!("`{}`", held.join("`, `")),
                };
                let why = match name {
                    "guidance" => ": the model has a guidance embedding (FLUX-dev style)",
                    _ => "",
                };
                bad(format!(
                    "missing{why}: the model needs it with shape {} (the file holds {held})",
                    show(&dims)
                ))
            })?;
            let dtype = DType::from_safetensors(&view.dtype().to_string()).ok_or_else(|| {
                bad(format!(
                    "dtype {} (expected F32, F64, F16 or BF16)",
                    view.dtype()
                ))
            })?;
            let mut data = vec![0f32; view.shape().iter().product()];
            decode_f32(dtype, view.data(), &mut data);
            let mut shape = view.shape().to_vec();
            if ID_INPUTS.contains(&name) && shape.len() == dims.len() + 1 {
                (shape, data) = unbatch_ids(&shape, data, &bound, &dims).map_err(bad)?;
            }
            bind(&dims, &shape, &mut bound, name).map_err(bad)?;
            if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("element {i} is {}", data[i])));
            }
            if name == "timestep"
                && let Some(t) = data.iter().find(|t| !(0.0..=1.0).contains(*t))
            {
                return Err(bad(format!(
                    "holds {t}: the timestep is the sigma in [0, 1] (the model multiplies by \
                     1000 inside), not the scheduler's 0–1000 timestep"
                )));
            }
            let name = name.to_string();
            tensors.push(NamedTensor { name, shape, data });
        }
        let size = |i: usize| bound[i].map_or(0, |(n, _)| n);
        Ok(Self {
            samples: size(0),
            image_tokens: size(1),
            text_tokens: size(2),
            tensors,
        })
    }

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
    /// Each tensor has its own stream of a splitmix64 generator seeded from `spec.seed`; normals
    /// come from Box–Muller in Marsaglia's polar form (no sin/cos) with a logarithm computed in
    /// plain IEEE arithmetic, so no platform libm enters the result.
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
        let names = expected_inputs(config).into_iter().map(|(name, _)| name);
        let tensors = names.zip(tensors).map(|(name, (shape, data))| NamedTensor {
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
            NamedTensor {
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
    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Checks `shape` against `dims`, binding S, N and L on first sight (`bound[i]` holds the size
/// and the tensor that set it) and requiring every later tensor to agree.
fn bind(
    dims: &[Dim],
    shape: &[usize],
    bound: &mut [Option<(usize, &'static str)>; 3],
    name: &'static str,
) -> Result<(), String> {
    let mismatch = || format!("expected shape {}, found {shape:?}", show(dims));
    if shape.len() != dims.len() {
        let alt = if ID_INPUTS.contains(&name) {
            " (or the same with a leading batch axis of 1 or S, the ids shared by every sample)"
        } else {
            ""
        };
        return Err(format!("{}{alt}", mismatch()));
    }
    for (i, (&dim, &found)) in dims.iter().zip(shape).enumerate() {
        let (slot, what) = match dim {
            Dim::Fixed(want, _) if want == found => continue,
            Dim::Fixed(want, what) => {
                return Err(format!(
                    "{}: dimension {i} must be {want}, the model's {what}",
                    mismatch()
                ));
            }
            Dim::S => (0, "samples"),
            Dim::N => (1, "image tokens"),
            Dim::L => (2, "text tokens"),
        };
        match bound[slot] {
            Some((size, _)) if size == found => {}
            Some((size, from)) => {
                return Err(format!(
                    "{}: {dim} ({what}) is {size} in `{from}` but {found} here; every input \
                     must describe the same {what}",
                    mismatch()
                ));
            }
            None if found == 0 => {
                return Err(format!(
                    "{}: {dim} is 0, so there are no {what}",
                    mismatch()
                ));
            }
            None => bound[slot] = Some((found, name)),
        }
    }
    Ok(())
}

/// Drops the leading batch axis of ids given per sample, if it is 1 or S and all samples agree.
fn unbatch_ids(
    shape: &[usize],
    data: Vec<f32>,
    bound: &[Option<(usize, &'static str)>; 3],
    dims: &[Dim],
) -> Result<(Vec<usize>, Vec<f32>), String> {
    let (batch, one) = (shape[0], shape[1..].iter().product::<usize>());
    let samples = bound[0].map_or(0, |(s, _)| s);
    if batch != 1 && batch != samples {
        return Err(format!(
            "expected shape {} or with a leading batch axis of 1 or S = {samples}, found {shape:?}",
            show(dims)
        ));
    }
    for k in 1..batch {
        let sample = &data[k * one..(k + 1) * one];
        if let Some(i) = (0..one).find(|&i| sample[i] != data[i]) {
            let (token, axis) = (i / shape[2].max(1), i % shape[2].max(1));
            return Err(format!(
                "given per sample ({shape:?}), but sample {k} differs from sample 0 (token \
                 {token}, axis {axis}: {} vs {}); the model takes one id grid shared by the whole \
                 batch, so put samples with different ids in different calibration files",
                sample[i], data[i]
            ));
        }
    }
    let mut data = data;
    data.truncate(one);
    Ok((shape[1..].to_vec(), data))
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

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// splitmix64, one independent stream per (seed, stream): streams start at hashed states.
struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    fn new(seed: u64, stream: u64) -> Self {
        let state = mix(mix(seed) ^ mix(stream.wrapping_mul(GOLDEN_GAMMA) ^ 0x0123_4567));
        Self { state, spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in the open interval (0, 1), on a grid of 2⁻⁵³.
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal: Box–Muller, polar form.
    fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        loop {
            let (u, v) = (2.0 * self.uniform() - 1.0, 2.0 * self.uniform() - 1.0);
            let r2 = u * u + v * v;
            if r2 < 1.0 && r2 > 0.0 {
                let factor = (-2.0 * ln(r2) / r2).sqrt();
                self.spare = Some(v * factor);
                return u * factor;
            }
        }
    }
}

/// Natural logarithm of a positive normal f64 from +, −, ×, ÷ only (IEEE, so the same bits on
/// every platform): x = m·2ᵉ with m in [√½, √2), ln m = 2·atanh(t), t = (m−1)/(m+1), |t| < 0.172,
/// whose series, cut after t²³, is exact to about 1e-17.
fn ln(x: f64) -> f64 {
    debug_assert!(x.is_normal() && x > 0.0);
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let t = (m - 1.0) / (m + 1.0);
    let t2 = t * t;
    let series = (0..12u32)
        .rev()
        .fold(0.0, |acc, k| acc * t2 + 1.0 / f64::from(2 * k + 1));
    e as f64 * std::f64::consts::LN_2 + 2.0 * t * series
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_matches_std() {
        let mut rng = Rng::new(7, 0);
        for x in (0..2000)
            .map(|_| rng.uniform())
            .chain([1e-30, 0.5, 1.0, 1.5, 2.0, 1e30])
        {
            let (ours, std) = (ln(x), x.ln());
            assert!(
                (ours - std).abs() <= 4e-16 * std.abs().max(1.0),
                "ln({x}): {ours} vs {std}"
            );
        }
    }

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

    #[test]
    fn streams_and_seeds_differ() {
        let draw = |seed, stream| {
            let mut rng = Rng::new(seed, stream);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(3, 1), draw(3, 1));
        assert_ne!(draw(3, 1), draw(3, 2));
        assert_ne!(draw(3, 1), draw(4, 1));
        assert_ne!(held_out_seed(0), 0);
        assert_ne!(draw(held_out_seed(3), 1), draw(3, 1));
    }

    #[test]
    fn pinned_first_normals() {
        // Pins the generator: any change to it changes every synthetic set on every machine.
        // The values were also computed by a separate Python transcription of the algorithm
        // (with libm's log), which gave the same bits.
        let mut rng = Rng::new(0, 1);
        let z: Vec<f64> = (0..3).map(|_| rng.normal()).collect();
        let pinned = [0.7746712815435944, 0.11315508357294106, 2.2864396016120385];
        assert_eq!(z, pinned, "update the pin only on purpose");
    }
}
