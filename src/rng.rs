//! A small, fast, seedable pseudo-random generator shared by data generation and initialisation.
//!
//! SplitMix64 (Steele, Lea & Flood 2014): a 64-bit state advanced by a Weyl sequence and mixed by
//! a bijective finaliser. Statistically strong enough for sampling and init, trivially seedable
//! from any `u64`, and identical on every platform, which makes runs reproducible bit for bit.

/// The SplitMix64 generator.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

/// Mixes a 64-bit value with the SplitMix64 finaliser: a good hash of integer keys.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl SplitMix64 {
    /// A generator whose stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in `[0, n)` (Lemire's multiply-shift; bias below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Fills `out` with independent `Normal(0, std)` samples (Box-Muller, both outputs used).
    pub fn fill_normal(&mut self, out: &mut [f32], std: f64) {
        let mut chunks = out.chunks_exact_mut(2);
        for pair in &mut chunks {
            let (a, b) = self.normal_pair();
            pair[0] = (a * std) as f32;
            pair[1] = (b * std) as f32;
        }
        if let [last] = chunks.into_remainder() {
            *last = (self.normal_pair().0 * std) as f32;
        }
    }

    fn normal_pair(&mut self) -> (f64, f64) {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - self.next_f64()).ln()).sqrt();
        let angle = std::f64::consts::TAU * self.next_f64();
        (radius * angle.cos(), radius * angle.sin())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_samples_have_the_requested_moments() {
        let mut rng = SplitMix64::new(7);
        let mut v = vec![0f32; 100_001];
        rng.fill_normal(&mut v, 0.5);
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.01, "std {}", var.sqrt());
    }

    #[test]
    fn streams_are_reproducible_and_seed_dependent() {
        let draw = |seed| {
            let mut r = SplitMix64::new(seed);
            (0..4).map(|_| r.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let mut r = SplitMix64::new(3);
        assert!((0..1000).all(|_| r.below(10) < 10));
    }
}
