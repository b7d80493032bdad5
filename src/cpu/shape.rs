//! Reference layout ops (permute, narrow, concat, broadcast_to, pad), generic over any element type.

use rayon::prelude::*;

use crate::shape::{broadcast_strides, contiguous_strides};

/// Where each element of a contiguous output of some shape lies in N operands read with given
/// strides (per output dim; 0 along a broadcast dim): offsets from a short loop over dims, no
/// per-element allocation.
pub(crate) struct Strided<const N: usize> {
    out_strides: Vec<usize>,
    strides: [Vec<usize>; N],
}

impl<const N: usize> Strided<N> {
    /// Operands of `operand_shapes` broadcast (numpy rules, checked by the caller) to `out_shape`.
    pub(crate) fn broadcast(out_shape: &[usize], operand_shapes: [&[usize]; N]) -> Self {
        Strided {
            out_strides: contiguous_strides(out_shape),
            strides: operand_shapes.map(|s| broadcast_strides(s, out_shape)),
        }
    }

    /// The operands' offsets of output element `i`.
    pub(crate) fn offsets(&self, mut i: usize) -> [usize; N] {
        let mut off = [0; N];
        for (d, &os) in self.out_strides.iter().enumerate() {
            let c = i / os;
            i %= os;
            for (o, st) in off.iter_mut().zip(&self.strides) {
                *o += c * st[d];
            }
        }
        off
    }
}

/// A contiguous `out_shape` whose element at coordinates c is `x[sum_d c[d] * src_strides[d]]`
/// (permute and broadcast_to are both this), a row of the last dim at a time: one offset
/// computation per row, then a copy, a fill (stride 0) or a strided walk.
fn gather_strided<T: Copy + Send + Sync>(
    x: &[T],
    out_shape: &[usize],
    src_strides: Vec<usize>,
) -> Vec<T> {
    let n: usize = out_shape.iter().product();
    if n == 0 {
        return Vec::new();
    }
    let (row, step) = match (out_shape.last(), src_strides.last()) {
        (Some(&len), Some(&step)) => (len, step),
        _ => (1, 0),
    };
    let rows = Strided {
        out_strides: contiguous_strides(out_shape),
        strides: [src_strides],
    };
    let mut out = vec![x[0]; n];
    out.par_chunks_mut(row)
        .with_min_len(4096usize.div_ceil(row))
        .enumerate()
        .for_each(|(r, dst)| {
            let [off] = rows.offsets(r * row);
            match step {
                1 => dst.copy_from_slice(&x[off..off + row]),
                0 => dst.fill(x[off]),
                _ => {
                    for (j, v) in dst.iter_mut().enumerate() {
                        *v = x[off + j * step];
                    }
                }
            }
        });
    out
}

/// out[c] = x[c permuted]: output dim d is input dim perm[d].
pub fn permute<T: Copy + Send + Sync>(x: &[T], shape: &[usize], perm: &[usize]) -> Vec<T> {
    let in_strides = contiguous_strides(shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
    gather_strided(x, &out_shape, perm.iter().map(|&p| in_strides[p]).collect())
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
    gather_strided(x, out_shape, broadcast_strides(shape, out_shape))
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
