//! A small deterministic random generator (PCG-XSH-RR 64/32).
//!
//! Owned here rather than taken from a crate so that a seed means the same
//! world forever: a dependency's algorithm change must not change datasets,
//! the model trained on them, or the tests' expected values.

#[derive(Debug, Clone)]
pub struct Pcg {
    state: u64,
    increment: u64,
}

impl Pcg {
    /// A generator for `seed`; `stream` separates independent sequences
    /// (one per video, one per object) drawn from the same seed.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Pcg {
            state: 0,
            increment: (stream << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(self.increment);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rotation = (old >> 59) as u32;
        xorshifted.rotate_right(rotation)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        f64::from(self.next_u32()) / 4_294_967_296.0
    }

    /// Uniform in [low, high).
    pub fn range(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform integer in [0, n); 0 when n is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        ((self.unit() * n as f64) as usize).min(n - 1)
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reference PCG32's first outputs for seed 42, stream 54 (the
    /// pcg32-demo values 0xa15c02b7 0x7b47f409 0xba1d3330 0x83d2f293).
    const PINNED: [u32; 4] = [0xa15c_02b7, 0x7b47_f409, 0xba1d_3330, 0x83d2_f293];

    #[test]
    fn seeds_and_streams_are_reproducible_and_distinct() {
        let draw = |seed, stream| {
            let mut rng = Pcg::new(seed, stream);
            (0..4).map(|_| rng.next_u32()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 1), draw(7, 1));
        assert_ne!(draw(7, 1), draw(8, 1));
        assert_ne!(draw(7, 1), draw(7, 2));
        // Pinned: changing the generator changes every dataset.
        assert_eq!(draw(42, 54), PINNED);
        let mut rng = Pcg::new(1, 1);
        let mean = (0..10_000).map(|_| rng.unit()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02);
        assert!((0..1000).all(|_| rng.below(3) < 3));
    }
}
