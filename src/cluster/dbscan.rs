//! DBSCAN on a sparse distance graph, equal to sklearn's `DBSCAN(metric='precomputed')`.
//!
//! sklearn: a point's neighbourhood is every j with d(i,j) <= eps, the point itself included;
//! core points have at least `min_samples` of them; clusters are grown depth-first from the
//! lowest-index unlabelled core point, so cluster ids follow each cluster's lowest core index and a
//! border point reachable from several clusters takes the one discovered first, i.e. the lowest
//! id. Union-find over core-core edges plus that border rule gives the very same labels.
//!
//! Distances are compared in f32 (`d <= eps as f32`), as numpy compares a float32 matrix with a
//! Python float.

use super::{ClusterError, SparseGraph};
use rayon::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbscanResult {
    /// Cluster id per point, -1 for outliers.
    pub labels: Vec<i64>,
    pub num_clusters: usize,
    pub num_outliers: usize,
}

fn find(parent: &mut [u32], mut a: u32) -> u32 {
    while parent[a as usize] != a {
        let p = parent[a as usize];
        parent[a as usize] = parent[p as usize];
        a = p;
    }
    a
}

/// DBSCAN labels at one eps. `eps` must not exceed the graph's `eps_max`, unless the graph knows
/// every absent pair's distance (Jaccard: 1) and eps >= that distance, in which case every pair is a
/// neighbour.
pub fn dbscan(
    graph: &SparseGraph,
    eps: f32,
    min_samples: usize,
) -> Result<DbscanResult, ClusterError> {
    let n = graph.num_nodes();
    if !eps.is_finite() || eps < 0.0 {
        return Err(ClusterError::Param(format!(
            "eps = {eps} must be a finite non-negative number"
        )));
    }
    if let Some(absent) = graph.absent_distance {
        if eps >= absent {
            // Everything is within eps of everything: one cluster, or nothing if too few points.
            let dense = n >= min_samples && n > 0;
            let labels = vec![if dense { 0 } else { -1 }; n];
            return Ok(DbscanResult {
                labels,
                num_clusters: usize::from(dense),
                num_outliers: if dense { 0 } else { n },
            });
        }
    }
    if eps > graph.eps_max {
        return Err(ClusterError::Param(format!(
            "eps = {eps} exceeds the largest distance kept in the graph ({})",
            graph.eps_max
        )));
    }
    let is_core: Vec<bool> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (_, d) = graph.row(i);
            1 + d.iter().filter(|&&v| v <= eps).count() >= min_samples
        })
        .collect();

    // Union by smaller index: each root is the lowest core index of its component.
    let mut parent: Vec<u32> = (0..n as u32).collect();
    for i in 0..n {
        if !is_core[i] {
            continue;
        }
        let (nbrs, d) = graph.row(i);
        for (&j, &dist) in nbrs.iter().zip(d) {
            if (j as usize) > i && dist <= eps && is_core[j as usize] {
                let (a, b) = (find(&mut parent, i as u32), find(&mut parent, j));
                if a != b {
                    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                    parent[hi as usize] = lo;
                }
            }
        }
    }
    let mut labels = vec![-1i64; n];
    let mut num_clusters = 0usize;
    for i in 0..n {
        if is_core[i] {
            let root = find(&mut parent, i as u32) as usize;
            if root == i {
                labels[i] = num_clusters as i64;
                num_clusters += 1;
            } else {
                // root < i was labelled earlier in this loop.
                labels[i] = labels[root];
            }
        }
    }
    let border: Vec<(usize, i64)> = (0..n)
        .into_par_iter()
        .filter(|&i| !is_core[i])
        .filter_map(|i| {
            let (nbrs, d) = graph.row(i);
            nbrs.iter()
                .zip(d)
                .filter(|&(&j, &dist)| dist <= eps && is_core[j as usize])
                .map(|(&j, _)| labels[j as usize])
                .min()
                .map(|l| (i, l))
        })
        .collect();
    for (i, l) in border {
        labels[i] = l;
    }
    let num_outliers = labels.iter().filter(|&&l| l < 0).count();
    Ok(DbscanResult {
        labels,
        num_clusters,
        num_outliers,
    })
}

/// DBSCAN at several eps values (e.g. SpCL's tight / normal / loose) from one graph, in parallel.
pub fn dbscan_many(
    graph: &SparseGraph,
    eps: &[f32],
    min_samples: usize,
) -> Result<Vec<DbscanResult>, ClusterError> {
    eps.par_iter()
        .map(|&e| dbscan(graph, e, min_samples))
        .collect()
}
