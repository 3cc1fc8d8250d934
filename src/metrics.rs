//! The f64 metrics that compare an output with its reference: relative L2 error, cosine
//! similarity, the median of timings, and byte counts for people to read. One definition each, so that a fit, a verification
//! and a benchmark agree on what "close" means.

/// Relative L2 error `||a - b|| / ||b||` in f64, where `b` is the reference (f32 or f64). 0 when
/// both are all-zero, infinite when only the reference is, NaN on a length mismatch (so that
/// `err < tol` checks fail).
pub fn relative_l2<B: Copy + Into<f64>>(a: &[f32], b: &[B]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let y: f64 = y.into();
        diff += (f64::from(x) - y).powi(2);
        norm += y * y;
    }
    relative_l2_of_sums(diff, norm)
}

/// The relative L2 error from its two sums, `Σ(a − b)²` and `Σb²`, accumulated elsewhere (over
/// chunks of samples, say). 0 when they agree exactly; infinite for a zero reference.
pub fn relative_l2_of_sums(diff: f64, norm: f64) -> f64 {
    match (diff == 0.0, norm == 0.0) {
        (true, _) => 0.0,
        (false, true) => f64::INFINITY,
        (false, false) => (diff / norm).sqrt(),
    }
}

/// Cosine similarity in f64 (symmetric). NaN on a length mismatch.
///
/// On zero input: 1 when both are all-zero, 0 when only one is. Two zero vectors are the same
/// vector, so a metric of "how alike" must call them alike: a block that maps a zero token to
/// zero changed nothing, and a model whose output and reference are both zero agrees with it.
/// A zero vector against a non-zero one shares no direction with it, hence 0.
pub fn cosine<B: Copy + Into<f64>>(a: &[f32], b: &[B]) -> f64 {
    if a.len() != b.len() {
        return f64::NAN;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y): (f64, f64) = (x.into(), y.into());
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    match (na == 0.0, nb == 0.0) {
        (true, true) => 1.0,
        // Each norm on its own: their product can overflow where the quotient would not.
        (false, false) => dot / (na.sqrt() * nb.sqrt()),
        _ => 0.0,
    }
}

/// The median of `values` (the mean of the middle two for an even count), NaN when empty.
/// NaNs sort last (`total_cmp`), so a few failed measurements do not poison the result.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// `1 sample`, `3 samples`.
pub fn count(n: usize, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        n => format!("{n} {noun}s"),
    }
}

/// `1.50 GiB`, `800.0 MiB`, `12.0 KiB`, `100 B`.
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= (1u64 << 30) as f64 => format!("{:.2} GiB", n / (1u64 << 30) as f64),
        n if n >= (1u64 << 20) as f64 => format!("{:.1} MiB", n / (1u64 << 20) as f64),
        n if n >= 1024.0 => format!("{:.1} KiB", n / 1024.0),
        n => format!("{n} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_l2_edges() {
        assert_eq!(relative_l2(&[1.0, 2.0], &[1.0f64, 2.0]), 0.0);
        assert!((relative_l2(&[0.0, 0.0], &[3.0f32, 4.0]) - 1.0).abs() < 1e-12);
        assert_eq!(relative_l2(&[1.0], &[0.0f32]), f64::INFINITY);
        assert!(relative_l2(&[1.0], &[1.0f64, 2.0]).is_nan());
    }

    #[test]
    fn cosine_edges() {
        assert!((cosine(&[1.0, 0.0], &[2.0f64, 0.0]) - 1.0).abs() < 1e-12);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0f32, 1.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[0.0f32, 0.0]), 1.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0f32, 0.0]), 0.0);
        assert_eq!(cosine(&[1.0, 0.0], &[0.0f32, 0.0]), 0.0);
        assert!(cosine(&[1.0], &[1.0f32, 0.0]).is_nan());
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }
}
