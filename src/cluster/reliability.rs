//! SpCL's self-paced reliability criterion (shared/ALGORITHMS.md section 4), as SpCL's training
//! script computes it, but from contingency counts between labelings instead of N x N masks.
//!
//! For a sample with normal-run cluster I (an outlier is its own singleton), `r_indep = 1 -
//! IoU(I, I_loose)` and `r_comp = 1 - IoU(I, I_tight)` (f32, as the reference's float masks give).
//! A cluster's scores are the minima over its members. The independence threshold is, at epoch 0,
//! the value at index `min(n - 1, round(0.9 n))` of the sorted scores of the n non-singleton
//! clusters (numpy rounding: half to even). A sample keeps its cluster if the cluster's
//! independence score <= threshold and its own `r_comp` <= the cluster's; every other sample
//! becomes a new singleton.

use super::ClusterError;
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq)]
pub struct SelfPacedResult {
    /// Final pseudo labels, all >= 0: kept clusters keep their normal-run id, every unclustered or
    /// rejected sample gets a unique id after them (the reference's numbering).
    pub labels: Vec<i64>,
    pub r_comp: Vec<f32>,
    pub r_indep: Vec<f32>,
    /// The independence threshold used (computed here when none was given).
    pub indep_threshold: f32,
    /// Number of distinct pseudo labels before filtering (clusters + outlier singletons).
    pub num_pseudo_labels: usize,
}

/// DBSCAN labels (-1 = outlier) to the reference's pseudo labels: cluster ids ranked among the
/// distinct non-negative ids (identity for DBSCAN's 0..m), outliers numbered m, m+1, ... in order.
pub fn pseudo_labels(labels: &[i64]) -> (Vec<usize>, usize) {
    let mut ids: Vec<i64> = labels.iter().copied().filter(|&l| l >= 0).collect();
    ids.sort_unstable();
    ids.dedup();
    let rank: HashMap<i64, usize> = ids.iter().enumerate().map(|(r, &l)| (l, r)).collect();
    let mut next = ids.len();
    let out = labels
        .iter()
        .map(|&l| {
            if l >= 0 {
                rank[&l]
            } else {
                next += 1;
                next - 1
            }
        })
        .collect();
    (out, next)
}

/// Per sample `1 - |A(i) & B(i)| / |A(i) | B(i)|` for two pseudo labelings, from counts.
fn one_minus_iou(a: &[usize], na: usize, b: &[usize], nb: usize) -> Vec<f32> {
    let mut size_a = vec![0u32; na];
    let mut size_b = vec![0u32; nb];
    let mut both: HashMap<(usize, usize), u32> = HashMap::with_capacity(a.len());
    for (&x, &y) in a.iter().zip(b) {
        size_a[x] += 1;
        size_b[y] += 1;
        *both.entry((x, y)).or_insert(0) += 1;
    }
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let inter = both[&(x, y)];
            let union = size_a[x] + size_b[y] - inter;
            1.0 - inter as f32 / union as f32
        })
        .collect()
}

/// Applies the criterion to DBSCAN labelings at the normal, tight and loose eps. `indep_threshold`
/// is None at epoch 0 (computed) and the epoch-0 value afterwards, as SpCL keeps it.
pub fn self_paced_labels(
    normal: &[i64],
    tight: &[i64],
    loose: &[i64],
    indep_threshold: Option<f32>,
) -> Result<SelfPacedResult, ClusterError> {
    let n = normal.len();
    if tight.len() != n || loose.len() != n {
        return Err(ClusterError::Param(format!(
            "labelings differ in length: normal {n}, tight {}, loose {}",
            tight.len(),
            loose.len()
        )));
    }
    let (p_normal, n_normal) = pseudo_labels(normal);
    let (p_tight, n_tight) = pseudo_labels(tight);
    let (p_loose, n_loose) = pseudo_labels(loose);
    let r_comp = one_minus_iou(&p_normal, n_normal, &p_tight, n_tight);
    let r_indep = one_minus_iou(&p_normal, n_normal, &p_loose, n_loose);

    let mut cluster_comp = vec![f32::INFINITY; n_normal];
    let mut cluster_indep = vec![f32::INFINITY; n_normal];
    let mut cluster_size = vec![0usize; n_normal];
    for i in 0..n {
        let c = p_normal[i];
        cluster_comp[c] = cluster_comp[c].min(r_comp[i]);
        cluster_indep[c] = cluster_indep[c].min(r_indep[i]);
        cluster_size[c] += 1;
    }
    let threshold = match indep_threshold {
        Some(t) => t,
        None => {
            let mut scores: Vec<f32> = (0..n_normal)
                .filter(|&c| cluster_size[c] > 1)
                .map(|c| cluster_indep[c])
                .collect();
            if scores.is_empty() {
                // No cluster to judge: the reference would fail here; nothing depends on the value.
                f32::INFINITY
            } else {
                scores.sort_by(f32::total_cmp);
                let at =
                    ((scores.len() as f64 * 0.9).round_ties_even() as usize).min(scores.len() - 1);
                scores[at]
            }
        }
    };
    let mut next = n_normal;
    let labels = (0..n)
        .map(|i| {
            let c = p_normal[i];
            if cluster_indep[c] <= threshold && r_comp[i] <= cluster_comp[c] {
                c as i64
            } else {
                next += 1;
                (next - 1) as i64
            }
        })
        .collect();
    Ok(SelfPacedResult {
        labels,
        r_comp,
        r_indep,
        indep_threshold: threshold,
        num_pseudo_labels: n_normal,
    })
}
