//! The crate's one seeded random number generator: splitmix64 with independent streams, uniform
//! and normal draws that are bit-identical on every platform. Synthetic calibration inputs, test
//! data and benchmarks all draw from it.

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// splitmix64's output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// splitmix64, one independent stream per (seed, stream): streams start at hashed states.
/// Normals come from Box–Muller in Marsaglia's polar form (no sin/cos) with a logarithm
/// computed in plain IEEE arithmetic, so no platform libm enters the result: the same seed
/// gives the same bits on every machine.
pub struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64, stream: u64) -> Self {
        let state = mix(mix(seed) ^ mix(stream.wrapping_mul(GOLDEN_GAMMA) ^ 0x0123_4567));
        Self { state, spare: None }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix(self.state)
    }

    /// Uniform in the open interval (0, 1), on a grid of 2⁻⁵³.
    pub fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64)
    }

    /// Approximately standard normal, from one draw: the sum of its four 16-bit lanes
    /// (Irwin–Hall, n = 4), centred and scaled to unit variance. Bounded at ±3.46σ and several
    /// times cheaper than [`Rng::normal`]: for bulk test weights, where generation must keep
    /// up with the disk and outliers would only make a forward pass less representative.
    pub fn approx_normal(&mut self) -> f32 {
        let r = self.next_u64();
        let lanes = (r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48);
        // Each lane is uniform on 0..65536: mean 32767.5, variance ≈ 65536²/12.
        (lanes as f32 - 131_070.0) * (3f32.sqrt() / 65_536.0)
    }

    /// Standard normal: Box–Muller, polar form.
    pub fn normal(&mut self) -> f64 {
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
    fn streams_and_seeds_differ() {
        let draw = |seed, stream| {
            let mut rng = Rng::new(seed, stream);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(3, 1), draw(3, 1));
        assert_ne!(draw(3, 1), draw(3, 2));
        assert_ne!(draw(3, 1), draw(4, 1));
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

    #[test]
    fn approx_normal_moments_and_bounds() {
        let mut rng = Rng::new(1, 2);
        let n = 200_000;
        let draws: Vec<f64> = (0..n).map(|_| f64::from(rng.approx_normal())).collect();
        let mean = draws.iter().sum::<f64>() / n as f64;
        let var = draws.iter().map(|z| (z - mean).powi(2)).sum::<f64>() / n as f64;
        // 5 standard errors: σ/√n for the mean, about σ²·√(2/n) for the variance.
        assert!(mean.abs() < 5.0 / (n as f64).sqrt(), "mean {mean}");
        assert!(
            (var - 1.0).abs() < 5.0 * (2.0 / n as f64).sqrt(),
            "variance {var}"
        );
        assert!(draws.iter().all(|z| z.abs() <= 3.47), "bounded at ±√12");
    }
}
