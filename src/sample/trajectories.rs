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
//!
//! Held out for `--verify` when asked: the same trajectories' inputs at steps that were not
//! recorded ([`held_out_steps`]), which costs no extra sampling.

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

/// The steps prompt `prompt` of `prompts` holds out for `--verify`: as many as it records
/// (fewer when fewer are left), spread evenly over the steps it does not record, so they are
/// disjoint from [`recorded_steps`] by construction. They are inputs no fit saw, but they share
/// the prompt and the starting noise with that prompt's recorded inputs, lie between them on
/// the trajectory, and their noise levels are recorded for other prompts: they judge the fits
/// on new points of the flows they were fitted on, not on prompts they have not seen.
pub fn held_out_steps(
    steps: usize,
    per_prompt: usize,
    prompt: usize,
    prompts: usize,
) -> Vec<usize> {
    let recorded = recorded_steps(steps, per_prompt, prompt, prompts);
    let free: Vec<usize> = (0..steps).filter(|k| !recorded.contains(k)).collect();
    let count = per_prompt.min(free.len());
    (0..count)
        .map(|j| free[(2 * j + 1) * free.len() / (2 * count)])
        .collect()
}

/// What [`record`] kept of the trajectories.
pub struct Recording {
    /// The inputs at [`recorded_steps`]: `P·K` samples, ordered by prompt, then step.
    pub calibration: InputSet,
    /// With `hold_out`, the inputs at [`held_out_steps`], ordered the same way.
    pub held_out: Option<InputSet>,
}

/// Samples every prompt of `cond` as `spec` says and keeps the inputs at [`recorded_steps`]
/// and, with `hold_out`, those at [`held_out_steps`].
pub fn record<D: Denoiser + ?Sized>(
    model: &mut D,
    cond: &Conditioning,
    spec: &SampleSpec,
    per_prompt: usize,
    hold_out: bool,
    progress: &ProgressBar,
) -> Result<Recording> {
    if per_prompt == 0 || per_prompt > spec.steps {
        return Err(Error::Usage(format!(
            "--calib-per-prompt {per_prompt}: each prompt's trajectory has {} steps \
             (--calib-steps), so record between 1 and {} inputs per prompt",
            spec.steps, spec.steps
        )));
    }
    if hold_out && per_prompt == spec.steps {
        return Err(Error::Usage(format!(
            "--verify with --calib-cond judges the pruned model on the trajectory steps not \
             recorded for calibration, but --calib-per-prompt {per_prompt} records all {} steps \
             (--calib-steps): record fewer, or pass --verify-inputs FILE",
            spec.steps
        )));
    }
    let prompts = cond.prompts;
    let plan = |steps_of: fn(usize, usize, usize, usize) -> Vec<usize>| -> Vec<Vec<usize>> {
        (0..prompts)
            .map(|p| steps_of(spec.steps, per_prompt, p, prompts))
            .collect()
    };
    let recorded = plan(recorded_steps);
    let held_out = match hold_out {
        true => plan(held_out_steps),
        false => vec![Vec::new(); prompts],
    };
    // Per kept (prompt, step): the batched inputs' rows, and the shared ids once.
    let (mut kept, mut kept_out) = (Vec::new(), Vec::new());
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
        for p in 0..prompts {
            let row = || {
                let batched = step.inputs.iter().filter(|t| !is_shared(&t.name));
                batched.map(|t| row_of(t, p)).collect()
            };
            if recorded[p].contains(&step.index) {
                kept.push((p, step.index, row()));
            }
            if held_out[p].contains(&step.index) {
                kept_out.push((p, step.index, row()));
            }
        }
        Ok(())
    })?;
    let stack = |rows| stack(&names, &shared, rows, spec.grid.tokens(), cond.text_tokens);
    Ok(Recording {
        calibration: stack(kept),
        held_out: hold_out.then(|| stack(kept_out)),
    })
}

/// The kept rows as one set: every batched input's rows stacked on a new batch axis, in
/// (prompt, step) order, the shared ids as they are.
fn stack(
    names: &[String],
    shared: &[Tensor],
    mut rows: Vec<(usize, usize, Vec<Tensor>)>,
    image_tokens: usize,
    text_tokens: usize,
) -> InputSet {
    rows.sort_by_key(|(p, k, _)| (*p, *k));
    let samples = rows.len();
    let mut tensors = Vec::with_capacity(names.len());
    let mut batched = 0;
    for name in names {
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
    InputSet {
        samples,
        image_tokens,
        text_tokens,
        tensors,
    }
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

    #[test]
    fn held_out_steps_are_the_unrecorded_ones_spread_out() {
        for (steps, per_prompt, prompts) in [(20, 4, 10), (4, 2, 10), (28, 4, 3), (5, 3, 2)] {
            for p in 0..prompts {
                let recorded = recorded_steps(steps, per_prompt, p, prompts);
                let held = held_out_steps(steps, per_prompt, p, prompts);
                assert_eq!(held.len(), per_prompt.min(steps - per_prompt));
                assert!(held.windows(2).all(|w| w[0] < w[1]), "{held:?}");
                assert!(held.iter().all(|k| *k < steps && !recorded.contains(k)));
            }
        }
        // 8 steps, 2 recorded (2 and 6 for the only prompt): 2 of the other 6, one per half.
        assert_eq!(recorded_steps(8, 2, 0, 1), [2, 6]);
        assert_eq!(held_out_steps(8, 2, 0, 1), [1, 5]);
        assert!(held_out_steps(4, 4, 0, 1).is_empty());
    }
}
