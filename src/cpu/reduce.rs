//! Reference reductions over one axis of a tensor viewed as [outer, len, inner].
//! Sums accumulate in f64 so the reference is more accurate than any f32 kernel it checks.

use rayon::prelude::*;

use super::Float;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    Sum,
    Max,
    Min,
}

pub fn reduce<T: Float>(
    op: ReduceOp,
    x: &[T],
    outer: usize,
    len: usize,
    inner: usize,
    scale: f64,
) -> Vec<T> {
    (0..outer * inner)
        .into_par_iter()
        .map(|o| {
            let base = (o / inner) * len * inner + o % inner;
            let values = (0..len).map(|k| x[base + k * inner]);
            match op {
                ReduceOp::Sum => {
                    T::from_f64(values.map(|v| v.to_f64().unwrap()).sum::<f64>() * scale).unwrap()
                }
                ReduceOp::Max => values.fold(T::neg_infinity(), T::max),
                ReduceOp::Min => values.fold(T::infinity(), T::min),
            }
        })
        .collect()
}

/// Index of the largest (`largest`) or smallest value along the axis; ties take the lowest index.
pub fn arg_reduce<T: Float>(
    largest: bool,
    x: &[T],
    outer: usize,
    len: usize,
    inner: usize,
) -> Vec<i32> {
    (0..outer * inner)
        .into_par_iter()
        .map(|o| {
            let base = (o / inner) * len * inner + o % inner;
            let mut best = 0;
            for k in 1..len {
                let (v, b) = (x[base + k * inner], x[base + best * inner]);
                if (largest && v > b) || (!largest && v < b) {
                    best = k;
                }
            }
            best as i32
        })
        .collect()
}
