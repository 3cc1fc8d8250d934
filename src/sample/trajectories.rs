//! Calibration inputs from the model's own sampling trajectories: each prompt of a
//! conditioning file is sampled from seeded noise, and the transformer's inputs are recorded at
//! steps spread over the trajectory, so that the fits see what the model sees in use.
//!
//! Which steps: prompt `p` of `P` records `K` steps (`--calib-per-prompt`) of its `N`-step
//! trajectory (`--calib-steps`), one in each of `K` equal strata of the step index, at the
//! offset `(p + ½)/P` within the stratum: step `⌊(j + (p + ½)/P)·N/K⌋` for stratum `j`. The
//! step index, not σ, is what is spread evenly because every step costs one model call in use
//! and its error reaches the output alike; rotating the offset over the prompts makes the set
//! as a whole cover every step of the trajectory (each about `P·K/N` times) instead of the same
//! K steps for every prompt.

use super::Denoiser;
use super::euler::{SampleSpec, sample};
use crate::error::{Error, Result};
use crate::inputs::{Conditioning, InputSet};
use crate::tensor::Tensor;
use indicatif::ProgressBar;

/// The steps prompt `prompt` of `prompts` records (ascending, distinct when `per_prompt ≤ steps`).
pub fn recorded_steps(
    steps: usize,
    per_prompt: usize,
    prompt: usize,
    prompts: usize,
) -> Vec<usize> {
    let offset = (prompt as f64 + 0.5) / prompts.max(1) as f64;
    (0..per_prompt)
        .map(|j| {
            let position = (j as f64 + offset) * steps as f64 / per_prompt as f64;
            (position.floor() as usize).min(steps - 1)
        })
        .collect()
}

/// Samples every prompt of `cond` as `spec` says and returns the inputs recorded at
/// [`recorded_steps`]: `P·K` samples, ordered by prompt, then step.
pub fn record<D: Denoiser + ?Sized>(
    model: &mut D,
    cond: &Conditioning,
    spec: &SampleSpec,
    per_prompt: usize,
    progress: &ProgressBar,
) -> Result<InputSet> {
    if per_prompt == 0 || per_prompt > spec.steps {
        return Err(Error::Usage(format!(
            "--calib-per-prompt {per_prompt}: each prompt's trajectory has {} steps \
             (--calib-steps), so record between 1 and {} inputs per prompt",
            spec.steps, spec.steps
        )));
    }
    let prompts = cond.prompts;
    let chosen: Vec<Vec<usize>> = (0..prompts)
        .map(|p| recorded_steps(spec.steps, per_prompt, p, prompts))
        .collect();
    // Per recorded (prompt, step): the batched inputs' rows, and the shared ids once.
    let mut rows: Vec<(usize, usize, Vec<Tensor>)> = Vec::new();
    let mut shared: Vec<Tensor> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    sample(model, cond, spec, progress, |step| {
        if names.is_empty() {
            names = step.inputs.iter().map(|t| t.name.clone()).collect();
            shared = step
                .inputs
                .iter()
                .filter(|t| is_shared(&t.name))
                .cloned()
                .collect();
        }
        for (p, steps) in chosen.iter().enumerate() {
            if steps.contains(&step.index) {
                let row = step.inputs.iter().filter(|t| !is_shared(&t.name));
                rows.push((p, step.index, row.map(|t| row_of(t, p)).collect()));
            }
        }
        Ok(())
    })?;
    rows.sort_by_key(|(p, k, _)| (*p, *k));
    let samples = rows.len();
    let mut tensors = Vec::with_capacity(names.len());
    let mut batched = 0;
    for name in &names {
        if let Some(t) = shared.iter().find(|t| &t.name == name) {
            tensors.push(t.clone());
            continue;
        }
        let first = &rows[0].2[batched];
        let mut shape = first.shape.clone();
        shape.insert(0, samples);
        let mut data = Vec::with_capacity(samples * first.data.len());
        for (_, _, row) in &rows {
            data.extend_from_slice(&row[batched].data);
        }
        tensors.push(Tensor {
            name: name.clone(),
            shape,
            data,
        });
        batched += 1;
    }
    Ok(InputSet {
        samples,
        image_tokens: spec.grid.tokens(),
        text_tokens: cond.text_tokens,
        tensors,
    })
}

fn is_shared(name: &str) -> bool {
    crate::inputs::contract::ID_INPUTS.contains(&name)
}

/// Row `p` of a batched tensor, without its batch axis.
fn row_of(t: &Tensor, p: usize) -> Tensor {
    let per: usize = t.shape[1..].iter().product();
    Tensor {
        name: t.name.clone(),
        shape: t.shape[1..].to_vec(),
        data: t.data[p * per..(p + 1) * per].to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_step_is_covered_evenly() {
        // 10 prompts, 4 inputs each, from 20-step trajectories: every step recorded twice.
        let mut counts = [0usize; 20];
        for p in 0..10 {
            let steps = recorded_steps(20, 4, p, 10);
            assert_eq!(steps.len(), 4);
            assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
            steps.iter().for_each(|&k| counts[k] += 1);
        }
        assert_eq!(counts, [2; 20]);
        assert_eq!(recorded_steps(28, 28, 3, 20), (0..28).collect::<Vec<_>>());
        assert_eq!(recorded_steps(28, 1, 0, 1), [14]);
    }
}
