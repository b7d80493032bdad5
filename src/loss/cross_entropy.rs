//! Cross-entropy with label smoothing, MMT's soft cross-entropy, and symmetric cross-entropy.

use super::labels_tensor;
use crate::error::shape_err;
use crate::{Result, Tensor};

fn check_logits(op: &'static str, logits: &Tensor, labels: &[i32]) -> Result<(usize, usize)> {
    if logits.rank() != 2 || logits.shape()[0] != labels.len() {
        return shape_err(
            op,
            format!(
                "logits {:?} need shape [{}, classes]",
                logits.shape(),
                labels.len()
            ),
        );
    }
    let classes = logits.shape()[1];
    if let Some(bad) = labels.iter().find(|&&l| l >= classes as i32 || l < -1) {
        return shape_err(
            op,
            format!("label {bad} is outside 0..{classes} (-1 marks an unlabelled row)"),
        );
    }
    Ok((labels.len(), classes))
}

/// Mean over labelled rows of `-sum_k t_k log softmax(z)_k` with `t = (1-eps) onehot(y) + eps/C`.
/// Rows labelled -1 are ignored; a batch with no labelled row gives 0.
pub fn cross_entropy(logits: &Tensor, labels: &[i32], eps: f32) -> Result<Tensor> {
    let (batch, _) = check_logits("cross_entropy", logits, labels)?;
    let device = logits.device();
    let valid: Vec<f32> = labels.iter().map(|&l| (l >= 0) as u8 as f32).collect();
    let count = valid.iter().sum::<f32>().max(1.0);
    let clamped: Vec<i32> = labels.iter().map(|&l| l.max(0)).collect();
    let logp = logits.log_softmax()?;
    let picked = logp
        .gather(1, &labels_tensor(&clamped, &[batch, 1], device)?)?
        .reshape(&[batch])?;
    let smooth = logp.mean(1, false)?;
    let per_row = picked
        .mul_scalar(1.0 - eps)?
        .add(&smooth.mul_scalar(eps)?)?;
    let mask = crate::Tensor::from_slice(&valid, &[batch], device)?;
    per_row.mul(&mask)?.sum_all()?.mul_scalar(-1.0 / count)
}

/// MMT's soft cross-entropy: `-sum_k softmax(teacher)_k log softmax(student)_k`, batch mean;
/// the teacher is detached.
pub fn soft_cross_entropy(student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
    if student.shape() != teacher.shape() || student.rank() != 2 {
        return shape_err(
            "soft_cross_entropy",
            format!(
                "student {:?} vs teacher {:?}",
                student.shape(),
                teacher.shape()
            ),
        );
    }
    let target = teacher.detach().softmax()?;
    let batch = student.shape()[0] as f32;
    target
        .mul(&student.log_softmax()?)?
        .sum_all()?
        .mul_scalar(-1.0 / batch)
}

/// ProDA's symmetric cross-entropy `alpha * CE(z, y) + beta * RCE(z, y)`, batch mean, with the
/// reverse cross-entropy as microsoft/ProDA's `CustomModel.rce` computes it:
/// `p = clamp(softmax(z), 1e-7, 1)`, `RCE = -sum_k p_k log clamp(onehot(y)_k, 1e-4, 1)`
/// `= -log(1e-4) * sum_{k != y} p_k` (the clamp of p keeps a tiny floor under every class and
/// stops the gradient there, as in the reference). CE is plain (no label smoothing). ProDA's
/// stage-1 command uses alpha 0.1, beta 1 (`--rce`, `rce_alpha`, `rce_beta`); Wang et al.,
/// "Symmetric Cross Entropy for Robust Learning with Noisy Labels" (ICCV 2019).
/// `logits` [B, C]; every row needs a label in 0..C.
pub fn symmetric_cross_entropy(
    logits: &Tensor,
    labels: &[i32],
    alpha: f32,
    beta: f32,
) -> Result<Tensor> {
    let (batch, _) = check_logits("symmetric_cross_entropy", logits, labels)?;
    if labels.contains(&-1) {
        return shape_err("symmetric_cross_entropy", "every row needs a label");
    }
    let ce = cross_entropy(logits, labels, 0.0)?;
    let p = logits.softmax()?.clamp(1e-7, 1.0)?;
    let p_y = p.gather(1, &labels_tensor(labels, &[batch, 1], logits.device())?)?;
    let rce = p
        .sum(1, true)?
        .sub(&p_y)?
        .mean_all()?
        .mul_scalar(-(1e-4f32).ln())?;
    ce.mul_scalar(alpha)?.add(&rce.mul_scalar(beta)?)
}
