//! Pseudo-label quality against ground-truth ids (shared/ALGORITHMS.md section 9): NMI with
//! arithmetic-mean normalisation and ARI as sklearn's `normalized_mutual_info_score` /
//! `adjusted_rand_score` define them, and pairwise precision / recall / F-score over same-cluster
//! pairs; all from contingency counts in O(N), never from N x N pairs.

use super::ClusterError;
use serde::Serialize;
use std::collections::HashMap;

/// Agreement of a clustering with the true ids.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LabelQuality {
    pub nmi: f64,
    pub ari: f64,
    /// Fraction of same-cluster pairs that share an id (1 when no pair is clustered together).
    pub pairwise_precision: f64,
    /// Fraction of same-id pairs that share a cluster (1 when no two images share an id).
    pub pairwise_recall: f64,
    pub pairwise_f: f64,
}

fn pairs(n: u64) -> f64 {
    (n * n.saturating_sub(1) / 2) as f64
}

/// Quality of `clusters` (negative = outlier, each its own singleton) against `truth` (ids).
pub fn label_quality(clusters: &[i64], truth: &[i64]) -> Result<LabelQuality, ClusterError> {
    let n = clusters.len();
    if truth.len() != n {
        return Err(ClusterError::Param(format!(
            "{n} cluster labels for {} ground-truth ids",
            truth.len()
        )));
    }
    if n == 0 {
        return Err(ClusterError::Param("no labels to score".into()));
    }
    // Dense ids; every outlier gets a fresh cluster.
    let dense = |labels: &[i64], outliers_single: bool| -> (Vec<usize>, usize) {
        let mut map: HashMap<i64, usize> = HashMap::new();
        let mut next = 0usize;
        let out = labels
            .iter()
            .map(|&l| {
                if outliers_single && l < 0 {
                    next += 1;
                    next - 1
                } else {
                    *map.entry(l).or_insert_with(|| {
                        next += 1;
                        next - 1
                    })
                }
            })
            .collect();
        (out, next)
    };
    let (a, na) = dense(clusters, true);
    let (b, nb) = dense(truth, false);
    let mut size_a = vec![0u64; na];
    let mut size_b = vec![0u64; nb];
    let mut joint: HashMap<(usize, usize), u64> = HashMap::with_capacity(n);
    for (&x, &y) in a.iter().zip(&b) {
        size_a[x] += 1;
        size_b[y] += 1;
        *joint.entry((x, y)).or_insert(0) += 1;
    }
    let nf = n as f64;
    let entropy = |sizes: &[u64]| -> f64 {
        sizes
            .iter()
            .filter(|&&s| s > 0)
            .map(|&s| {
                let p = s as f64 / nf;
                -p * p.ln()
            })
            .sum()
    };
    let (ha, hb) = (entropy(&size_a), entropy(&size_b));
    let mi: f64 = joint
        .iter()
        .map(|(&(x, y), &c)| {
            let c = c as f64;
            c / nf * (nf * c / (size_a[x] as f64 * size_b[y] as f64)).ln()
        })
        .sum();
    // sklearn: both labelings constant -> 1.
    let nmi = if ha == 0.0 && hb == 0.0 {
        1.0
    } else {
        let denom = 0.5 * (ha + hb);
        if denom <= 0.0 {
            0.0
        } else {
            (mi / denom).clamp(0.0, 1.0)
        }
    };
    let same_both: f64 = joint.values().map(|&c| pairs(c)).sum();
    let same_a: f64 = size_a.iter().map(|&s| pairs(s)).sum();
    let same_b: f64 = size_b.iter().map(|&s| pairs(s)).sum();
    let total = pairs(n as u64);
    let expected = if total > 0.0 {
        same_a * same_b / total
    } else {
        0.0
    };
    let max_index = 0.5 * (same_a + same_b);
    // sklearn's special cases: one class each, or all singletons on both sides, give 1.
    let ari = if na == 1 && nb == 1 || na == n && nb == n {
        1.0
    } else {
        (same_both - expected) / (max_index - expected)
    };
    let precision = if same_a > 0.0 {
        same_both / same_a
    } else {
        1.0
    };
    let recall = if same_b > 0.0 {
        same_both / same_b
    } else {
        1.0
    };
    let f = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Ok(LabelQuality {
        nmi,
        ari,
        pairwise_precision: precision,
        pairwise_recall: recall,
        pairwise_f: f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hand_computed_sklearn_values() {
        // sklearn: adjusted_rand_score([0,0,1,1],[0,0,1,2]) = 0.5714285714285715,
        // normalized_mutual_info_score(...) = 0.8000000000000001 (arithmetic).
        let q = label_quality(&[0, 0, 1, 2], &[0, 0, 1, 1]).unwrap();
        assert!((q.ari - 4.0 / 7.0).abs() < 1e-12, "{q:?}");
        assert!((q.nmi - 0.8).abs() < 1e-12, "{q:?}");
        // Same-cluster pairs: (0,1) -> precision 1; same-id pairs (0,1),(2,3) -> recall 1/2.
        assert_eq!(q.pairwise_precision, 1.0);
        assert_eq!(q.pairwise_recall, 0.5);
        let perfect = label_quality(&[5, 5, 7], &[1, 1, 2]).unwrap();
        assert_eq!((perfect.nmi, perfect.ari), (1.0, 1.0));
        // Outliers are singletons: two outliers of one id are not a same-cluster pair.
        let o = label_quality(&[-1, -1, 0, 0], &[3, 3, 4, 4]).unwrap();
        assert_eq!(o.pairwise_precision, 1.0);
        assert_eq!(o.pairwise_recall, 0.5);
    }
}
