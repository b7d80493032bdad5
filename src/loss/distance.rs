//! Pairwise distances between two feature sets, differentiable (shared with clustering).

use crate::error::shape_err;
use crate::{Result, Tensor};

fn check(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.rank() != 2 || b.rank() != 2 || a.shape()[1] != b.shape()[1] {
        return shape_err(
            op,
            format!(
                "needs [m, d] and [n, d], got {:?} and {:?}",
                a.shape(),
                b.shape()
            ),
        );
    }
    Ok(())
}

/// `||a_i||^2 + ||b_j||^2 - 2 a_i.b_j`, clamped at 0 against round-off; [m, n].
pub fn squared_euclidean_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check("squared_euclidean_distance", a, b)?;
    let (m, n) = (a.shape()[0], b.shape()[0]);
    let aa = a.square()?.sum(1, false)?.reshape(&[m, 1])?;
    let bb = b.square()?.sum(1, false)?.reshape(&[1, n])?;
    aa.add(&bb)?
        .sub(&a.matmul_t(b, false, true)?.mul_scalar(2.0)?)?
        .clamp(0.0, f32::MAX)
}

/// Euclidean distance as the reference code computes it: `sqrt(clamp(d^2, min = 1e-12))`, so the
/// gradient stays finite on the diagonal.
pub fn euclidean_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    squared_euclidean_distance(a, b)?
        .clamp(1e-12, f32::MAX)?
        .sqrt()
}

/// `1 - cos(a_i, b_j)`.
pub fn cosine_distance(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    check("cosine_distance", a, b)?;
    a.l2_normalize(1)?
        .matmul_t(&b.l2_normalize(1)?, false, true)?
        .neg()?
        .add_scalar(1.0)
}
