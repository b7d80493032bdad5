//! ProDA-style prototype weighting of soft pseudo labels.

use crate::error::shape_err;
use crate::{Result, Tensor};

/// `w_k = softmax_k(-(d_k - min_j d_j) / T)` with `d_k = ||f - eta_k||` for every sample's
/// (EMA-model) feature `f` and prototype `eta_k`; detached, [B, K].
pub fn prototype_weights(
    features: &Tensor,
    prototypes: &Tensor,
    temperature: f32,
) -> Result<Tensor> {
    if temperature <= 0.0 {
        return shape_err(
            "prototype_weights",
            format!("temperature must be positive, got {temperature}"),
        );
    }
    let d = super::euclidean_distance(&features.detach(), &prototypes.detach())?;
    let shifted = d.sub(&d.min(1, true)?)?;
    shifted.mul_scalar(-1.0 / temperature)?.softmax()
}

/// ProDA's rectified pseudo labels: classifier probabilities times the prototype weights,
/// renormalised per row (detached soft labels, [B, K]), and their argmax (hard labels).
pub fn rectified_labels(probabilities: &Tensor, weights: &Tensor) -> Result<(Tensor, Vec<i32>)> {
    if probabilities.shape() != weights.shape() || probabilities.rank() != 2 {
        return shape_err(
            "rectified_labels",
            format!("{:?} vs {:?}", probabilities.shape(), weights.shape()),
        );
    }
    let joint = probabilities.detach().mul(&weights.detach())?;
    let soft = joint.div(&joint.sum(1, true)?.clamp(1e-12, f32::MAX)?)?;
    let hard = soft.argmax(1, false)?.to_vec_i32()?;
    Ok((soft, hard))
}
