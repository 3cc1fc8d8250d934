//! How fast the BRLL least-squares fit runs at FLUX-dev width (d = 3072): normal-equation
//! accumulation throughput (rows/s) and the Cholesky solve, on random data.
//!
//!     cargo run --release --example bench_lstsq [-- ROWS_PER_CALL CALLS]

use fastflux::fit::lstsq::{DEFAULT_RIDGE, NormalEquations};
use fastflux::rng::Rng;
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (d, rows, calls) = (
        3072,
        *args.first().unwrap_or(&4096),
        *args.get(1).unwrap_or(&3),
    );
    // Any data will do: the cost does not depend on the values.
    let mut rng = Rng::new(11, 0);
    let mut uniform = move || rng.uniform() as f32 - 0.5;
    let x: Vec<f32> = (0..rows * d).map(|_| uniform()).collect();
    let r: Vec<f32> = (0..rows * d).map(|_| uniform()).collect();
    let mut equations = NormalEquations::new(d, 0, d);
    let start = Instant::now();
    for _ in 0..calls {
        equations.accumulate(&x, &[], &r, rows);
    }
    let accumulate = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let fit = equations
        .solve(DEFAULT_RIDGE)
        .expect("random data is well conditioned");
    let solve = start.elapsed().as_secs_f64();
    println!(
        "d = {d}: accumulate {} rows in {accumulate:.2} s ({:.0} rows/s); solve {solve:.2} s; fit error {:.4}",
        rows * calls,
        (rows * calls) as f64 / accumulate,
        fit.relative_error
    );
}
