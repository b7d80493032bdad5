//! ProDA-style prototype weighting of soft pseudo labels (Zhang et al., "Prototypical Pseudo
//! Label Denoising and Target Structure Learning for Domain Adaptive Semantic Segmentation",
//! CVPR 2021, section 3.2; microsoft/ProDA `models/adaptation_modelv2.py`,
//! `get_prototype_weight` and the `proto_rectify` branch of `step`), shared/ALGORITHMS.md section 7.

use crate::error::shape_err;
use crate::{Result, Tensor};

/// `w_k = softmax_k(-(d_k - min_j d_j) * T)` with `d_k = ||f - eta_k||` (Euclidean) for every
/// sample's (EMA-model) feature `f` ([B, D]) and prototype `eta_k` ([K, D]); detached, [B, K],
/// each row sums to one.
///
/// `temperature` *multiplies* the shifted distances, as microsoft/ProDA's `proto_temperature`
/// does (`F.softmax(-feat_proto_distance * self.opt.proto_temperature, dim=1)`, default 1);
/// the paper and shared/ALGORITHMS.md write a division, which is the same at the default T = 1.
/// We follow the public code (ALGORITHMS.md: where the paper and its code disagree, match the
/// code). Errors: a temperature that is not positive and finite, or mismatched shapes.
pub fn prototype_weights(
    features: &Tensor,
    prototypes: &Tensor,
    temperature: f32,
) -> Result<Tensor> {
    if !(temperature.is_finite() && temperature > 0.0) {
        return shape_err(
            "prototype_weights",
            format!("temperature must be positive and finite, got {temperature}"),
        );
    }
    let d = super::euclidean_distance(&features.detach(), &prototypes.detach())?;
    let shifted = d.sub(&d.min(1, true)?)?;
    shifted.mul_scalar(-temperature)?.softmax()
}

/// ProDA's rectified pseudo labels: soft labels ([B, K], rows summing to one: classifier
/// probabilities) times the prototype weights ([B, K]), renormalised per row (detached soft
/// labels, [B, K]), and their argmax (hard labels, the first maximum on ties). ProDA:
/// `rectified = weights * soft; hard = rectified.max(1)[1]; rectified /= rectified.sum(1)`.
/// Errors: shapes that differ or are not [B, K].
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
