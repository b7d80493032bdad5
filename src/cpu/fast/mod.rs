//! The CPU device's fast path (f32): what `Device::Cpu` runs for the hot ops of a training step.
//!
//! Each function here computes exactly what its namesake in `cpu::` (the plain, obviously-correct
//! reference that `Device::CpuF64` runs and the GPU is tested against) computes, up to f32
//! rounding; tests/cpu_fast.rs checks each against the reference on random inputs and odd
//! shapes, gradients included.

use rayon::prelude::*;

pub mod batchnorm;
pub mod conv2d;
mod depthwise;
pub mod optim;
pub mod pool;
mod winograd;

/// Runs `f` compiled for the best instruction set this CPU has (AVX2 or AVX-512 where present,
/// detected at run time; the crate itself targets baseline x86-64). Every loop of the fast path keeps its
/// explicit lane order and Rust never contracts a multiply and an add into an FMA, so the
/// results are bit-for-bit the same on every instruction set; only the vector width changes.
/// The closures given to it, and the ones they call, are `#[inline(always)]`: a closure body
/// compiled on its own (another codegen unit) runs baseline SSE code, as batch norm's backward
/// reduction did before they were marked.
#[inline(always)]
pub(crate) fn vectorized<R>(f: impl FnOnce() -> R) -> R {
    pulp::Arch::new().dispatch(f)
}

/// Values from which [`zeros`] zeroes with the thread pool (256 KiB of f32).
const PARALLEL_ZEROS_MIN: usize = 1 << 16;

/// `len` zeros for an activation-sized output, written by the thread pool: `vec![0.0; len]`
/// zeroes on the calling thread alone (a `memset` when the allocator reuses memory), which took
/// 7-9% of a MobileNetV2 b32 training step on 2 cores while the other core waited.
pub(crate) fn zeros(len: usize) -> Vec<f32> {
    if len < PARALLEL_ZEROS_MIN {
        return vec![0.0; len];
    }
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0f32, len));
    v
}

/// The sum of equal-length partial results, added in the order given (weight gradients summed
/// over fixed image ranges: the order, and so the bits, never depend on the thread count).
pub(crate) fn sum_in_order(partials: Vec<Vec<f32>>) -> Vec<f32> {
    let mut partials = partials.into_iter();
    let mut sum = partials.next().expect("at least one partial sum");
    for part in partials {
        for (a, b) in sum.iter_mut().zip(&part) {
            *a += *b;
        }
    }
    sum
}

/// `y`'s planes [n, c] (each `s` values) reordered channel-major: chunk `ch` of `n` entries holds
/// channel ch's planes image by image, so that one task can write a whole channel (while its
/// inputs are still in cache, or several images at once).
pub(crate) fn planes_by_channel_mut(
    y: &mut [f32],
    n: usize,
    c: usize,
    s: usize,
) -> Vec<&mut [f32]> {
    let mut image_major: Vec<Option<&mut [f32]>> = y.chunks_exact_mut(s).map(Some).collect();
    let mut channel_major = Vec::with_capacity(n * c);
    for ch in 0..c {
        for i in 0..n {
            channel_major.extend(image_major[i * c + ch].take());
        }
    }
    channel_major
}
