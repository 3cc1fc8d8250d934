//! The flow-matching Euler loop: start from seeded Gaussian noise at σ = 1 and step
//! `x ← x + (σ_next − σ)·v` down the schedule, every prompt of the conditioning stacked on the
//! batch axis, with the model's inputs built from the one contract (`inputs::Signature`).

use super::schedule::Schedule;
use super::{Denoiser, Grid};
use crate::error::{Error, Result};
use crate::inputs::{Conditioning, SYNTHETIC_GUIDANCE, Signature};
use crate::rng::Rng;
use crate::tensor::Tensor;
use indicatif::ProgressBar;
use std::time::Instant;

/// How to sample.
#[derive(Clone, Debug)]
pub struct SampleSpec {
    pub grid: Grid,
    pub steps: usize,
    /// Prompt row `p` starts from the noise of `Rng::new(seed, p)`: the same whatever the
    /// number of prompts.
    pub seed: u64,
    /// The guidance value (models with a guidance embedding only); `None`: FLUX.1-dev's 3.5.
    pub guidance: Option<f32>,
    pub schedule: Schedule,
}

/// One step as the loop took it (handed to the observer after the model ran).
pub struct Step<'a> {
    pub index: usize,
    pub sigma: f32,
    pub sigma_next: f32,
    /// The model's inputs at this step, as given to it.
    pub inputs: &'a [Tensor],
    /// The model call's wall time.
    pub seconds: f64,
}

/// The result of a run.
pub struct Sampled {
    /// `latents [P, N, C]`: the final latents, one sample per prompt row.
    pub latents: Tensor,
    pub sigmas: Vec<f32>,
    /// Wall time of each step's model call.
    pub step_seconds: Vec<f64>,
}

/// The guidance a run feeds: the given value, or 3.5 for a model with a guidance embedding; an
/// error for a value given to a model without one (it would be silently ignored otherwise).
pub fn resolve_guidance(model: &Signature, given: Option<f32>) -> Result<Option<f32>, String> {
    match (model.guidance, given) {
        (true, g) => Ok(Some(g.unwrap_or(SYNTHETIC_GUIDANCE))),
        (false, None) => Ok(None),
        (false, Some(g)) => Err(format!(
            "guidance {g} given, but the model has no guidance embedding (no `guidance` input: \
             a FLUX.1-schnell-style model); leave out the guidance value"
        )),
    }
}

/// Samples every prompt of `cond` with `model`: `spec.steps` Euler steps, one model call per
/// step for all prompts. `on_step` sees each step's inputs (what calibration records).
pub fn sample<D: Denoiser + ?Sized>(
    model: &mut D,
    cond: &Conditioning,
    spec: &SampleSpec,
    progress: &ProgressBar,
    mut on_step: impl FnMut(&Step<'_>) -> Result<()>,
) -> Result<Sampled> {
    let signature = model.signature();
    let guidance = resolve_guidance(&signature, spec.guidance).map_err(Error::Usage)?;
    if spec.steps == 0 {
        return Err(Error::Usage("sampling needs at least 1 step, not 0".into()));
    }
    let (p, n, c) = (cond.prompts, spec.grid.tokens(), signature.in_channels);
    let sigmas = spec.schedule.sigmas(spec.steps, n);
    let mut x = Vec::with_capacity(p * n * c);
    for row in 0..p {
        let mut rng = Rng::new(spec.seed, row as u64);
        x.extend((0..n * c).map(|_| rng.normal() as f32));
    }
    let named = |name: &str, shape: Vec<usize>, data: Vec<f32>| Tensor {
        name: name.into(),
        shape,
        data,
    };
    let mut step_seconds = Vec::with_capacity(spec.steps);
    for (index, w) in sigmas.windows(2).enumerate() {
        let (sigma, sigma_next) = (w[0], w[1]);
        let mut inputs = Vec::new();
        for input in signature.inputs() {
            inputs.push(match input.name {
                "hidden_states" => named(input.name, vec![p, n, c], x.clone()),
                "encoder_hidden_states" => cond.text.clone(),
                "pooled_projections" => cond.pooled.clone(),
                "timestep" => named(input.name, vec![p], vec![sigma; p]),
                "guidance" => named(input.name, vec![p], vec![guidance.unwrap_or(0.0); p]),
                "img_ids" => spec.grid.image_ids(signature.axes),
                "txt_ids" => {
                    let (l, axes) = (cond.text_tokens, signature.axes);
                    named(input.name, vec![l, axes], vec![0.0; l * axes])
                }
                other => return Err(Error::Internal(format!("no sampler input for `{other}`"))),
            });
        }
        let start = Instant::now();
        let v = model.velocity(&inputs)?;
        let seconds = start.elapsed().as_secs_f64();
        if v.shape != [p, n, c] {
            return Err(Error::Internal(format!(
                "the model returned `{}` of shape {:?} for hidden_states [{p}, {n}, {c}]",
                v.name, v.shape
            )));
        }
        let dt = sigma_next - sigma;
        for (x, v) in x.iter_mut().zip(&v.data) {
            *x += dt * v;
        }
        step_seconds.push(seconds);
        on_step(&Step {
            index,
            sigma,
            sigma_next,
            inputs: &inputs,
            seconds,
        })?;
        progress.inc(1);
    }
    Ok(Sampled {
        latents: named("latents", vec![p, n, c], x),
        sigmas,
        step_seconds,
    })
}
