//! Losses of the re-ID methods (ALGORITHMS.md sections 2-7), built from differentiable ops so each
//! inherits tested kernels and backward rules. Labels come from the host (the sampler and the
//! clustering produce them there); each loss uploads the small index/mask tensors it needs.

mod contrastive;
mod cross_entropy;
mod distance;
mod proda;
mod triplet;

pub use contrastive::{
    cluster_contrast, hybrid_contrast, ise_lambda, label_preserving, support_samples, ClassRows,
};
pub use cross_entropy::{cross_entropy, soft_cross_entropy, symmetric_cross_entropy};
pub use distance::{cosine_distance, euclidean_distance, squared_euclidean_distance};
pub use proda::{prototype_weights, rectified_labels};
pub use triplet::{batch_hard, margin_triplet, soft_softmax_triplet, softmax_triplet, Mined};

use crate::{Device, Result, Tensor};

/// A host label list as an I32 tensor.
fn labels_tensor(labels: &[i32], shape: &[usize], device: &Device) -> Result<Tensor> {
    Tensor::from_i32(labels, shape, device)
}
