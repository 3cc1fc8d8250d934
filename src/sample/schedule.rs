//! FLUX.1's sampling schedule, as diffusers' `FluxPipeline` sets up its
//! `FlowMatchEulerDiscreteScheduler`: sigmas `linspace(1, 1/N, N)` then 0, time-shifted for
//! FLUX.1-dev by `e^μ / (e^μ + (1/σ − 1))` with μ linear in the image token count, unshifted for
//! FLUX.1-schnell.

use std::fmt;

/// The image token count at which μ is `BASE_SHIFT` (FLUX.1-dev's `base_image_seq_len`).
pub const BASE_SEQ_LEN: f64 = 256.0;
/// The image token count at which μ is `MAX_SHIFT` (`max_image_seq_len`).
pub const MAX_SEQ_LEN: f64 = 4096.0;
/// μ at `BASE_SEQ_LEN` tokens (`base_shift`).
pub const BASE_SHIFT: f64 = 0.5;
/// μ at `MAX_SEQ_LEN` tokens (`max_shift`).
pub const MAX_SHIFT: f64 = 1.15;

/// Which of FLUX.1's two schedules.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// FLUX.1-dev: shifted by μ(image tokens) (`use_dynamic_shifting`).
    Dev,
    /// FLUX.1-schnell: `linspace(1, 1/N, N)` as is (shift 1).
    Schnell,
}

impl Schedule {
    /// The schedule of a model: dev's for models with a guidance embedding, schnell's otherwise
    /// (FLUX.1-dev is the guidance-distilled one; schnell and models trained on plain rectified
    /// flow, such as the toy in `shared/toy`, take no guidance and no shift).
    pub fn for_model(guidance: bool) -> Self {
        if guidance { Self::Dev } else { Self::Schnell }
    }

    /// The time shift μ for `image_tokens`, or `None` for an unshifted schedule.
    pub fn mu(self, image_tokens: usize) -> Option<f64> {
        match self {
            Self::Dev => Some(mu(image_tokens)),
            Self::Schnell => None,
        }
    }

    /// The `steps + 1` sigmas of a run, from 1 down to 0: `sigmas[k]` is the noise level (and the
    /// `timestep` input) of step k, `sigmas[steps] = 0` the clean end.
    pub fn sigmas(self, steps: usize, image_tokens: usize) -> Vec<f32> {
        let mu = self.mu(image_tokens);
        let mut sigmas: Vec<f32> = (0..steps)
            .map(|k| {
                // np.linspace(1, 1/N, N) in f64, then cast to f32 as the scheduler does.
                let s = match steps {
                    1 => 1.0,
                    n => 1.0 + (1.0 / n as f64 - 1.0) * k as f64 / (n - 1) as f64,
                } as f32;
                match mu {
                    Some(mu) => time_shift(mu, f64::from(s)) as f32,
                    None => s,
                }
            })
            .collect();
        sigmas.push(0.0);
        sigmas
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Dev => "FLUX.1-dev (time-shifted)",
            Self::Schnell => "FLUX.1-schnell (unshifted)",
        })
    }
}

impl std::str::FromStr for Schedule {
    type Err = String;

    /// `dev` or `schnell` (for a command-line flag).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "dev" => Ok(Self::Dev),
            "schnell" => Ok(Self::Schnell),
            other => Err(format!(
                "unknown schedule `{other}`: use `dev` (time-shifted) or `schnell` (unshifted)"
            )),
        }
    }
}

/// μ, linear in the image token count through (256, 0.5) and (4096, 1.15), not clamped
/// (diffusers' `calculate_shift`: a 64-token image gets μ = 0.4675).
pub fn mu(image_tokens: usize) -> f64 {
    let m = (MAX_SHIFT - BASE_SHIFT) / (MAX_SEQ_LEN - BASE_SEQ_LEN);
    let b = BASE_SHIFT - m * BASE_SEQ_LEN;
    image_tokens as f64 * m + b
}

/// `e^μ / (e^μ + (1/σ − 1))`: the scheduler's exponential time shift with exponent 1.
pub fn time_shift(mu: f64, sigma: f64) -> f64 {
    let e = mu.exp();
    e / (e + (1.0 / sigma - 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mu_is_linear_through_the_two_anchors() {
        assert!((mu(256) - 0.5).abs() < 1e-12);
        assert!((mu(4096) - 1.15).abs() < 1e-12);
        assert!(mu(64) < 0.5, "not clamped below the base");
    }

    #[test]
    fn schedules_end_at_zero_and_start_at_one() {
        for schedule in [Schedule::Dev, Schedule::Schnell] {
            for steps in [1, 4, 28] {
                let s = schedule.sigmas(steps, 4096);
                assert_eq!(s.len(), steps + 1);
                assert_eq!((s[0], s[steps]), (1.0, 0.0));
                assert!(s.windows(2).all(|w| w[1] < w[0]), "{s:?}");
            }
        }
    }
}
