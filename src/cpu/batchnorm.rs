//! Reference batch normalisation over x viewed as [n, c, s] (see shaders/batchnorm.wgsl).

use rayon::prelude::*;

use super::elementwise::Activation;
use super::Float;

fn channel<T: Float>(
    x: &[T],
    n: usize,
    c: usize,
    s: usize,
    ch: usize,
) -> impl Iterator<Item = T> + '_ {
    (0..n).flat_map(move |i| x[(i * c + ch) * s..][..s].iter().copied())
}

/// Per-channel mean and biased variance (two passes).
pub fn stats<T: Float>(x: &[T], n: usize, c: usize, s: usize) -> (Vec<T>, Vec<T>) {
    let m = T::from_usize((n * s).max(1)).unwrap();
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let mean = channel(x, n, c, s, ch).fold(T::zero(), |a, v| a + v) / m;
            let var =
                channel(x, n, c, s, ch).fold(T::zero(), |a, v| a + (v - mean) * (v - mean)) / m;
            (mean, var)
        })
        .unzip()
}

/// Running statistics after one training batch, in place (torch.nn.BatchNorm's update with
/// momentum m): `rmean = (1 - m) rmean + m mean`, `rvar = (1 - m) rvar + m var unbias`, where
/// `var` is the biased batch variance and `unbias = M / (M - 1)` for M values per channel.
///
/// The constants are formed in `T`, in the order the op always used ((1 - m) and m * unbias
/// first), so the CPU device's f32 statistics (and every evaluation-mode feature computed from
/// them, such as the features pseudo labels are clustered on) stay bit-identical across versions,
/// and the f64 reference stays exact.
pub fn running_update<T: Float>(
    rmean: &mut [T],
    rvar: &mut [T],
    mean: &[T],
    var: &[T],
    momentum: f64,
    per_channel: usize,
) {
    let m = T::from_f64(momentum).unwrap();
    let keep = T::one() - m;
    let unbias =
        T::from_usize(per_channel).unwrap() / T::from_usize(per_channel.max(2) - 1).unwrap();
    let m_unbias = m * unbias;
    for c in 0..rmean.len() {
        rmean[c] = rmean[c] * keep + mean[c] * m;
        rvar[c] = rvar[c] * keep + var[c] * m_unbias;
    }
}

/// y = act((x - mean) / sqrt(var + eps) * gamma + beta) (torch.nn.BatchNorm2d, then ReLU /
/// ReLU6 for `act`).
#[allow(clippy::too_many_arguments)]
pub fn apply<T: Float>(
    x: &[T],
    mean: &[T],
    var: &[T],
    gamma: &[T],
    beta: &[T],
    c: usize,
    s: usize,
    eps: f64,
    act: Activation,
) -> Vec<T> {
    let eps = T::from_f64(eps).unwrap();
    x.par_iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = (i / s) % c;
            act.apply((v - mean[ch]) / (var[ch] + eps).sqrt() * gamma[ch] + beta[ch])
        })
        .collect()
}

/// Per-channel sum(g) and sum(g * xhat). With a fused activation, `g` is the gradient already
/// through it (`elementwise::activation_backward` of the output gradient at the output).
#[allow(clippy::too_many_arguments)]
pub fn backward_reduce<T: Float>(
    x: &[T],
    g: &[T],
    mean: &[T],
    var: &[T],
    n: usize,
    c: usize,
    s: usize,
    eps: f64,
) -> (Vec<T>, Vec<T>) {
    let eps = T::from_f64(eps).unwrap();
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let invstd = T::one() / (var[ch] + eps).sqrt();
            channel(x, n, c, s, ch)
                .zip(channel(g, n, c, s, ch))
                .fold((T::zero(), T::zero()), |(a, b), (xv, gv)| {
                    (a + gv, b + gv * (xv - mean[ch]) * invstd)
                })
        })
        .unzip()
}

/// dx given the channel sums; `train` uses batch statistics (their own gradient included).
#[allow(clippy::too_many_arguments)]
pub fn backward_apply<T: Float>(
    x: &[T],
    g: &[T],
    mean: &[T],
    var: &[T],
    gamma: &[T],
    sums: (&[T], &[T]),
    (n, c, s): (usize, usize, usize),
    eps: f64,
    train: bool,
) -> Vec<T> {
    let eps = T::from_f64(eps).unwrap();
    let m = T::from_usize((n * s).max(1)).unwrap();
    x.par_iter()
        .zip(g.par_iter())
        .enumerate()
        .map(|(i, (&xv, &gv))| {
            let ch = (i / s) % c;
            let invstd = T::one() / (var[ch] + eps).sqrt();
            if train {
                let xhat = (xv - mean[ch]) * invstd;
                gamma[ch] * invstd * (gv - sums.0[ch] / m - xhat * sums.1[ch] / m)
            } else {
                gv * gamma[ch] * invstd
            }
        })
        .collect()
}
