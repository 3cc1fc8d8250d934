//! The streaming least-squares fit (`fastflux::fit::lstsq`) against an independent QR solution,
//! a second-pass error, planted maps (plain and conditioned), zero residuals, chunking, errors.

use faer::prelude::*;
use faer::{Mat, MatRef, Side};
use fastflux::error::FitError;
use fastflux::fit::lstsq::{DEFAULT_RIDGE, LinearFit, NormalEquations};
use fastflux::rng::Rng;

/// `n` draws of N(offset, scale²), as the f32 the accumulator sees.
fn normals(rng: &mut Rng, n: usize, scale: f64, offset: f64) -> Vec<f32> {
    (0..n)
        .map(|_| (offset + scale * rng.normal()) as f32)
        .collect()
}

/// A planted problem: x (rows × d_x), c (rows × d_c, one vector per sample of `tokens` rows),
/// r = W x + U c + b + noise, all stored as the f32 the accumulator sees.
struct Problem {
    d_x: usize,
    d_c: usize,
    d_out: usize,
    rows: usize,
    x: Vec<f32>,
    c: Vec<f32>,
    r: Vec<f32>,
    w: Vec<f64>,
    u: Vec<f64>,
    b: Vec<f64>,
}

fn planted(
    seed: u64,
    shape: (usize, usize, usize),
    samples: usize,
    tokens: usize,
    noise: f64,
) -> Problem {
    let (d_x, d_c, d_out) = shape;
    let rows = samples * tokens;
    let mut rng = Rng::new(seed, 0);
    // Non-zero feature means make the bias column matter and G less trivially conditioned.
    let x = normals(&mut rng, rows * d_x, 1.0, 0.3);
    let per_sample = normals(&mut rng, samples * d_c, 1.0, 0.0);
    let c: Vec<f32> = (0..rows)
        .flat_map(|row| per_sample[(row / tokens) * d_c..][..d_c].to_vec())
        .collect();
    let w: Vec<f64> = (0..d_out * d_x)
        .map(|_| rng.normal() / (d_x as f64).sqrt())
        .collect();
    let u: Vec<f64> = (0..d_out * d_c).map(|_| rng.normal()).collect();
    let b: Vec<f64> = (0..d_out).map(|_| rng.normal()).collect();
    let mut r = Vec::with_capacity(rows * d_out);
    for row in 0..rows {
        for o in 0..d_out {
            let wx: f64 = (0..d_x)
                .map(|i| w[o * d_x + i] * x[row * d_x + i] as f64)
                .sum();
            let uc: f64 = (0..d_c)
                .map(|j| u[o * d_c + j] * c[row * d_c + j] as f64)
                .sum();
            r.push((wx + uc + b[o] + noise * rng.normal()) as f32);
        }
    }
    Problem {
        d_x,
        d_c,
        d_out,
        rows,
        x,
        c,
        r,
        w,
        u,
        b,
    }
}

impl Problem {
    fn accumulate_chunks(&self, chunks: &[usize]) -> NormalEquations {
        assert_eq!(chunks.iter().sum::<usize>(), self.rows);
        let mut ne = NormalEquations::new(self.d_x, self.d_c, self.d_out);
        let mut start = 0;
        for &k in chunks {
            let (x, c, r) = (
                &self.x[start * self.d_x..(start + k) * self.d_x],
                &self.c[start * self.d_c..(start + k) * self.d_c],
                &self.r[start * self.d_out..(start + k) * self.d_out],
            );
            ne.accumulate(x, c, r, k);
            start += k;
        }
        ne
    }

    /// The stacked design matrix Z = [x c 1] (rows × n) and R, in f64.
    fn design(&self) -> (Mat<f64>, Mat<f64>) {
        let (d_x, d_c) = (self.d_x, self.d_c);
        let z = Mat::from_fn(self.rows, d_x + d_c + 1, |row, j| {
            if j < d_x {
                self.x[row * d_x + j] as f64
            } else if j < d_x + d_c {
                self.c[row * d_c + j - d_x] as f64
            } else {
                1.0
            }
        });
        let r = Mat::from_fn(self.rows, self.d_out, |row, o| {
            self.r[row * self.d_out + o] as f64
        });
        (z, r)
    }

    /// Σ‖r − W x − U c − b‖² / Σ‖r‖² of a fit, computed directly row by row.
    fn second_pass_error(&self, fit: &LinearFit) -> f64 {
        let (d_x, d_c, d_out) = (self.d_x, self.d_c, self.d_out);
        let (mut sse, mut energy) = (0.0, 0.0);
        for row in 0..self.rows {
            for o in 0..d_out {
                let wx: f64 = (0..d_x)
                    .map(|i| fit.weight[o * d_x + i] as f64 * self.x[row * d_x + i] as f64)
                    .sum();
                let uc: f64 = (0..d_c)
                    .map(|j| fit.cond_weight[o * d_c + j] as f64 * self.c[row * d_c + j] as f64)
                    .sum();
                let r = self.r[row * d_out + o] as f64;
                sse += (r - wx - uc - fit.bias[o] as f64).powi(2);
                energy += r * r;
            }
        }
        sse / energy
    }
}

/// max |a − b| / max |b|.
fn rel_diff(a: MatRef<'_, f64>, b: MatRef<'_, f64>) -> f64 {
    let mut num: f64 = 0.0;
    let mut den: f64 = 0.0;
    for j in 0..a.ncols() {
        for i in 0..a.nrows() {
            num = num.max((a[(i, j)] - b[(i, j)]).abs());
            den = den.max(b[(i, j)].abs());
        }
    }
    num / den
}

fn max_rel(a: &[f32], b: &[f64]) -> f64 {
    let num = a
        .iter()
        .zip(b)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    num / b.iter().map(|v| v.abs()).fold(0.0, f64::max)
}

#[test]
fn matches_qr_least_squares_without_ridge() {
    let p = planted(1, (24, 0, 16), 1, 2000, 0.1);
    let (z, r) = p.design();
    // The tolerance rests on Z being well conditioned: make the premise part of the test.
    let s = z.singular_values().unwrap();
    let kappa_z = s[0] / s[s.len() - 1];
    assert!(kappa_z < 20.0, "κ(Z) = {kappa_z}");
    let qr = z.qr().solve_lstsq(&r);
    let theta = p
        .accumulate_chunks(&[300, 700, 1000])
        .solve_f64(0.0)
        .unwrap();
    // Normal equations in f64 have forward error ≲ n·ε·κ(Z)² ≈ 25 · 1.1e-16 · 400 ≈ 1e-12, QR
    // ≲ n·ε·κ(Z)² too (its residual term), so two correct solvers agree to ~1e-12; 1e-9 leaves a
    // wide margin for summation order yet catches any wrong entry (a transposed W, a lost chunk,
    // a misplaced bias are all O(1) differences).
    let d = rel_diff(theta.as_ref(), qr.as_ref());
    assert!(d < 1e-9, "normal equations vs QR: {d:e}");
    // The exported f32 weights are that solution rounded (ε_f32 ≈ 6e-8 relative).
    let fit = p.accumulate_chunks(&[2000]).solve(0.0).unwrap();
    let w_qr: Vec<f64> = (0..16)
        .flat_map(|o| (0..24).map(move |i| (o, i)))
        .map(|(o, i)| qr[(i, o)])
        .collect();
    let b_qr: Vec<f64> = (0..16).map(|o| qr[(24, o)]).collect();
    assert!(max_rel(&fit.weight, &w_qr) < 1e-6);
    assert!(max_rel(&fit.bias, &b_qr) < 1e-6);
}

#[test]
fn default_ridge_moves_the_solution_by_at_most_ridge_times_kappa() {
    let p = planted(2, (24, 0, 16), 1, 2000, 0.1);
    let ne = p.accumulate_chunks(&[2000]);
    let exact = ne.solve_f64(0.0).unwrap();
    let ridged = ne.solve_f64(DEFAULT_RIDGE).unwrap();
    // (G + λD)Θ_λ = C = GΘ_0  ⇒  Θ_λ − Θ_0 = −(G + λD)⁻¹ λ D Θ_0, and G + λD ⪰ G (D ⪰ 0), so
    // ‖Θ_λ − Θ_0‖_F ≤ λ/λ_min(G) · ‖Θ_0‖_F; λ = ridge · mean diag(G_xx) ≤ ridge · λ_max(G),
    // hence the relative change is ≤ ridge · κ(G). The slack covers rounding (~1e-13).
    let eig = ne.gram().self_adjoint_eigenvalues(Side::Lower).unwrap();
    let kappa_g = eig[eig.len() - 1] / eig[0];
    let change = (&ridged - &exact).norm_l2() / exact.norm_l2();
    let bound = DEFAULT_RIDGE * kappa_g;
    assert!(
        change <= bound * (1.0 + 1e-6) + 1e-12,
        "{change:e} > ridge · κ(G) = {bound:e}"
    );
    // ... and the ridge is really applied (far above the rounding level).
    assert!(change > 1e-10, "ridge had no effect: {change:e}");
}

#[test]
fn ridge_is_relative_so_the_fit_is_scale_invariant() {
    // Scaling x and r by s maps the penalized problem onto itself (W same, b scaled by s) only
    // if λ scales with G, i.e. the ridge is relative. s = 2⁻¹⁰ is exact in f32. A ridge of 1e-2
    // moves W by ~1e-2, so an absolute ridge would show up as an O(1e-2) difference.
    let p = planted(12, (10, 2, 6), 20, 30, 0.2);
    let mut q = planted(12, (10, 2, 6), 20, 30, 0.2);
    let s = 2f32.powi(-10);
    q.x.iter_mut()
        .chain(&mut q.c)
        .chain(&mut q.r)
        .for_each(|v| *v *= s);
    let a = p.accumulate_chunks(&[600]).solve_f64(1e-2).unwrap();
    let mut b = q.accumulate_chunks(&[600]).solve_f64(1e-2).unwrap();
    (0..6).for_each(|o| b[(12, o)] /= s as f64);
    let d = rel_diff(b.as_ref(), a.as_ref());
    assert!(d < 1e-10, "{d:e}");
}

#[test]
fn bias_is_not_penalized() {
    // A huge ridge kills W but leaves the bias free, so b → mean(r).
    let p = planted(3, (8, 0, 4), 1, 500, 0.1);
    let fit = p.accumulate_chunks(&[500]).solve(1e9).unwrap();
    let w_max = fit.weight.iter().map(|v| v.abs()).fold(0.0, f32::max);
    assert!(w_max < 1e-6, "W not shrunk: {w_max}");
    for o in 0..4 {
        let mean: f64 = (0..500).map(|row| p.r[row * 4 + o] as f64).sum::<f64>() / 500.0;
        assert!(
            (fit.bias[o] as f64 - mean).abs() < 1e-5,
            "b[{o}] = {} vs mean {mean}",
            fit.bias[o]
        );
    }
}

#[test]
fn error_formula_matches_second_pass() {
    // With conditioning, so the c part of Θ enters the formula too; error ≈ 0.1² / ‖r‖²-ish.
    let p = planted(4, (20, 5, 12), 25, 40, 0.3);
    let ne = p.accumulate_chunks(&[1000]);
    for ridge in [0.0, DEFAULT_RIDGE, 1e-2] {
        let fit = ne.solve(ridge).unwrap();
        let direct = p.second_pass_error(&fit);
        assert!(
            direct > 1e-3,
            "the test needs a visible error, got {direct:e}"
        );
        let d = (fit.relative_error - direct).abs() / direct;
        assert!(
            d < 1e-9,
            "ridge {ridge}: formula {} vs second pass {direct}: {d:e}",
            fit.relative_error
        );
    }
}

#[test]
fn zero_residual_gives_exact_zeros() {
    // Fewer rows than features, so G is singular: r ≡ 0 must still fit exactly, at any ridge.
    let mut p = planted(5, (16, 3, 8), 2, 4, 0.0);
    p.r.iter_mut().for_each(|v| *v = 0.0);
    let ne = p.accumulate_chunks(&[8]);
    for ridge in [0.0, DEFAULT_RIDGE] {
        let fit = ne.solve(ridge).unwrap();
        assert!(
            fit.weight
                .iter()
                .chain(&fit.cond_weight)
                .chain(&fit.bias)
                .all(|&v| v == 0.0)
        );
        assert_eq!(fit.relative_error, 0.0);
        assert_eq!(
            (fit.weight.len(), fit.cond_weight.len(), fit.bias.len()),
            (16 * 8, 3 * 8, 8)
        );
    }
    // Well-posed too (more rows than features): zeros, not merely small numbers.
    let mut p = planted(6, (16, 0, 8), 1, 600, 0.0);
    p.r.iter_mut().for_each(|v| *v = 0.0);
    let fit = p.accumulate_chunks(&[600]).solve(DEFAULT_RIDGE).unwrap();
    assert!(fit.weight.iter().chain(&fit.bias).all(|&v| v == 0.0));
    assert_eq!(fit.relative_error, 0.0);
}

#[test]
fn conditioned_fit_recovers_planted_map() {
    let (samples, tokens) = (40, 50);
    let p = planted(7, (12, 4, 8), samples, tokens, 0.0);
    // One sample at a time with its shared conditioning, as the calibration runner will.
    let mut ne = NormalEquations::new(12, 4, 8);
    for s in 0..samples {
        let rows = s * tokens..(s + 1) * tokens;
        ne.accumulate_with_shared_condition(
            &p.x[rows.start * 12..rows.end * 12],
            &p.c[rows.start * 4..rows.start * 4 + 4],
            &p.r[rows.start * 8..rows.end * 8],
            tokens,
        );
    }
    // Broadcasting equals spelling c out per row.
    let per_row = p.accumulate_chunks(&[samples * tokens]);
    assert!(rel_diff(ne.gram().as_ref(), per_row.gram().as_ref()) < 1e-12);
    assert!(rel_diff(ne.cross(), per_row.cross()) < 1e-12);
    // r is the planted map rounded to f32 (6e-8 relative noise): recovered to ~1e-6.
    let fit = ne.solve(0.0).unwrap();
    assert!(
        max_rel(&fit.weight, &p.w) < 1e-5,
        "W: {:e}",
        max_rel(&fit.weight, &p.w)
    );
    assert!(
        max_rel(&fit.cond_weight, &p.u) < 1e-5,
        "U: {:e}",
        max_rel(&fit.cond_weight, &p.u)
    );
    assert!(
        max_rel(&fit.bias, &p.b) < 1e-5,
        "b: {:e}",
        max_rel(&fit.bias, &p.b)
    );
    assert!(fit.relative_error < 1e-12);
}

#[test]
fn exact_linear_map_fits_to_rounding() {
    let p = planted(8, (32, 0, 32), 1, 1000, 0.0);
    let fit = p.accumulate_chunks(&[1000]).solve(0.0).unwrap();
    assert!(fit.relative_error < 1e-12, "{:e}", fit.relative_error);
    assert!(p.second_pass_error(&fit) < 1e-12);
    assert_eq!(fit.rows, 1000);
}

#[test]
fn chunking_and_merging_do_not_change_the_sums() {
    // 1500 rows: the single chunk spans three internal blocks of 512; the seven chunks do not
    // line up with them.
    let p = planted(9, (20, 3, 10), 30, 50, 0.2);
    let one = p.accumulate_chunks(&[1500]);
    let seven = p.accumulate_chunks(&[1, 511, 2, 600, 13, 250, 123]);
    assert!(rel_diff(seven.gram().as_ref(), one.gram().as_ref()) < 1e-12);
    assert!(rel_diff(seven.cross(), one.cross()) < 1e-12);
    assert!(
        (seven.residual_energy() - one.residual_energy()).abs() < 1e-12 * one.residual_energy()
    );
    assert_eq!(seven.rows(), 1500);

    let mut merged = p.accumulate_chunks(&[700, 0, 800]);
    let mut other = NormalEquations::new(20, 3, 10);
    other.accumulate(&[], &[], &[], 0);
    merged.merge(&other);
    assert!(rel_diff(merged.gram().as_ref(), one.gram().as_ref()) < 1e-12);
    assert_eq!(merged.rows(), 1500);
}

#[test]
fn errors_say_what_happened() {
    let ne = NormalEquations::new(4, 0, 2);
    assert!(matches!(ne.solve(DEFAULT_RIDGE), Err(FitError::NoRows)));

    // A feature that is always 0 makes G exactly singular: Cholesky fails without a ridge and
    // succeeds with one.
    let mut p = planted(10, (6, 0, 3), 1, 100, 0.1);
    (0..100).for_each(|row| p.x[row * 6 + 2] = 0.0);
    let ne = p.accumulate_chunks(&[100]);
    let err = ne.solve(0.0).unwrap_err();
    assert!(
        matches!(err, FitError::NotPositiveDefinite { pivot: 2, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("--ridge"), "{err}");
    let fit = ne.solve(DEFAULT_RIDGE).unwrap();
    assert!((0..3).all(|o| fit.weight[o * 6 + 2] == 0.0));

    assert!(matches!(ne.solve(-1.0), Err(FitError::InvalidRidge(_))));
    assert!(matches!(ne.solve(f64::NAN), Err(FitError::InvalidRidge(_))));

    p.x[7] = f32::NAN;
    let err = p
        .accumulate_chunks(&[100])
        .solve(DEFAULT_RIDGE)
        .unwrap_err();
    assert!(matches!(err, FitError::NonFinite { .. }), "{err:?}");
}
