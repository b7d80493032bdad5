//! The CPU device's batch normalisation (f32) over x viewed as [n, c, s]: the same results as
//! `cpu::batchnorm` (the plain reference), with per-channel constants hoisted out of the inner
//! loops (no divide or modulo per element), contiguous planes, 16-lane partial sums combined in
//! f64, every loop compiled for the CPU's widest vector instructions (chosen at run time, same
//! bits on each), and each channel's passes run back to back while its planes are in cache: the
//! training forward's statistics and normalisation, the backward's reduction and `a*g + b*x + c`.

use rayon::prelude::*;

use super::{planes_by_channel_mut, vectorized};
use crate::cpu::elementwise::Activation;

/// Evaluates `$call` with `$a` bound to `$act` as a constant, once per activation, so that each
/// loop is compiled (and vectorised) for one fixed activation rather than branching per value.
macro_rules! with_activation {
    ($act:expr, |$a:ident| $call:expr) => {
        match $act {
            Activation::None => {
                const $a: Activation = Activation::None;
                $call
            }
            Activation::Relu => {
                const $a: Activation = Activation::Relu;
                $call
            }
            Activation::Relu6 => {
                const $a: Activation = Activation::Relu6;
                $call
            }
        }
    };
}

/// Planes of at least this many values go to a rayon task on their own.
const MIN_TASK: usize = 4096;

/// Partial sums per reduction: 16 lanes in a fixed order (two AVX2 or four SSE registers).
const LANES: usize = 16;

/// `a` as whole [`LANES`]-wide blocks (arrays: no bounds checks in the lane loops) and the rest.
#[inline(always)]
fn lane_blocks(a: &[f32]) -> (impl Iterator<Item = &[f32; LANES]>, &[f32]) {
    let blocks = a.chunks_exact(LANES);
    let tail = blocks.remainder();
    // Infallible: chunks_exact yields LANES values each.
    (blocks.map(|b| b.try_into().unwrap()), tail)
}

/// `Σ f(v)` over `a` with [`LANES`] fixed partial sums (they vectorise), then the tail in order,
/// the lanes combined in f64.
#[inline(always)]
fn lanes_sum(a: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let (blocks, tail) = lane_blocks(a);
    let mut acc = [0f32; LANES];
    for block in blocks {
        for l in 0..LANES {
            acc[l] += f(block[l]);
        }
    }
    combine_lanes(acc, tail.iter().map(|&v| f(v)).sum())
}

/// The lanes of a [`LANES`]-wide partial sum added in f64 in lane order, then the tail's sum.
#[inline(always)]
fn combine_lanes(acc: [f32; LANES], tail: f32) -> f64 {
    acc.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// `(Σ gate(g, x), Σ gate(g, x) * (x - mean))` over one plane in one pass, each sum as
/// [`lanes_sum`] computes it (the same partial sums, the same order).
#[inline(always)]
fn lanes_sum_backward(
    (g, x): (&[f32], &[f32]),
    mean: f32,
    gate: impl Fn(f32, f32) -> f32,
) -> (f64, f64) {
    let ((gb, gt), (xb, xt)) = (lane_blocks(g), lane_blocks(x));
    let (mut acc_g, mut acc_gx) = ([0f32; LANES], [0f32; LANES]);
    for (g, x) in gb.zip(xb) {
        for l in 0..LANES {
            let gated = gate(g[l], x[l]);
            acc_g[l] += gated;
            acc_gx[l] += gated * (x[l] - mean);
        }
    }
    let tail = || gt.iter().zip(xt).map(|(&g, &x)| (gate(g, x), x));
    let tail_g: f32 = tail().map(|(gated, _)| gated).sum();
    let tail_gx: f32 = tail().map(|(gated, x)| gated * (x - mean)).sum();
    (combine_lanes(acc_g, tail_g), combine_lanes(acc_gx, tail_gx))
}

/// The planes of one channel, image by image: x viewed as [n, c, s], plane (i, ch) is
/// `x[(i * c + ch) * s..][..s]`.
#[inline(always)]
fn channel_planes(
    x: &[f32],
    (n, c, s): (usize, usize, usize),
    ch: usize,
) -> impl Iterator<Item = &[f32]> + Clone {
    (0..n).map(move |i| &x[(i * c + ch) * s..][..s])
}

/// Mean and biased variance of one channel's planes, two passes (the second over values still in
/// cache): the sums of [`lanes_sum`] per plane, added in f64 in image order, divided by `m`.
#[inline(always)]
fn channel_stats<'a>(planes: impl Iterator<Item = &'a [f32]> + Clone, m: f64) -> (f32, f32) {
    // Plain loops, not `map(..).sum()`: `Map::fold` is compiled on its own, without the
    // dispatched instruction set. They start at -0.0, as f64's `Sum` does (same bits).
    let mut sum = -0.0f64;
    for p in planes.clone() {
        sum += lanes_sum(
            p,
            #[inline(always)]
            |v| v,
        );
    }
    let mean = (sum / m) as f32;
    let mut sq_dev = -0.0f64;
    for p in planes {
        sq_dev += lanes_sum(
            p,
            #[inline(always)]
            |v| (v - mean) * (v - mean),
        );
    }
    (mean, (sq_dev / m) as f32)
}

/// Per-channel mean and biased variance (two passes), as `cpu::batchnorm::stats`.
pub fn stats(x: &[f32], n: usize, c: usize, s: usize) -> (Vec<f32>, Vec<f32>) {
    let m = (n * s).max(1) as f64;
    (0..c)
        .into_par_iter()
        .map(|ch| {
            vectorized(
                #[inline(always)]
                || channel_stats(channel_planes(x, (n, c, s), ch), m),
            )
        })
        .unzip()
}

/// The scale and shift that normalise one channel: `y = x * scale + shift` (f32 from the f64
/// `gamma / sqrt(var + eps)`, as `cpu::batchnorm::apply`).
#[inline(always)]
fn scale_shift(mean: f32, var: f32, gamma: f32, beta: f32, eps: f64) -> (f32, f32) {
    let scale = (gamma as f64 / (var as f64 + eps).sqrt()) as f32;
    (scale, beta - mean * scale)
}

/// `y = act(x * a + b)` over one plane.
#[inline(always)]
fn normalize_plane(y: &mut [f32], x: &[f32], (a, b): (f32, f32), act: impl Fn(f32) -> f32) {
    for (y, x) in y.iter_mut().zip(x) {
        *y = act(x * a + b);
    }
}

/// Training-mode forward in one sweep: per channel [`stats`] then [`apply`] with those
/// statistics, the channel's planes normalised while still in cache (x is read from memory once
/// instead of three times). Returns (y, batch mean [c], biased batch variance [c]), bit-for-bit
/// those of `stats` then `apply`.
#[allow(clippy::too_many_arguments)]
pub fn train_forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    (n, c, s): (usize, usize, usize),
    eps: f64,
    act: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    with_activation!(act, |ACT| train_forward_with(
        x,
        gamma,
        beta,
        (n, c, s),
        eps,
        #[inline(always)]
        |v| ACT.apply(v)
    ))
}

fn train_forward_with(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    (n, c, s): (usize, usize, usize),
    eps: f64,
    act: impl Fn(f32) -> f32 + Sync,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut y = super::zeros(x.len());
    if y.is_empty() {
        let (mean, var) = stats(x, n, c, s);
        return (y, mean, var);
    }
    let m = (n * s).max(1) as f64;
    let (mean, var) = planes_by_channel_mut(&mut y, n, c, s)
        .par_chunks_mut(n)
        .enumerate()
        .map(|(ch, out)| {
            vectorized(
                #[inline(always)]
                || {
                    let planes = channel_planes(x, (n, c, s), ch);
                    let (mean, var) = channel_stats(planes.clone(), m);
                    let coef = scale_shift(mean, var, gamma[ch], beta[ch], eps);
                    for (y, x) in out.iter_mut().zip(planes) {
                        normalize_plane(y, x, coef, &act);
                    }
                    (mean, var)
                },
            )
        })
        .unzip();
    (y, mean, var)
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
    with_activation!(act, |ACT| apply_with(
        x,
        mean,
        var,
        gamma,
        beta,
        (c, s, eps),
        #[inline(always)]
        |v| ACT.apply(v)
    ))
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
    let coef: Vec<(f32, f32)> = (0..c)
        .map(|ch| scale_shift(mean[ch], var[ch], gamma[ch], beta[ch], eps))
        .collect();
    let mut y = super::zeros(x.len());
    if s == 0 {
        return y;
    }
    y.par_chunks_mut(s)
        .zip(x.par_chunks(s))
        .with_min_len((MIN_TASK / s).max(1))
        .enumerate()
        .for_each(|(plane, (y, x))| {
            vectorized(
                #[inline(always)]
                || normalize_plane(y, x, coef[plane % c], &act),
            )
        });
    y
}

/// (dx, dgamma, dbeta): `cpu::batchnorm::backward_reduce` then `backward_apply` in two passes;
/// `train` uses batch statistics (their own gradient included). `act`: the activation fused into
/// the forward's epilogue ([`train_forward`] or [`apply`] with these `mean`, `var`, `gamma`,
/// `beta` and `eps`); the gradient `g` (of the activation's output) is masked by its derivative
/// inside both passes, with the same values as `cpu::elementwise::activation_backward` on the
/// forward's output first (bit-identical to the unfused sequence). The mask comes from the
/// pre-activation `x * scale + shift` recomputed with the forward's own f32 arithmetic (the same
/// bits as the forward's), which the gradient passes through exactly where it passes the output
/// ([`Activation::passes`]): one stream of memory less than reading the output back.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    g: &[f32],
    (mean, var, gamma, beta): (&[f32], &[f32], &[f32], &[f32]),
    dims: (usize, usize, usize),
    eps: f64,
    train: bool,
    act: Activation,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    with_activation!(act, |ACT| backward_with(
        x,
        g,
        (mean, var, gamma, beta),
        dims,
        eps,
        train,
        #[inline(always)]
        |g, pre| ACT.grad(g, pre)
    ))
}

/// [`backward`] with the masked gradient `gate(g, pre-activation)` per element.
#[allow(clippy::too_many_arguments)]
fn backward_with(
    x: &[f32],
    g: &[f32],
    (mean, var, gamma, beta): (&[f32], &[f32], &[f32], &[f32]),
    (n, c, s): (usize, usize, usize),
    eps: f64,
    train: bool,
    gate: impl Fn(f32, f32) -> f32 + Sync,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let m = (n * s).max(1) as f64;
    let mut dx = super::zeros(x.len());
    if dx.is_empty() {
        return (dx, vec![0.0; c], vec![0.0; c]);
    }
    // Per channel: sum(g) and sum(g * xhat) over its planes, then dx = a*g + b*x + k over the
    // same planes while they are still in cache.
    let (sum_gxhat, sum_g): (Vec<f32>, Vec<f32>) = planes_by_channel_mut(&mut dx, n, c, s)
        .par_chunks_mut(n)
        .enumerate()
        .map(|(ch, out)| {
            vectorized(
                #[inline(always)]
                || {
                    let invstd = 1.0 / (var[ch] as f64 + eps).sqrt();
                    let (scale, shift) = scale_shift(mean[ch], var[ch], gamma[ch], beta[ch], eps);
                    // The forward's pre-activation, then the activation's mask.
                    let gate = |g: f32, x: f32| gate(g, x * scale + shift);
                    let dims = (n, c, s);
                    let (mut sg, mut sgx) = (0f64, 0f64);
                    for (g, x) in channel_planes(g, dims, ch).zip(channel_planes(x, dims, ch)) {
                        let (pg, pgx) = lanes_sum_backward((g, x), mean[ch], gate);
                        sg += pg;
                        sgx += pgx;
                    }
                    let sgxhat = sgx * invstd;
                    let a = gamma[ch] as f64 * invstd;
                    let (a, b, k) = if train {
                        let b = -a * invstd * sgxhat / m;
                        let k = -a * sg / m - b * mean[ch] as f64;
                        (a as f32, b as f32, k as f32)
                    } else {
                        (a as f32, 0.0, 0.0)
                    };
                    let inputs = channel_planes(g, dims, ch).zip(channel_planes(x, dims, ch));
                    for (d, (g, x)) in out.iter_mut().zip(inputs) {
                        for ((d, &g), &x) in d.iter_mut().zip(g).zip(x) {
                            *d = a * gate(g, x) + b * x + k;
                        }
                    }
                    (sgxhat as f32, sg as f32)
                },
            )
        })
        .unzip();
    (dx, sum_gxhat, sum_g)
}
