//! Streaming least squares for a linear replacement `r ≈ Θᵀ z`, `z = [x; c; 1]`: the normal
//! equations accumulated in f64 over calibration rows, a relative ridge, a Cholesky solve, and the
//! fit's relative error read off the accumulated statistics without a second pass (DESIGN.md §5).

use faer::linalg::matmul::matmul;
use faer::linalg::matmul::triangular::{self, BlockStructure};
use faer::linalg::solvers::{Llt, LltError};
use faer::prelude::*;
use faer::{Accum, Side};

use crate::error::FitError;

/// The default relative ridge. λ = `DEFAULT_RIDGE` · mean(diag(G)) over the x and c entries, so
/// the penalty scales with the data: multiplying the activations by any factor, or feeding more
/// rows, leaves the fitted map unchanged (scale-invariant). It moves a well-posed fit by at most
/// `ridge · κ(G)` relative (tests/lstsq.rs derives the bound), negligible next to any fit error
/// worth ranking unless G is nearly singular, and that is exactly the case it exists for: it
/// keeps `G + λD` positive definite when there are fewer tokens than features, or features are
/// collinear or constant, where plain Cholesky breaks down. 1e-6 sits well above f64 rounding of
/// G (~1e-16 · n relative) and well below the data's own scale. The bias entry is not penalized:
/// shrinking it would pull the fit towards a zero-mean residual for no reason.
pub const DEFAULT_RIDGE: f64 = 1e-6;

/// Rows converted to f64 and multiplied at a time: large enough that each rank-k update of G is
/// compute-bound (k = 512), small enough that the scratch stays ~25 MB at d = 3072.
const BLOCK_ROWS: usize = 512;

/// Streaming normal equations of `r ≈ Θᵀ z`, `z = [x; c; 1]` (x: the block input, `d_x` wide;
/// c: optional conditioning features, `d_c` wide, 0 for the plain fit; r = y − x, `d_out` wide).
#[derive(Clone)]
pub struct NormalEquations {
    d_x: usize,
    d_c: usize,
    d_out: usize,
    /// G = Σ z zᵀ, `n × n` with n = d_x + d_c + 1. Only the lower triangle is accumulated (it is
    /// symmetric, and Cholesky reads only that half): this saves a quarter of the work.
    gram: Mat<f64>,
    /// C = Σ z rᵀ, `n × d_out`.
    cross: Mat<f64>,
    /// Σ ‖r‖².
    residual_energy: f64,
    rows: usize,
}

/// A fitted linear replacement: `r ≈ W x + U c + b`.
#[derive(Clone, Debug)]
pub struct LinearFit {
    /// `d_out × d_x`, row-major: `[out, in]` like a Linear weight.
    pub weight: Vec<f32>,
    /// `d_out × d_c`, row-major (empty when d_c = 0).
    pub cond_weight: Vec<f32>,
    /// `d_out`.
    pub bias: Vec<f32>,
    /// Σ‖r − Θᵀz‖² / Σ‖r‖² of the f32 weights above over the accumulated rows; 0 when r ≡ 0.
    pub relative_error: f64,
    pub rows: usize,
}

/// Where a row's conditioning comes from.
#[derive(Clone, Copy)]
enum Condition<'a> {
    PerRow(&'a [f32]),
    Shared(&'a [f32]),
}

impl NormalEquations {
    pub fn new(d_x: usize, d_c: usize, d_out: usize) -> Self {
        let n = d_x + d_c + 1;
        Self {
            d_x,
            d_c,
            d_out,
            gram: Mat::zeros(n, n),
            cross: Mat::zeros(n, d_out),
            residual_energy: 0.0,
            rows: 0,
        }
    }

    pub fn d_x(&self) -> usize {
        self.d_x
    }
    pub fn d_c(&self) -> usize {
        self.d_c
    }
    pub fn d_out(&self) -> usize {
        self.d_out
    }
    /// Rows accumulated so far.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Σ‖r‖² over the rows accumulated so far.
    pub fn residual_energy(&self) -> f64 {
        self.residual_energy
    }

    /// G = Σ z zᵀ as a full symmetric matrix (the upper half mirrored from the accumulated lower).
    pub fn gram(&self) -> Mat<f64> {
        let n = self.gram.nrows();
        Mat::from_fn(n, n, |i, j| {
            if i >= j {
                self.gram[(i, j)]
            } else {
                self.gram[(j, i)]
            }
        })
    }

    /// C = Σ z rᵀ, `(d_x + d_c + 1) × d_out`.
    pub fn cross(&self) -> MatRef<'_, f64> {
        self.cross.as_ref()
    }

    /// Adds `rows` samples: x `rows×d_x`, r `rows×d_out` (row-major f32), and c `rows×d_c`
    /// (row-major f32, may be empty when d_c = 0). Accumulates in f64.
    pub fn accumulate(&mut self, x: &[f32], c: &[f32], r: &[f32], rows: usize) {
        assert_eq!(c.len(), rows * self.d_c, "c must be rows × d_c");
        self.accumulate_impl(x, Condition::PerRow(c), r, rows);
    }

    /// Like [`Self::accumulate`], with one conditioning vector `c` (`d_c` long) shared by all
    /// rows, as for the tokens of one sample.
    pub fn accumulate_with_shared_condition(
        &mut self,
        x: &[f32],
        c: &[f32],
        r: &[f32],
        rows: usize,
    ) {
        assert_eq!(c.len(), self.d_c, "shared c must be d_c long");
        self.accumulate_impl(x, Condition::Shared(c), r, rows);
    }

    fn accumulate_impl(&mut self, x: &[f32], cond: Condition<'_>, r: &[f32], rows: usize) {
        let (d_x, d_c, d_out) = (self.d_x, self.d_c, self.d_out);
        assert_eq!(x.len(), rows * d_x, "x must be rows × d_x");
        assert_eq!(r.len(), rows * d_out, "r must be rows × d_out");
        let n = d_x + d_c + 1;
        let par = faer::get_global_parallelism();
        // Column j of the scratch is row j's [x; c; 1; r] in f64: the row-major inputs copy in
        // contiguously, and Zᵀ (n × k) and Rᵀ (d_out × k) are its top and bottom rows.
        let mut scratch = Mat::<f64>::zeros(n + d_out, BLOCK_ROWS.min(rows));
        for start in (0..rows).step_by(BLOCK_ROWS) {
            let k = BLOCK_ROWS.min(rows - start);
            for j in 0..k {
                let row = start + j;
                let col = scratch.col_as_slice_mut(j);
                widen(&mut col[..d_x], &x[row * d_x..(row + 1) * d_x]);
                let c_row = match cond {
                    Condition::PerRow(c) => &c[row * d_c..(row + 1) * d_c],
                    Condition::Shared(c) => c,
                };
                widen(&mut col[d_x..d_x + d_c], c_row);
                col[n - 1] = 1.0;
                widen(&mut col[n..], &r[row * d_out..(row + 1) * d_out]);
                self.residual_energy += col[n..].iter().map(|v| v * v).sum::<f64>();
            }
            let block = scratch.as_ref().subcols(0, k);
            let zt = block.subrows(0, n);
            let rt = block.subrows(n, d_out);
            triangular::matmul(
                self.gram.as_mut(),
                BlockStructure::TriangularLower,
                Accum::Add,
                zt,
                BlockStructure::Rectangular,
                zt.transpose(),
                BlockStructure::Rectangular,
                1.0,
                par,
            );
            matmul(
                self.cross.as_mut(),
                Accum::Add,
                zt,
                rt.transpose(),
                1.0,
                par,
            );
        }
        self.rows += rows;
    }

    /// Adds another accumulator's rows to this one (e.g. one filled on another thread).
    pub fn merge(&mut self, other: &Self) {
        assert_eq!(
            (self.d_x, self.d_c, self.d_out),
            (other.d_x, other.d_c, other.d_out),
            "merging normal equations of different shapes"
        );
        self.gram += &other.gram;
        self.cross += &other.cross;
        self.residual_energy += other.residual_energy;
        self.rows += other.rows;
    }

    /// Solves (G + λ D) Θ = C by Cholesky, λ = ridge · mean(diag(G)) over the x and c entries
    /// (a relative ridge, see [`DEFAULT_RIDGE`]); D is the identity except 0 on the bias entry.
    pub fn solve(&self, ridge: f64) -> Result<LinearFit, FitError> {
        let theta = self.solve_f64(ridge)?;
        Ok(self.to_linear_fit(theta.as_ref()))
    }

    /// Θ in f64, `(d_x + d_c + 1) × d_out`, rows ordered as z = [x; c; 1]. [`Self::solve`] is this
    /// rounded to f32 and split into weight, cond_weight and bias.
    pub fn solve_f64(&self, ridge: f64) -> Result<Mat<f64>, FitError> {
        if self.rows == 0 {
            return Err(FitError::NoRows);
        }
        if !(ridge.is_finite() && ridge >= 0.0) {
            return Err(FitError::InvalidRidge(ridge));
        }
        let n = self.gram.nrows();
        let finite = self.residual_energy.is_finite()
            && (0..n).all(|j| (j..n).all(|i| self.gram[(i, j)].is_finite()))
            && (0..self.d_out).all(|j| self.cross.col_as_slice(j).iter().all(|v| v.is_finite()));
        if !finite {
            return Err(FitError::NonFinite { rows: self.rows });
        }
        // r ≡ 0 ("zero gates"): Θ = 0 minimizes the penalized objective for any ridge, even when
        // G is singular. Answer it exactly instead of relying on a factorization.
        if self.residual_energy == 0.0 {
            return Ok(Mat::zeros(n, self.d_out));
        }
        let features = n - 1;
        let mut a = self.gram.clone();
        if features > 0 {
            let mean_diag = (0..features).map(|i| a[(i, i)]).sum::<f64>() / features as f64;
            let lambda = ridge * mean_diag;
            for i in 0..features {
                a[(i, i)] += lambda;
            }
        }
        let llt = Llt::new(a.as_ref(), Side::Lower).map_err(|e| {
            let LltError::NonPositivePivot { index } = e;
            FitError::NotPositiveDefinite {
                pivot: index,
                order: n,
                ridge,
                rows: self.rows,
                features,
            }
        })?;
        Ok(llt.solve(self.cross.as_ref()))
    }

    /// Σ‖r − Θᵀz‖² / Σ‖r‖² from the accumulated statistics alone:
    /// (Σ‖r‖² − 2 tr(ΘᵀC) + tr(ΘᵀGΘ)) / Σ‖r‖², clamped at ≥ 0 (rounding can push a near-exact
    /// fit slightly negative); 0 when Σ‖r‖² = 0.
    pub fn relative_error(&self, theta: MatRef<'_, f64>) -> f64 {
        assert_eq!((theta.nrows(), theta.ncols()), self.cross.shape());
        if self.residual_energy == 0.0 {
            return 0.0;
        }
        let par = faer::get_global_parallelism();
        // GΘ with G symmetric and only its lower half stored: (L + Lᵀ − diag) Θ, in two
        // triangular products (the second excludes the diagonal).
        let mut g_theta = Mat::<f64>::zeros(theta.nrows(), theta.ncols());
        let lower = self.gram.as_ref();
        triangular::matmul(
            g_theta.as_mut(),
            BlockStructure::Rectangular,
            Accum::Replace,
            lower,
            BlockStructure::TriangularLower,
            theta,
            BlockStructure::Rectangular,
            1.0,
            par,
        );
        triangular::matmul(
            g_theta.as_mut(),
            BlockStructure::Rectangular,
            Accum::Add,
            lower.transpose(),
            BlockStructure::StrictTriangularUpper,
            theta,
            BlockStructure::Rectangular,
            1.0,
            par,
        );
        let (mut t_c, mut t_g) = (0.0, 0.0);
        for j in 0..theta.ncols() {
            for i in 0..theta.nrows() {
                t_c += theta[(i, j)] * self.cross[(i, j)];
                t_g += theta[(i, j)] * g_theta[(i, j)];
            }
        }
        let sse = self.residual_energy - 2.0 * t_c + t_g;
        (sse / self.residual_energy).max(0.0)
    }

    /// Rounds Θ to the f32 weights the model will carry and reports the error of those weights.
    fn to_linear_fit(&self, theta: MatRef<'_, f64>) -> LinearFit {
        let (d_x, d_c, d_out) = (self.d_x, self.d_c, self.d_out);
        let rounded = Mat::from_fn(theta.nrows(), theta.ncols(), |i, j| {
            theta[(i, j)] as f32 as f64
        });
        let relative_error = self.relative_error(rounded.as_ref());
        // Θ is [in, out] column-major, so column o is output o's weight row: read it off whole.
        let mut weight = Vec::with_capacity(d_out * d_x);
        let mut cond_weight = Vec::with_capacity(d_out * d_c);
        let mut bias = Vec::with_capacity(d_out);
        for o in 0..d_out {
            let col = rounded.col_as_slice(o);
            weight.extend(col[..d_x].iter().map(|&v| v as f32));
            cond_weight.extend(col[d_x..d_x + d_c].iter().map(|&v| v as f32));
            bias.push(col[d_x + d_c] as f32);
        }
        LinearFit {
            weight,
            cond_weight,
            bias,
            relative_error,
            rows: self.rows,
        }
    }
}

impl std::fmt::Debug for NormalEquations {
    // The matrices run to tens of millions of entries: show the shape, not the contents.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NormalEquations")
            .field("d_x", &self.d_x)
            .field("d_c", &self.d_c)
            .field("d_out", &self.d_out)
            .field("rows", &self.rows)
            .field("residual_energy", &self.residual_energy)
            .finish()
    }
}

fn widen(dst: &mut [f64], src: &[f32]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = s as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_by_hand() {
        // Two rows, d_x = 2, d_c = 1, d_out = 1: z = [x; c; 1]. Small integers, so exact.
        let mut ne = NormalEquations::new(2, 1, 1);
        ne.accumulate(&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0], &[7.0, 8.0], 2);
        // z₁ = [1 2 5 1], z₂ = [3 4 6 1]; G = z₁z₁ᵀ + z₂z₂ᵀ, C = 7 z₁ + 8 z₂.
        let g = ne.gram();
        let expect = [
            [10.0, 14.0, 23.0, 4.0],
            [14.0, 20.0, 34.0, 6.0],
            [23.0, 34.0, 61.0, 11.0],
            [4.0, 6.0, 11.0, 2.0],
        ];
        for (i, row) in expect.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                assert_eq!(g[(i, j)], v, "G[{i},{j}]");
            }
        }
        let c: Vec<f64> = (0..4).map(|i| ne.cross()[(i, 0)]).collect();
        assert_eq!(c, [31.0, 46.0, 83.0, 15.0]);
        assert_eq!((ne.residual_energy(), ne.rows()), (113.0, 2));
    }
}
