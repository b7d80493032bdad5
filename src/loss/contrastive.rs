//! Memory-bank contrastive losses: SpCL's unified loss over a hybrid memory, Cluster Contrast's
//! InfoNCE over centroids, and ISE's support samples with the label-preserving loss.

use super::{cross_entropy, labels_tensor};
use crate::error::shape_err;
use crate::{Device, Result, Tensor};

/// Which memory rows belong to which class, uploaded once per re-clustering.
pub struct ClassRows {
    pub num_classes: usize,
    /// Class of every memory row, [N] I32.
    class_of_row: Tensor,
    /// CSR: rows of class c are `members[offsets[c]..offsets[c+1]]`.
    offsets: Tensor,
    members: Tensor,
    /// 1 / (rows in the row's class), per row [N].
    inv_count_of_row: Tensor,
    /// 1.0 for classes with at least one row, [C].
    present: Tensor,
}

impl ClassRows {
    /// `row_labels[r]` is the class of memory row `r`, in `0..num_classes`.
    pub fn new(row_labels: &[i32], num_classes: usize, device: &Device) -> Result<ClassRows> {
        if let Some(bad) = row_labels
            .iter()
            .find(|&&l| l < 0 || l as usize >= num_classes)
        {
            return shape_err(
                "ClassRows",
                format!("row label {bad} is outside 0..{num_classes}"),
            );
        }
        let mut counts = vec![0usize; num_classes];
        for &l in row_labels {
            counts[l as usize] += 1;
        }
        let mut offsets = vec![0i32; num_classes + 1];
        for c in 0..num_classes {
            offsets[c + 1] = offsets[c] + counts[c] as i32;
        }
        let mut fill = offsets.clone();
        let mut members = vec![0i32; row_labels.len()];
        for (r, &l) in row_labels.iter().enumerate() {
            members[fill[l as usize] as usize] = r as i32;
            fill[l as usize] += 1;
        }
        let n = row_labels.len();
        let inv: Vec<f32> = row_labels
            .iter()
            .map(|&l| 1.0 / counts[l as usize] as f32)
            .collect();
        let present: Vec<f32> = counts.iter().map(|&c| (c > 0) as u8 as f32).collect();
        Ok(ClassRows {
            num_classes,
            class_of_row: Tensor::from_i32(row_labels, &[n], device)?,
            offsets: Tensor::from_i32(&offsets, &[num_classes + 1], device)?,
            members: Tensor::from_i32(&members, &[n], device)?,
            inv_count_of_row: Tensor::from_slice(&inv, &[n], device)?,
            present: Tensor::from_slice(&present, &[num_classes], device)?,
        })
    }

    /// Per-class mean over the last axis: [B, N] -> [B, C] (absent classes give 0).
    pub fn class_mean(&self, x: &Tensor) -> Result<Tensor> {
        x.segment_mean(
            &self.offsets,
            &self.members,
            &self.class_of_row,
            &self.inv_count_of_row,
        )
    }
}

/// SpCL's unified contrastive loss: logits against every memory row (`f . m / tau`), averaged per
/// class, a softmax over the classes present, NLL of each sample's class. `features` should be
/// L2-normalised; the memory is detached. `targets[i]` is sample i's class.
pub fn hybrid_contrast(
    features: &Tensor,
    memory: &Tensor,
    rows: &ClassRows,
    targets: &[i32],
    tau: f32,
) -> Result<Tensor> {
    let batch = features.shape()[0];
    if targets.len() != batch {
        return shape_err(
            "hybrid_contrast",
            format!("{} targets for {batch} features", targets.len()),
        );
    }
    let logits = features
        .matmul_t(&memory.detach(), false, true)?
        .mul_scalar(1.0 / tau)?;
    let class_logits = rows.class_mean(&logits)?;
    // Absent classes are pushed to -1e9 so the softmax gives them exactly zero mass.
    let masked = class_logits.add(&rows.present.add_scalar(-1.0)?.mul_scalar(1e9)?)?;
    let p = masked.softmax()?;
    let picked = p.gather(1, &labels_tensor(targets, &[batch, 1], features.device())?)?;
    // The reference takes log(p + 1e-6).
    picked.add_scalar(1e-6)?.log()?.mean_all()?.neg()
}

/// Cluster Contrast's InfoNCE: cross-entropy of `f . c_k / tau` over the centroids (detached).
pub fn cluster_contrast(
    features: &Tensor,
    centroids: &Tensor,
    labels: &[i32],
    tau: f32,
) -> Result<Tensor> {
    let logits = features
        .matmul_t(&centroids.detach(), false, true)?
        .mul_scalar(1.0 / tau)?;
    cross_entropy(&logits, labels, 0.0)
}

/// ISE's progressive weight `lambda_t = 0.5 * base * ln(1 + (e - 1) t / T)`.
pub fn ise_lambda(base: f64, step: u64, total_steps: u64) -> f64 {
    0.5 * base * (1.0 + (std::f64::consts::E - 1.0) * step as f64 / total_steps.max(1) as f64).ln()
}

/// ISE support samples `normalise(f + 0.5 * lambda * (c_n - c_y))`, where `c_n` is the centroid
/// nearest to `f` (cosine) other than its own `c_y`. Centroids are detached.
pub fn support_samples(
    features: &Tensor,
    centroids: &Tensor,
    labels: &[i32],
    lambda: f32,
) -> Result<Tensor> {
    let (batch, k) = (features.shape()[0], centroids.shape()[0]);
    if k < 2 {
        return shape_err("support_samples", "needs at least two centroids");
    }
    let c = centroids.detach();
    let own: Vec<f32> = (0..batch * k)
        .map(|i| (labels[i / k] == (i % k) as i32) as u8 as f32)
        .collect();
    let own = Tensor::from_slice(&own, &[batch, k], features.device())?;
    let sims = features
        .detach()
        .matmul_t(&c, false, true)?
        .sub(&own.mul_scalar(1e9)?)?;
    let nearest = sims.argmax(1, false)?;
    let c_n = c.index_select(0, &nearest)?;
    let c_y = c.index_select(0, &labels_tensor(labels, &[batch], features.device())?)?;
    features
        .add(&c_n.sub(&c_y)?.mul_scalar(0.5 * lambda)?)?
        .l2_normalize(1)
}

/// ISE's label-preserving loss over features and their supports (same labels), `e = exp(f.s / tau)`:
/// hardest positive = the least similar same-label support; per other identity the hardest
/// negative = its most similar support; `mean_i -log(pos / (pos + sum neg))`.
pub fn label_preserving(
    features: &Tensor,
    supports: &Tensor,
    labels: &[i32],
    tau: f32,
) -> Result<Tensor> {
    let batch = labels.len();
    let device = features.device();
    let logits = features
        .matmul_t(supports, false, true)?
        .mul_scalar(1.0 / tau)?;
    let mut ids: Vec<i32> = labels.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let mask = |pred: &dyn Fn(usize, usize) -> bool| -> Result<Tensor> {
        let v: Vec<f32> = (0..batch * batch)
            .map(|k| pred(k / batch, k % batch) as u8 as f32)
            .collect();
        Tensor::from_slice(&v, &[batch, batch], device)
    };
    // Positive: min over same-label columns (others pushed to +1e9).
    let same = mask(&|i, j| labels[i] == labels[j])?;
    let pos = logits
        .add(&same.neg()?.add_scalar(1.0)?.mul_scalar(1e9)?)?
        .min(1, true)?;
    let mut columns = vec![pos];
    for &id in &ids {
        // Max over identity `id`'s columns; rows of that identity are excluded (-1e9).
        let block = mask(&|i, j| labels[j] == id && labels[i] != id)?;
        let neg = logits
            .add(&block.add_scalar(-1.0)?.mul_scalar(1e9)?)?
            .max(1, true)?;
        let own_row: Vec<f32> = labels
            .iter()
            .map(|&l| if l == id { -1e9 } else { 0.0 })
            .collect();
        columns.push(neg.add(&Tensor::from_slice(&own_row, &[batch, 1], device)?)?);
    }
    let refs: Vec<&Tensor> = columns.iter().collect();
    let all = Tensor::concat(&refs, 1)?.log_softmax()?;
    all.narrow(1, 0, 1)?.mean_all()?.neg()
}
