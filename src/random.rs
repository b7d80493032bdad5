//! Counter-based random numbers: value `i` of stream `seed` depends on nothing else, so the same
//! seed gives the same tensor on every device and in any order of generation.

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64 random bits for element `index` of stream `seed`.
pub fn bits(seed: u64, index: u64) -> u64 {
    splitmix64(splitmix64(seed) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03))
}

/// Uniform in [0, 1) with 53 bits.
pub fn uniform(seed: u64, index: u64) -> f64 {
    (bits(seed, index) >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Standard normal (Box-Muller over two independent uniforms).
pub fn normal(seed: u64, index: u64) -> f64 {
    let u1 = 1.0 - uniform(seed, 2 * index); // (0, 1]
    let u2 = uniform(seed, 2 * index + 1);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}
