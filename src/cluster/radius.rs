//! The eps-neighbourhood graph under a plain distance (Euclidean or cosine), for DBSCAN without
//! Jaccard. Exact: every pair within eps is found from the blocked Gram tiles, nothing is dense.

use super::tiles::{for_each_symmetric_tile, TILE};
use super::{Backend, ClusterError, Features, SparseGraph};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlainDistance {
    /// `sqrt(|x - y|^2)`, as sklearn's `metric='euclidean'` (not squared).
    Euclidean,
    /// `1 - x.y / (|x| |y|)`, as sklearn's `metric='cosine'`.
    Cosine,
}

impl PlainDistance {
    #[inline]
    fn eval(self, norm_i: f32, norm_j: f32, gram: f32) -> f32 {
        match self {
            PlainDistance::Euclidean => (norm_i + norm_j - 2.0 * gram).max(0.0).sqrt(),
            PlainDistance::Cosine => {
                let denom = (norm_i * norm_j).sqrt();
                if denom > 0.0 {
                    1.0 - gram / denom
                } else {
                    1.0
                }
            }
        }
    }
}

/// Every pair i != j with distance <= `eps_max`.
pub fn radius_graph(
    backend: Backend,
    x: Features<'_>,
    distance: PlainDistance,
    eps_max: f32,
) -> Result<SparseGraph, ClusterError> {
    if !eps_max.is_finite() || eps_max < 0.0 {
        return Err(ClusterError::Param(format!(
            "eps = {eps_max} must be a finite non-negative number"
        )));
    }
    let n = x.rows;
    let norms = x.squared_norms();
    let found: Mutex<Vec<(u32, u32, f32)>> = Mutex::new(Vec::new());
    for_each_symmetric_tile(backend, x, TILE, |t| {
        let mut local = Vec::new();
        for a in 0..t.rows {
            let i = t.row0 + a;
            let first = if t.is_diagonal() { a + 1 } else { 0 };
            let g = &t.gram[a * t.cols..(a + 1) * t.cols];
            for (b, &gv) in g.iter().enumerate().skip(first) {
                let j = t.col0 + b;
                let d = distance.eval(norms[i], norms[j], gv);
                if d <= eps_max {
                    local.push((i as u32, j as u32, d));
                }
            }
        }
        if !local.is_empty() {
            found
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(local);
        }
    })?;
    let mut edges = found.into_inner().unwrap_or_else(|e| e.into_inner());
    edges.sort_unstable_by_key(|&(i, j, _)| (i, j));
    let mut offsets = vec![0usize; n + 1];
    for &(i, _, _) in &edges {
        offsets[i as usize + 1] += 1;
    }
    for i in 0..n {
        offsets[i + 1] += offsets[i];
    }
    let upper: Vec<(u32, f32)> = edges.into_iter().map(|(_, j, d)| (j, d)).collect();
    Ok(SparseGraph::from_upper(&offsets, &upper, eps_max, None))
}
