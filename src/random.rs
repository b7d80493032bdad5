//! The one seeded random-number family of unreid.
//!
//! Two views of the same SplitMix64 mixer (Steele, Lea & Flood, "Fast splittable pseudorandom number
//! generators", OOPSLA 2014):
//! - counter-based draws ([`bits`], [`uniform`], [`normal`]): value `i` of stream `seed` depends on
//!   nothing else, so the same seed gives the same tensor on every device and in any order of generation;
//! - a sequential generator [`Rng`] for keyed streams: every random decision in data work
//!   (augmentation, sampling, synthesis) and clustering (k-means++) is keyed by the tuple it must be
//!   reproducible for (seed, epoch, sample, view ...) rather than drawn from one shared stream, so the
//!   result does not depend on how rayon schedules work across threads.

/// The SplitMix64 increment (2^64 / golden ratio).
const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// 64 random bits for element `index` of stream `seed`.
pub fn bits(seed: u64, index: u64) -> u64 {
    let mixed_seed = mix64(seed.wrapping_add(GOLDEN));
    mix64((mixed_seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03)).wrapping_add(GOLDEN))
}

/// Uniform in [0, 1) with 53 bits, element `index` of stream `seed`.
pub fn uniform(seed: u64, index: u64) -> f64 {
    (bits(seed, index) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal (Box-Muller over two independent uniforms), element `index` of stream `seed`.
pub fn normal(seed: u64, index: u64) -> f64 {
    let u1 = 1.0 - uniform(seed, 2 * index); // (0, 1]
    let u2 = uniform(seed, 2 * index + 1);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// SplitMix64 finaliser: a strong 64-bit mixer, used both to derive stream keys and as the generator.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Derives one stream key from a list of parts (order matters).
pub fn key(parts: &[u64]) -> u64 {
    parts.iter().fold(0x6a09_e667_f3bc_c908, |acc, &p| {
        mix64(acc ^ mix64(p.wrapping_add(GOLDEN)))
    })
}

/// SplitMix64 generator: fast, tiny state, passes BigCrush; plenty for augmentation and sampling.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: mix64(seed) }
    }

    /// A generator for a keyed stream, e.g. `Rng::keyed(&[seed, epoch, index])`.
    pub fn keyed(parts: &[u64]) -> Self {
        Rng::new(key(parts))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// Uniform integer in [0, n); `n` must be > 0. Lemire's multiply-shift with rejection, unbiased.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        loop {
            let m = (self.next_u64() as u128) * (n as u128);
            let low = m as u64;
            if low >= n || low >= n.wrapping_neg() % n {
                return (m >> 64) as usize;
            }
        }
    }

    /// Uniform integer in the inclusive range [lo, hi] (like Python's `random.randint`).
    pub fn range_inclusive(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        lo + self.below((hi - lo + 1) as usize) as i64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.next_f64() < p
    }

    /// Standard normal (Box-Muller; one value per call keeps the stream simple).
    pub fn normal(&mut self) -> f64 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher-Yates shuffle in place.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// One element chosen uniformly; `items` must not be empty.
    pub fn choose<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_covers_range_uniformly() {
        let mut rng = Rng::new(7);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[rng.below(5)] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    /// The counter-based values are pinned: tensors initialised from a seed must not change.
    #[test]
    fn counter_based_values_are_pinned() {
        fn reference(mut z: u64) -> u64 {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        for (seed, index) in [
            (0u64, 0u64),
            (1, 2),
            (0xdead_beef, 12345),
            (u64::MAX, u64::MAX),
        ] {
            let want = reference(reference(seed) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
            assert_eq!(bits(seed, index), want);
        }
    }

    #[test]
    fn keyed_streams_differ_and_repeat() {
        let a = Rng::keyed(&[1, 2, 3]).next_u64();
        assert_eq!(a, Rng::keyed(&[1, 2, 3]).next_u64());
        assert_ne!(a, Rng::keyed(&[1, 3, 2]).next_u64());
        assert_ne!(a, Rng::keyed(&[1, 2, 4]).next_u64());
    }
}
