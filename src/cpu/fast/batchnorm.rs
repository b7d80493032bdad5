//! The CPU device's batch normalisation (f32) over x viewed as [n, c, s]: the same results as
//! `cpu::batchnorm` (the plain reference), with per-channel constants hoisted out of the inner
//! loops (no divide or modulo per element), contiguous planes, 16-lane partial sums (they
//! vectorise) combined in f64, and the backward's two passes fused into one reduction and one
//! `a*g + b*x + c` pass.

use rayon::prelude::*;

use crate::cpu::elementwise::Activation;

/// Planes of at least this many values go to a rayon task on their own.
const MIN_TASK: usize = 4096;

/// Sum of `f(i)` over a slice's indices with 16 fixed partial sums (vectorises; fixed order).
#[inline]
fn lanes16(len: usize, f: impl Fn(usize) -> f32) -> f64 {
    let mut acc = [0f32; 16];
    let full = len / 16 * 16;
    let mut i = 0;
    while i < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
        i += 16;
    }
    let tail: f32 = (full..len).map(&f).sum();
    acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

fn sum(a: &[f32]) -> f64 {
    lanes16(a.len(), |i| a[i])
}

fn sum_sq_dev(a: &[f32], mean: f32) -> f64 {
    lanes16(a.len(), |i| (a[i] - mean) * (a[i] - mean))
}

/// Per-channel mean and biased variance (two passes), as `cpu::batchnorm::stats`.
pub fn stats(x: &[f32], n: usize, c: usize, s: usize) -> (Vec<f32>, Vec<f32>) {
    let m = (n * s).max(1) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            let plane = |i: usize| &x[(i * c + ch) * s..][..s];
            let mean = ((0..n).map(|i| sum(plane(i))).sum::<f64>() / m) as f32;
            let var = (0..n).map(|i| sum_sq_dev(plane(i), mean)).sum::<f64>() / m;
            (mean, var as f32)
        })
        .unzip()
}

/// y = act((x - mean) / sqrt(var + eps) * gamma + beta), as `cpu::batchnorm::apply`: the
/// activation in the same pass, with the arithmetic of `relu()` / `relu6()` (bit-identical to the
/// normalisation followed by the activation).
#[allow(clippy::too_many_arguments)]
pub fn apply(
    x: &[f32],
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    c: usize,
    s: usize,
    eps: f64,
    act: Activation,
) -> Vec<f32> {
    // The activation fixed at compile time in each loop (it vectorises).
    match act {
        Activation::None => apply_with(x, mean, var, gamma, beta, (c, s, eps), |v| v),
        Activation::Relu => apply_with(x, mean, var, gamma, beta, (c, s, eps), |v| {
            Activation::Relu.apply(v)
        }),
        Activation::Relu6 => apply_with(x, mean, var, gamma, beta, (c, s, eps), |v| {
            Activation::Relu6.apply(v)
        }),
    }
}

fn apply_with(
    x: &[f32],
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    beta: &[f32],
    (c, s, eps): (usize, usize, f64),
    act: impl Fn(f32) -> f32 + Sync,
) -> Vec<f32> {
    let scale: Vec<f32> = (0..c)
        .map(|ch| (gamma[ch] as f64 / (var[ch] as f64 + eps).sqrt()) as f32)
        .collect();
    let shift: Vec<f32> = (0..c).map(|ch| beta[ch] - mean[ch] * scale[ch]).collect();
    let mut y = vec![0f32; x.len()];
    if s == 0 {
        return y;
    }
    y.par_chunks_mut(s)
        .zip(x.par_chunks(s))
        .with_min_len((MIN_TASK / s).max(1))
        .enumerate()
        .for_each(|(plane, (y, x))| {
            let (a, b) = (scale[plane % c], shift[plane % c]);
            for (y, x) in y.iter_mut().zip(x) {
                *y = act(x * a + b);
            }
        });
    y
}

/// (dx, dgamma, dbeta): `cpu::batchnorm::backward_reduce` then `backward_apply` in two passes;
/// `train` uses batch statistics (their own gradient included). `fused`: the activation in the
/// forward's epilogue and that forward's output y (shaped like x); the gradient `g` (of y) is
/// masked by the activation's derivative at y inside both passes, with the same values as
/// `cpu::elementwise::activation_backward` first (bit-identical to the unfused sequence).
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    g: &[f32],
    mean: &[f32],
    var: &[f32],
    gamma: &[f32],
    dims: (usize, usize, usize),
    eps: f64,
    train: bool,
    fused: Option<(Activation, &[f32])>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let stats = (mean, var, gamma);
    // The activation fixed at compile time in each loop (they vectorise); y unread without one.
    match fused {
        None | Some((Activation::None, _)) => {
            backward_with(x, g, g, stats, dims, eps, train, |g, _| g)
        }
        Some((Activation::Relu, y)) => backward_with(x, g, y, stats, dims, eps, train, |g, y| {
            Activation::Relu.grad(g, y)
        }),
        Some((Activation::Relu6, y)) => backward_with(x, g, y, stats, dims, eps, train, |g, y| {
            Activation::Relu6.grad(g, y)
        }),
    }
}

/// [`backward`] with the masked gradient `gate(g, y)` per element.
#[allow(clippy::too_many_arguments)]
fn backward_with(
    x: &[f32],
    g: &[f32],
    y: &[f32],
    (mean, var, gamma): (&[f32], &[f32], &[f32]),
    (n, c, s): (usize, usize, usize),
    eps: f64,
    train: bool,
    gate: impl Fn(f32, f32) -> f32 + Sync,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let invstd: Vec<f64> = var.iter().map(|&v| 1.0 / (v as f64 + eps).sqrt()).collect();
    // Per channel: sum(g) and sum(g * xhat).
    let (sum_g, sum_gxhat): (Vec<f64>, Vec<f64>) = (0..c)
        .into_par_iter()
        .map(|ch| {
            let (mut sg, mut sgx) = (0f64, 0f64);
            for i in 0..n {
                let off = (i * c + ch) * s;
                let (gp, xp, yp) = (&g[off..off + s], &x[off..off + s], &y[off..off + s]);
                sg += lanes16(s, |j| gate(gp[j], yp[j]));
                sgx += lanes16(s, |j| gate(gp[j], yp[j]) * (xp[j] - mean[ch]));
            }
            (sg, sgx * invstd[ch])
        })
        .unzip();
    let m = (n * s).max(1) as f64;
    // dx = a*g + b*x + k per channel.
    let coef: Vec<(f32, f32, f32)> = (0..c)
        .map(|ch| {
            let a = gamma[ch] as f64 * invstd[ch];
            if train {
                let b = -a * invstd[ch] * sum_gxhat[ch] / m;
                let k = -a * sum_g[ch] / m - b * mean[ch] as f64;
                (a as f32, b as f32, k as f32)
            } else {
                (a as f32, 0.0, 0.0)
            }
        })
        .collect();
    let mut dx = vec![0f32; x.len()];
    if s > 0 {
        dx.par_chunks_mut(s)
            .zip(g.par_chunks(s).zip(x.par_chunks(s).zip(y.par_chunks(s))))
            .with_min_len((MIN_TASK / s).max(1))
            .enumerate()
            .for_each(|(plane, (d, (g, (x, y))))| {
                let (a, b, k) = coef[plane % c];
                for (((d, &g), x), &y) in d.iter_mut().zip(g).zip(x).zip(y) {
                    *d = a * gate(g, y) + b * x + k;
                }
            });
    }
    let to32 = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect::<Vec<f32>>();
    (dx, to32(sum_gxhat), to32(sum_g))
}
