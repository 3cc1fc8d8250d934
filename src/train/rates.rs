//! The sandwich optimizer: Adam with a learning rate per trainable, scaled by its fan-in so that
//! one `--st-lr` moves a matrix's output about as far at every width, RAdam's rectification in
//! place of a warm-up, and no weight decay.
//!
//! Adam moves every entry of a variable by about its learning rate each step, whatever the
//! gradient's size. A matrix `[out, in]` whose update lines up with its input (as it does,
//! since the gradient is built from that input) then changes each output by about
//! `rate · in · |x|`: one rate moves FLUX.1's 3072-wide fitted `W` 48 times as far as the toy's
//! 64-wide one. Dividing the rate by the fan-in (μP's rule for Adam on hidden matrices) makes
//! that change independent of the width. LoRA's down matrix `A [rank, in]` has fan-in `in`, its
//! up matrix `B [out, rank]` the rank; an adapter's rates are also divided by its `alpha/rank`,
//! which scales the update it adds. The fitted bias `b` is the column of the fit `[W b]` that
//! reads the constant 1 (DESIGN.md §5), so it takes `W`'s rate (a vector's rate is divided by
//! its length, the fan-in of the matrix it belongs to).
//!
//! Adam's first steps divide by a second moment estimated from one or two mini-batches, so
//! each entry moves by its full rate in the direction of one noisy gradient's sign: on the toy
//! five such steps raised the exit loss even at a quarter of the rate. RAdam (Liu et al., "On
//! the Variance of the Adaptive Learning Rate and Beyond", 2020) multiplies the step by the
//! factor `r_t` that makes the adaptive rate's variance that of a well-estimated one, and takes
//! no step while it is undefined (`ρ_t ≤ 4`, the first 4 steps at β₂ = 0.99). With β₂ = 0.99
//! the factor reaches 0.5 at step 60 and 0.98 at step 500. Weight decay would pull the fitted
//! `W` and `b` toward "block removed" and the adapters toward nothing; no measurement asked for
//! it. The measurements behind the defaults are in BENCHMARKS.md ("Sandwich training at any
//! width").

use super::StOptions;
use crate::error::Result;
use crate::runtime::candle::{Param, ParamKind, Trainables};
use candle_core::{Tensor, Var};

/// Adam's decay of its first moment (the usual value).
const BETA1: f64 = 0.9;
/// Adam's decay of its second moment: 0.99 rather than the usual 0.999, so that the
/// rectification (which lasts about `2/(1 − β₂)` steps) is over within a few hundred steps.
const BETA2: f64 = 0.99;
const EPSILON: f64 = 1e-8;

/// Rectified Adam over the trainables of one sandwich, each variable at its own rate.
pub struct SandwichAdam {
    moments: Vec<Moments>,
    /// Steps taken so far.
    step: usize,
}

/// One variable, its full rate, and Adam's running moments of its gradient.
struct Moments {
    var: Var,
    rate: f64,
    first: Tensor,
    second: Tensor,
}

impl SandwichAdam {
    /// Adam over `params` (a lowered sandwich's variables, made from `trainables`) at
    /// `options.lr` scaled per variable.
    pub fn new(params: &[Param], trainables: &Trainables, options: &StOptions) -> Result<Self> {
        let moments = params
            .iter()
            .map(|p| {
                let zeros = p.var.as_tensor().zeros_like().map_err(candle_error)?;
                Ok(Moments {
                    var: p.var.clone(),
                    rate: rate(p, trainables, options.lr),
                    first: zeros.clone(),
                    second: zeros,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { moments, step: 0 })
    }

    /// The factor the next step's rates are multiplied by: RAdam's `r_t`, 0 while the
    /// adaptive rate's variance is undefined.
    pub fn rectification(&self) -> f64 {
        rectification(self.step + 1)
    }

    /// One step down the gradient of `loss`.
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<()> {
        let grads = loss.backward().map_err(candle_error)?;
        let factor = self.rectification();
        self.step += 1;
        let t = self.step as i32;
        let (first_bias, second_bias) = (1.0 - BETA1.powi(t), 1.0 - BETA2.powi(t));
        for m in &mut self.moments {
            let Some(grad) = grads.get(m.var.as_tensor()) else {
                continue;
            };
            let mut step = || -> candle_core::Result<()> {
                m.first = ((&m.first * BETA1)? + (grad * (1.0 - BETA1))?)?;
                m.second = ((&m.second * BETA2)? + (grad.sqr()? * (1.0 - BETA2))?)?;
                if factor > 0.0 {
                    let mean = (&m.first / first_bias)?;
                    let scale = ((&m.second / second_bias)?.sqrt()? + EPSILON)?;
                    let update = ((mean / scale)? * (m.rate * factor))?;
                    m.var.set(&m.var.as_tensor().sub(&update)?)?;
                }
                Ok(())
            };
            step().map_err(candle_error)?;
        }
        Ok(())
    }
}

/// RAdam's rectification at step `t` (from 1): with `ρ∞ = 2/(1 − β₂) − 1` and
/// `ρ_t = ρ∞ − 2tβ₂ᵗ/(1 − β₂ᵗ)`, `r_t = √((ρ_t − 4)(ρ_t − 2)ρ∞ / ((ρ∞ − 4)(ρ∞ − 2)ρ_t))` where
/// `ρ_t > 4`, else 0.
fn rectification(t: usize) -> f64 {
    let decay = BETA2.powi(t as i32);
    let rho_max = 2.0 / (1.0 - BETA2) - 1.0;
    let rho = rho_max - 2.0 * t as f64 * decay / (1.0 - decay);
    if rho <= 4.0 {
        return 0.0;
    }
    ((rho - 4.0) * (rho - 2.0) * rho_max / ((rho_max - 4.0) * (rho_max - 2.0) * rho)).sqrt()
}

/// The first step that moves the trainables (5 at β₂ = 0.99).
pub fn first_step() -> usize {
    (1..).find(|&t| rectification(t) > 0.0).unwrap_or(1)
}

fn candle_error(e: candle_core::Error) -> crate::error::Error {
    crate::runtime::candle::candle_error("the sandwich optimizer's step", e)
}

/// The full rate of `param`: `lr` over its fan-in (a matrix's columns, a vector's length),
/// and over its adapter's `alpha/rank`.
fn rate(param: &Param, trainables: &Trainables, lr: f64) -> f64 {
    let fan_in = match param.var.dims() {
        [_, columns] => *columns,
        [len] => *len,
        _ => 1,
    };
    let scale = match &param.kind {
        ParamKind::LoraDown { weight } | ParamKind::LoraUp { weight } => trainables
            .lora
            .get(weight)
            .map_or(1.0, |s| f64::from(s.alpha) / s.rank as f64),
        ParamKind::Full { .. } => 1.0,
    };
    lr / (fan_in.max(1) as f64 * scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::candle::LoraShape;
    use candle_core::{DType, Device, Var};

    fn param(kind: ParamKind, shape: &[usize]) -> Param {
        Param {
            name: "p".into(),
            kind,
            var: Var::zeros(shape, DType::F32, &Device::Cpu).unwrap(),
        }
    }

    /// The rates the module's doc promises, for a 3072-wide fitted node and an adapter of rank
    /// 16 with alpha 32 on a `[9216, 3072]` weight.
    #[test]
    fn rates_divide_by_fan_in_and_the_adapter_scale() {
        let mut trainables = Trainables::default();
        trainables.lora.insert(
            "w".into(),
            LoraShape {
                rank: 16,
                alpha: 32.0,
            },
        );
        let full = || ParamKind::Full {
            weight: "fit".into(),
        };
        let down = ParamKind::LoraDown { weight: "w".into() };
        let up = ParamKind::LoraUp { weight: "w".into() };
        let lr = 0.064;
        let cases = [
            (param(full(), &[3072, 3072]), 0.064 / 3072.0),
            (param(full(), &[3072]), 0.064 / 3072.0),
            (param(down, &[16, 3072]), 0.064 / 3072.0 / 2.0),
            (param(up, &[9216, 16]), 0.064 / 16.0 / 2.0),
        ];
        for (p, expected) in cases {
            let got = rate(&p, &trainables, lr);
            assert!((got - expected).abs() < 1e-15, "{:?}: {got}", p.kind);
        }
    }

    /// RAdam's factor at β₂ = 0.99, as the paper's formula gives it (worked out by hand with
    /// Python's `math`, not with this code): no step for the first 4, then 0.0545 at step 5,
    /// 0.155 at 10, 0.499 at 60, 0.983 at 500.
    #[test]
    fn rectification_follows_radam() {
        for t in 1..=4 {
            assert_eq!(rectification(t), 0.0, "step {t}");
        }
        assert_eq!(first_step(), 5);
        let cases = [
            (5, 0.054_471_044),
            (6, 0.081_679_196),
            (10, 0.155_165_257),
            (60, 0.499_459_837),
            (500, 0.982_723_348),
        ];
        for (t, expected) in cases {
            let got = rectification(t);
            assert!((got - expected).abs() < 1e-8, "step {t}: {got}");
        }
    }

    /// One step of the optimizer on `loss = Σ (w − 1)²` from `w = 0` after the rectification's
    /// silent steps moves every entry by the rate times `r_5` (Adam's first steps are
    /// normalised: the gradient's sign, whatever its size).
    #[test]
    fn the_first_update_is_the_rate_times_the_rectification() {
        let var = Var::zeros(&[2, 4], DType::F32, &Device::Cpu).unwrap();
        let params = [Param {
            name: "fit".into(),
            kind: ParamKind::Full {
                weight: "fit".into(),
            },
            var: var.clone(),
        }];
        let options = StOptions {
            lr: 0.4,
            ..StOptions::default()
        };
        let mut adam = SandwichAdam::new(&params, &Trainables::default(), &options).unwrap();
        for _ in 0..5 {
            let loss = (var.as_tensor() - 1.0)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap();
            adam.backward_step(&loss).unwrap();
        }
        // Rate 0.4 / fan-in 4 = 0.1; gradients all equal, so m̂/√v̂ = 1.
        let expected = 0.1 * 0.054_471_044;
        for v in var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
        {
            assert!((f64::from(v) - expected).abs() < 1e-7, "{v}");
        }
    }
}
