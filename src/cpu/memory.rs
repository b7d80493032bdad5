//! Reference memory-bank updates, sample by sample exactly as the reference code loops.

use super::Float;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryUpdate {
    /// `m = mu m + (1 - mu) f`, renormalised, for every sample in batch order.
    Momentum,
    /// Per row, the sample with the lowest cosine to `m` updates it once, renormalised.
    Hard,
    /// `m = (1 - mu) m + mu mean(f)`, not normalised (prototype EMA).
    MeanEma,
}

fn normalise<T: Float>(row: &mut [T]) {
    let n = row
        .iter()
        .fold(T::zero(), |a, &x| a + x * x)
        .sqrt()
        .max(T::from_f64(1e-12).unwrap());
    row.iter_mut().for_each(|x| *x = *x / n);
}

/// Updates `memory` ([N, dim]) rows `rows[i]` with feature row i of `features` ([B, dim]).
pub fn update_rows<T: Float>(
    memory: &mut [T],
    features: &[T],
    dim: usize,
    rows: &[usize],
    momentum: f64,
    mode: MemoryUpdate,
) {
    let mu = T::from_f64(momentum).unwrap();
    let one = T::one();
    let mut distinct: Vec<usize> = rows.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    for &r in &distinct {
        let members: Vec<usize> = (0..rows.len()).filter(|&i| rows[i] == r).collect();
        let m = &mut memory[r * dim..(r + 1) * dim];
        let f = |i: usize| &features[i * dim..(i + 1) * dim];
        match mode {
            MemoryUpdate::Momentum => {
                for &i in &members {
                    m.iter_mut()
                        .zip(f(i))
                        .for_each(|(m, &x)| *m = mu * *m + (one - mu) * x);
                    normalise(m);
                }
            }
            MemoryUpdate::Hard => {
                let cos = |i: usize| {
                    f(i).iter()
                        .zip(m.iter())
                        .fold(T::zero(), |a, (&x, &y)| a + x * y)
                };
                let mut best = members[0];
                for &i in &members[1..] {
                    if cos(i) < cos(best) {
                        best = i;
                    }
                }
                let fb = f(best).to_vec();
                m.iter_mut()
                    .zip(&fb)
                    .for_each(|(m, &x)| *m = mu * *m + (one - mu) * x);
                normalise(m);
            }
            MemoryUpdate::MeanEma => {
                let count = T::from_usize(members.len()).unwrap();
                for (d, md) in m.iter_mut().enumerate() {
                    let mean = members.iter().fold(T::zero(), |a, &i| a + f(i)[d]) / count;
                    *md = (one - mu) * *md + mu * mean;
                }
            }
        }
    }
}
