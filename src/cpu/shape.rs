//! Reference layout ops (permute, narrow, concat, broadcast_to, pad), generic over any element type.

use rayon::prelude::*;

use crate::shape::{broadcast_strides, contiguous_strides};

/// Coordinates of flat index `i` in a contiguous tensor with strides `strides`.
fn coords(mut i: usize, strides: &[usize]) -> Vec<usize> {
    strides
        .iter()
        .map(|&s| {
            let c = i / s;
            i %= s;
            c
        })
        .collect()
}

/// out[c] = x[c permuted]: output dim d is input dim perm[d].
pub fn permute<T: Copy + Send + Sync>(x: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let in_strides = contiguous_strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    let out_strides = contiguous_strides(&out_shape);
    (0..x.len())
        .into_par_iter()
        .map(|i| {
            let c = coords(i, &out_strides);
            let src: usize = c.iter().zip(perm).map(|(&c, &p)| c * in_strides[p]).sum();
            x[src]
        })
        .collect()
}

/// Elements `start..start+len` along `axis`.
pub fn narrow<T: Copy + Send + Sync>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    start: usize,
    len: usize,
) -> Vec<T> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = (o * shape[axis] + start) * inner;
        out.extend_from_slice(&x[base..base + len * inner]);
    }
    out
}

/// Joins tensors along `axis`; every other dim must agree (checked by the caller).
pub fn concat<T: Copy + Send + Sync>(parts: &[(&[T], &[usize])], axis: usize) -> Vec<T> {
    let shape = parts[0].1;
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out = Vec::new();
    for o in 0..outer {
        for (x, s) in parts {
            let chunk = s[axis] * inner;
            out.extend_from_slice(&x[o * chunk..(o + 1) * chunk]);
        }
    }
    out
}

/// Repeats `x` (of `shape`) along broadcast dims to fill `out_shape`.
pub fn broadcast_to<T: Copy + Send + Sync>(
    x: &[T],
    shape: &[usize],
    out_shape: &[usize],
) -> Vec<T> {
    let in_strides = broadcast_strides(shape, out_shape);
    let out_strides = contiguous_strides(out_shape);
    let n: usize = out_shape.iter().product();
    (0..n)
        .into_par_iter()
        .map(|i| {
            let c = coords(i, &out_strides);
            x[c.iter().zip(&in_strides).map(|(c, s)| c * s).sum::<usize>()]
        })
        .collect()
}

/// Places `x` at `start` along `axis` inside zeros of length `full` there (the backward of narrow).
pub fn pad<T: Copy + Send + Sync + num_traits::Zero>(
    x: &[T],
    shape: &[usize],
    axis: usize,
    start: usize,
    full: usize,
) -> Vec<T> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let len = shape[axis];
    let mut out = vec![T::zero(); outer * full * inner];
    for o in 0..outer {
        let dst = (o * full + start) * inner;
        out[dst..dst + len * inner].copy_from_slice(&x[o * len * inner..(o + 1) * len * inner]);
    }
    out
}
