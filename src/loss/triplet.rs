//! Batch-hard mining and the triplet losses of MMT (margin, softmax-triplet, soft softmax-triplet).

use crate::error::shape_err;
use crate::{Result, Tensor};

/// Hardest positive and negative of every anchor.
pub struct Mined {
    /// Largest same-label distance per anchor, [B].
    pub d_ap: Tensor,
    /// Smallest different-label distance per anchor, [B].
    pub d_an: Tensor,
    /// Their column indices (ties: the lowest index), [B, 1] I32.
    pub ap_idx: Tensor,
    pub an_idx: Tensor,
}

/// Batch-hard mining on a [B, B] distance matrix, as the reference's masked sort does.
/// The anchor counts as its own positive, so an identity with a single image in the batch gets
/// `d_ap = d(i, i)` (about 1e-6); a batch with one identity has no negative, and `d_an` is then the
/// distance plus 1e7, which makes the softmax-triplet loss of that anchor zero.
pub fn batch_hard(dist: &Tensor, labels: &[i32]) -> Result<Mined> {
    let b = labels.len();
    if dist.shape() != [b, b] {
        return shape_err(
            "batch_hard",
            format!("distances {:?} need shape [{b}, {b}]", dist.shape()),
        );
    }
    let same: Vec<f32> = (0..b * b)
        .map(|k| (labels[k / b] == labels[k % b]) as u8 as f32)
        .collect();
    let same = Tensor::from_slice(&same, &[b, b], dist.device())?;
    // Push the other class out of reach, as the reference adds -/+9999999 before sorting.
    let pos = dist.add(&same.add_scalar(-1.0)?.mul_scalar(1e7)?)?;
    let neg = dist.add(&same.mul_scalar(1e7)?)?;
    Ok(Mined {
        d_ap: pos.max(1, false)?,
        d_an: neg.min(1, false)?,
        ap_idx: pos.argmax(1, true)?,
        an_idx: neg.argmin(1, true)?,
    })
}

/// `mean(max(0, d_ap - d_an + margin))` (torch MarginRankingLoss with y = 1).
pub fn margin_triplet(m: &Mined, margin: f32) -> Result<Tensor> {
    m.d_ap.sub(&m.d_an)?.add_scalar(margin)?.relu()?.mean_all()
}

/// log softmax over the pair (d_ap, d_an) per anchor, [B, 2].
fn pair_log_softmax(m: &Mined) -> Result<Tensor> {
    let b = m.d_ap.numel();
    Tensor::concat(&[&m.d_ap.reshape(&[b, 1])?, &m.d_an.reshape(&[b, 1])?], 1)?.log_softmax()
}

/// `mean(-log(e^d_an / (e^d_ap + e^d_an)))`.
pub fn softmax_triplet(m: &Mined) -> Result<Tensor> {
    let b = m.d_ap.numel();
    pair_log_softmax(m)?
        .narrow(1, 1, 1)?
        .sum_all()?
        .mul_scalar(-1.0 / b as f32)
}

/// MMT's soft softmax-triplet: the teacher's distances read at the student's mined indices give
/// `q = softmax(d_ap', d_an')` (detached); loss `mean(-[q_p log T_p + q_n log T_n])`.
pub fn soft_softmax_triplet(student: &Mined, teacher_dist: &Tensor) -> Result<Tensor> {
    let b = student.d_ap.numel();
    let t = teacher_dist.detach();
    let ap = t.gather(1, &student.ap_idx)?;
    let an = t.gather(1, &student.an_idx)?;
    let q = Tensor::concat(&[&ap, &an], 1)?.softmax()?;
    q.mul(&pair_log_softmax(student)?)?
        .sum_all()?
        .mul_scalar(-1.0 / b as f32)
}
