//! Reference indexed reads and writes along one axis ([outer, dim, inner] views).
//! Out-of-range indices read as NaN, as on the GPU; the adds ignore them.

use super::Float;

fn valid(r: i32, dim: usize) -> Option<usize> {
    (r >= 0 && (r as usize) < dim).then_some(r as usize)
}

pub fn index_select<T: Float>(
    x: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    idx: &[i32],
) -> Vec<T> {
    let mut out = Vec::with_capacity(outer * idx.len() * inner);
    for o in 0..outer {
        for &r in idx {
            match valid(r, dim) {
                Some(r) => {
                    out.extend_from_slice(&x[(o * dim + r) * inner..(o * dim + r + 1) * inner])
                }
                None => out.extend(std::iter::repeat_n(T::nan(), inner)),
            }
        }
    }
    out
}

pub fn gather<T: Float>(
    x: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    idx: &[i32],
    count: usize,
) -> Vec<T> {
    let mut out = vec![T::zero(); outer * count * inner];
    for o in 0..outer {
        for j in 0..count {
            for i in 0..inner {
                let t = (o * count + j) * inner + i;
                out[t] = valid(idx[t], dim).map_or(T::nan(), |r| x[(o * dim + r) * inner + i]);
            }
        }
    }
    out
}

pub fn index_add<T: Float>(
    base: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    idx: &[i32],
    src: &[T],
) -> Vec<T> {
    let mut out = base.to_vec();
    let count = idx.len();
    for o in 0..outer {
        for (j, &r) in idx.iter().enumerate() {
            if let Some(r) = valid(r, dim) {
                for i in 0..inner {
                    out[(o * dim + r) * inner + i] =
                        out[(o * dim + r) * inner + i] + src[(o * count + j) * inner + i];
                }
            }
        }
    }
    out
}

pub fn scatter_add<T: Float>(
    base: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    idx: &[i32],
    src: &[T],
    count: usize,
) -> Vec<T> {
    let mut out = base.to_vec();
    for o in 0..outer {
        for j in 0..count {
            for i in 0..inner {
                let s = (o * count + j) * inner + i;
                if let Some(r) = valid(idx[s], dim) {
                    out[(o * dim + r) * inner + i] = out[(o * dim + r) * inner + i] + src[s];
                }
            }
        }
    }
    out
}
