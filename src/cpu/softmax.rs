//! Reference softmax / log-softmax over the last axis (max-subtracted, as the kernel).

use rayon::prelude::*;

use super::Float;

pub fn softmax<T: Float>(x: &[T], len: usize, log: bool) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    if len == 0 {
        return out;
    }
    out.par_chunks_mut(len)
        .zip(x.par_chunks(len))
        .for_each(|(o, row)| {
            let m = row.iter().copied().fold(T::neg_infinity(), T::max);
            let s = row
                .iter()
                .map(|&v| (v - m).exp())
                .fold(T::zero(), |a, b| a + b);
            for (o, &v) in o.iter_mut().zip(row) {
                *o = if log {
                    v - m - s.ln()
                } else {
                    (v - m).exp() / s
                };
            }
        });
    out
}
