//! The pseudo-labelling pipeline every clustering-based method runs once per epoch, and that
//! `unreid cluster` runs on a features file: kNN -> k-reciprocal Jaccard graph -> DBSCAN at one or
//! three eps (SpCL's normal / tight / loose) -> self-paced reliability, or k-means
//! (shared/ALGORITHMS.md sections 3, 4, 5 and 8).

use super::{
    dbscan_many, jaccard_graph, kmeans, knn, radius_graph, self_paced_labels, Backend,
    ClusterError, Features, JaccardParams, KmeansParams, PlainDistance, SelfPacedResult,
    SparseGraph,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Instant;

/// The clustering algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ClusterAlgo {
    /// DBSCAN on a sparse distance graph (SpCL, Cluster Contrast, ISE, MMT's DBSCAN variant).
    Dbscan,
    /// k-means++ then Lloyd iterations (MMT's default).
    Kmeans,
}

impl std::fmt::Display for ClusterAlgo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClusterAlgo::Dbscan => "dbscan",
            ClusterAlgo::Kmeans => "kmeans",
        })
    }
}

/// The distance DBSCAN (or k-means) works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ClusterDistance {
    /// k-reciprocal Jaccard distance (SpCL / Cluster Contrast), DBSCAN only.
    Jaccard,
    Euclidean,
    /// 1 - cosine similarity (for k-means: rows are L2-normalised first).
    Cosine,
}

impl std::fmt::Display for ClusterDistance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ClusterDistance::Jaccard => "jaccard",
            ClusterDistance::Euclidean => "euclidean",
            ClusterDistance::Cosine => "cosine",
        })
    }
}

/// Where DBSCAN's radius comes from (`cluster.eps_from`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum EpsFrom {
    /// `cluster.eps` itself, at every clustering (SpCL, Cluster Contrast, ISE; MMT / ProDA on
    /// request).
    Fixed,
    /// MMT's automatic eps (yxgeee/MMT `mmt_train_dbscan.py`): the mean of the smallest
    /// `cluster.rho` fraction of the N(N-1)/2 upper-triangle Jaccard distances ([`rho_eps`]).
    /// [`pseudo_labels`] derives it at every call; MMT and ProDA derive it at epoch 0 and keep
    /// it. Needs `distance = "jaccard"`.
    Rho,
}

impl std::fmt::Display for EpsFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EpsFrom::Fixed => "fixed",
            EpsFrom::Rho => "rho",
        })
    }
}

/// How to pseudo-label. Defaults: SpCL's (Jaccard k1 30 / k2 6, DBSCAN at the fixed eps 0.6,
/// min 4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub algo: ClusterAlgo,
    /// Distance; DBSCAN defaults to Jaccard.
    pub distance: ClusterDistance,
    /// Jaccard: kNN list length (self included).
    pub k1: usize,
    /// Jaccard: neighbours averaged by query expansion (self included).
    pub k2: usize,
    /// DBSCAN radius (inclusive, in the units of `distance`); used when `eps_from = "fixed"`.
    pub eps: f32,
    /// DBSCAN: neighbours (the point itself included) that make a core point.
    pub min_samples: usize,
    /// SpCL's self-paced mode: also cluster at eps -/+ this gap (tight / loose) and apply the
    /// reliability criterion. None: one DBSCAN run.
    pub eps_gap: Option<f32>,
    /// DBSCAN: `fixed` (use `eps`) or `rho` (derive the eps from `rho`, MMT's automatic eps).
    pub eps_from: EpsFrom,
    /// MMT's automatic eps: the fraction (0, 1] of the N(N-1)/2 upper-triangle distances whose
    /// mean is the eps (1.6e-3 in MMT); used when `eps_from = "rho"`. A fraction of all pairs,
    /// so its eps depends on N: MMT's 1.6e-3 was tuned for Market-1501's 12,936 images.
    pub rho: f64,
    /// k-means: number of clusters.
    pub k: usize,
    /// k-means: maximum Lloyd iterations.
    pub max_iter: usize,
    /// k-means: seed of the k-means++ initialisation.
    pub seed: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            algo: ClusterAlgo::Dbscan,
            distance: ClusterDistance::Jaccard,
            k1: 30,
            k2: 6,
            eps: 0.6,
            min_samples: 4,
            eps_gap: None,
            eps_from: EpsFrom::Fixed,
            rho: 1.6e-3,
            k: 500,
            max_iter: 300,
            seed: 0,
        }
    }
}

impl ClusterConfig {
    /// Checks the settings against each other and against the number of points, before any work.
    pub fn validate(&self, num_points: usize) -> Result<(), ClusterError> {
        let param = |m: String| Err(ClusterError::Param(m));
        if num_points == 0 {
            return param("no feature rows to cluster".into());
        }
        match self.algo {
            ClusterAlgo::Kmeans => {
                if self.distance == ClusterDistance::Jaccard {
                    return param(
                        "distance jaccard is not defined for k-means (use euclidean or cosine)"
                            .into(),
                    );
                }
                if self.k == 0 || self.k > num_points {
                    return param(format!(
                        "k-means k = {} must lie in 1..={num_points} (the number of points)",
                        self.k
                    ));
                }
            }
            ClusterAlgo::Dbscan => {
                if !(self.eps.is_finite() && self.eps >= 0.0) {
                    return param(format!(
                        "eps {} must be a finite non-negative number",
                        self.eps
                    ));
                }
                if self.min_samples == 0 {
                    return param("min_samples must be at least 1".into());
                }
                if let Some(gap) = self.eps_gap {
                    if !(gap.is_finite() && gap >= 0.0 && gap <= self.eps) {
                        return param(format!("eps_gap {gap} must lie in [0, eps = {}]", self.eps));
                    }
                }
                if self.eps_from == EpsFrom::Rho {
                    let rho = self.rho;
                    if !(rho > 0.0 && rho <= 1.0) {
                        return param(format!("rho {rho} must lie in (0, 1]"));
                    }
                    if self.distance != ClusterDistance::Jaccard {
                        return param(format!(
                            "eps_from = \"rho\" (the automatic eps) needs distance = \"jaccard\", got distance = \"{}\"; set eps_from = \"fixed\" to cluster at eps",
                            self.distance
                        ));
                    }
                    if num_points < self.min_samples.max(2) {
                        return param(format!(
                            "only {num_points} images to cluster, fewer than min_samples = {}",
                            self.min_samples
                        ));
                    }
                }
                if self.distance == ClusterDistance::Jaccard
                    && (self.k1 > num_points || self.k2 == 0 || self.k2 > self.k1)
                {
                    return param(format!(
                        "Jaccard needs 1 <= k2 <= k1 <= {num_points} (the number of points), got k1 = {}, k2 = {}",
                        self.k1, self.k2
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The result of one pseudo-labelling.
#[derive(Clone, Debug, PartialEq)]
pub struct PseudoLabels {
    /// Cluster per point (-1 = DBSCAN outlier): the normal-eps run, or k-means.
    pub labels: Vec<i64>,
    pub num_clusters: usize,
    pub num_outliers: usize,
    /// The eps DBSCAN used (derived from rho when asked), None for k-means.
    pub eps: Option<f32>,
    /// SpCL's tight / loose runs and the reliability-filtered labels (with `eps_gap`).
    pub tight: Option<Vec<i64>>,
    pub loose: Option<Vec<i64>>,
    pub self_paced: Option<SelfPacedResult>,
    /// Undirected edges of the distance graph DBSCAN ran on.
    pub graph_edges: Option<usize>,
    /// k-means: inertia and Lloyd iterations.
    pub kmeans_inertia: Option<f64>,
    pub kmeans_iterations: Option<usize>,
    /// Seconds per stage (knn, jaccard, radius_graph, dbscan, self_paced, kmeans).
    pub seconds: BTreeMap<String, f64>,
}

/// The mean of the smallest `rho` fraction of all N(N-1)/2 pair distances of a graph (at least one
/// pair), as MMT fixes DBSCAN's eps at epoch 0. Pairs absent from the graph are at its
/// `absent_distance` (Jaccard: 1); a graph without that knowledge must hold enough edges.
pub fn rho_eps(graph: &SparseGraph, rho: f64) -> Result<f32, ClusterError> {
    let n = graph.num_nodes() as u64;
    let pairs = n * n.saturating_sub(1) / 2;
    let take = ((pairs as f64 * rho).round() as u64).max(1);
    if pairs == 0 {
        return Err(ClusterError::Param(
            "the automatic eps needs at least two points".into(),
        ));
    }
    let mut upper: Vec<f32> = (0..graph.num_nodes())
        .flat_map(|i| {
            let (nb, d) = graph.row(i);
            nb.iter()
                .zip(d)
                .filter(move |(&j, _)| j as usize > i)
                .map(|(_, &d)| d)
        })
        .collect();
    upper.sort_by(f32::total_cmp);
    let stored = upper.len() as u64;
    let from_graph = take.min(stored) as usize;
    let mut sum: f64 = upper[..from_graph].iter().map(|&d| d as f64).sum();
    if take > stored {
        let Some(absent) = graph.absent_distance else {
            return Err(ClusterError::Param(format!(
                "the automatic eps needs the smallest {take} distances but the graph holds {stored}"
            )));
        };
        sum += (take - stored) as f64 * absent as f64;
    }
    Ok((sum / take as f64) as f32)
}

/// Pseudo labels of `x` ([N, D] rows) by `cfg`. DBSCAN's eps: `eps_override` when given (an eps
/// fixed at epoch 0 by `rho`), else `cfg.eps` (`eps_from = "fixed"`) or the rho eps of this call's
/// graph (`eps_from = "rho"`); `indep_threshold` is SpCL's independence threshold once fixed (None: computed
/// from this clustering). Errors name the setting at fault.
pub fn pseudo_labels(
    backend: Backend,
    x: Features<'_>,
    cfg: &ClusterConfig,
    eps_override: Option<f32>,
    indep_threshold: Option<f32>,
) -> Result<PseudoLabels, ClusterError> {
    cfg.validate(x.rows)?;
    let mut seconds = BTreeMap::new();
    let mut stage = |name: &str, start: Instant| {
        seconds.insert(name.to_string(), start.elapsed().as_secs_f64());
    };
    match cfg.algo {
        ClusterAlgo::Kmeans => {
            let normalised;
            let x = if cfg.distance == ClusterDistance::Cosine {
                let mut rows = x.data.to_vec();
                for row in rows.chunks_mut(x.dim) {
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    if norm > 0.0 {
                        row.iter_mut().for_each(|v| *v /= norm);
                    }
                }
                normalised = rows;
                Features::new(&normalised, x.rows, x.dim)?
            } else {
                x
            };
            let t = Instant::now();
            let params = KmeansParams {
                k: cfg.k,
                max_iter: cfg.max_iter,
                tol: 1e-4,
                seed: cfg.seed,
            };
            let r = kmeans(backend, x, params)?;
            stage("kmeans", t);
            let mut seen = vec![false; cfg.k];
            r.labels.iter().for_each(|&l| seen[l as usize] = true);
            Ok(PseudoLabels {
                num_clusters: seen.iter().filter(|&&s| s).count(),
                num_outliers: 0,
                labels: r.labels,
                eps: None,
                tight: None,
                loose: None,
                self_paced: None,
                graph_edges: None,
                kmeans_inertia: Some(r.inertia),
                kmeans_iterations: Some(r.iterations),
                seconds,
            })
        }
        ClusterAlgo::Dbscan => {
            let fixed_eps = eps_override.or((cfg.eps_from == EpsFrom::Fixed).then_some(cfg.eps));
            let gap = cfg.eps_gap.unwrap_or(0.0);
            // Without a fixed eps the graph must hold every pair with shared support (Jaccard) so
            // the rho quantile can be read from it.
            let eps_max = match fixed_eps {
                Some(e) => e + gap,
                None => 1.0,
            };
            let graph = match cfg.distance {
                ClusterDistance::Jaccard => {
                    let t = Instant::now();
                    let nb = knn(backend, x, cfg.k1)?;
                    stage("knn", t);
                    let t = Instant::now();
                    let g = jaccard_graph(
                        x,
                        &nb,
                        JaccardParams {
                            k1: cfg.k1,
                            k2: cfg.k2,
                        },
                        eps_max.min(1.0),
                    )?;
                    stage("jaccard", t);
                    g
                }
                ClusterDistance::Euclidean | ClusterDistance::Cosine => {
                    let kind = if cfg.distance == ClusterDistance::Euclidean {
                        PlainDistance::Euclidean
                    } else {
                        PlainDistance::Cosine
                    };
                    if fixed_eps.is_none() {
                        return Err(ClusterError::Param(
                            "the automatic eps (rho) needs the Jaccard distance".into(),
                        ));
                    }
                    let t = Instant::now();
                    let g = radius_graph(backend, x, kind, eps_max)?;
                    stage("radius_graph", t);
                    g
                }
            };
            let eps = match fixed_eps {
                Some(e) => e,
                None => rho_eps(&graph, cfg.rho)?,
            };
            let t = Instant::now();
            let eps_list = if cfg.eps_gap.is_some() {
                vec![eps, eps - gap, eps + gap]
            } else {
                vec![eps]
            };
            let mut runs = dbscan_many(&graph, &eps_list, cfg.min_samples)?.into_iter();
            stage("dbscan", t);
            let normal = runs
                .next()
                .ok_or_else(|| ClusterError::Param("DBSCAN returned no labelling".into()))?;
            let (tight, loose) = (runs.next(), runs.next());
            let self_paced = match (&tight, &loose) {
                (Some(tight), Some(loose)) => {
                    let t = Instant::now();
                    let sp = self_paced_labels(
                        &normal.labels,
                        &tight.labels,
                        &loose.labels,
                        indep_threshold,
                    )?;
                    stage("self_paced", t);
                    Some(sp)
                }
                _ => None,
            };
            Ok(PseudoLabels {
                labels: normal.labels,
                num_clusters: normal.num_clusters,
                num_outliers: normal.num_outliers,
                eps: Some(eps),
                tight: tight.map(|r| r.labels),
                loose: loose.map(|r| r.labels),
                self_paced,
                graph_edges: Some(graph.num_edges() / 2),
                kmeans_inertia: None,
                kmeans_iterations: None,
                seconds,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rho_eps_averages_the_smallest_pairs_and_fills_absent_ones() {
        // 4 nodes, 6 pairs; stored edges 0.2 (0-1) and 0.4 (2-3); absent pairs are at 1.
        let upper_offsets = [0, 1, 1, 2, 2];
        let upper = [(1u32, 0.2f32), (3u32, 0.4f32)];
        let g = SparseGraph::from_upper(&upper_offsets, &upper, 0.9, Some(1.0));
        // rho 1/6 -> 1 pair: 0.2; rho 0.5 -> 3 pairs: (0.2 + 0.4 + 1) / 3.
        assert!((rho_eps(&g, 1.0 / 6.0).unwrap() - 0.2).abs() < 1e-6);
        assert!((rho_eps(&g, 0.5).unwrap() - 1.6 / 3.0).abs() < 1e-6);
        // A tiny rho still uses one pair.
        assert!((rho_eps(&g, 1e-9).unwrap() - 0.2).abs() < 1e-6);
        let no_absent = SparseGraph::from_upper(&upper_offsets, &upper, 0.9, None);
        assert!(rho_eps(&no_absent, 0.5).is_err());
    }

    #[test]
    fn the_automatic_eps_is_refused_before_clustering_without_jaccard() {
        let cfg = ClusterConfig {
            distance: ClusterDistance::Euclidean,
            eps_from: EpsFrom::Rho,
            ..ClusterConfig::default()
        };
        let err = cfg.validate(100).unwrap_err().to_string();
        assert!(
            err.contains("eps_from") && err.contains("distance") && err.contains("jaccard"),
            "{err}"
        );
        let jaccard = ClusterConfig {
            eps_from: EpsFrom::Rho,
            ..ClusterConfig::default()
        };
        jaccard.validate(100).unwrap();
        // The same rho under eps_from = "fixed" is not read: a Euclidean DBSCAN at eps is fine.
        let fixed = ClusterConfig {
            distance: ClusterDistance::Euclidean,
            rho: 2.0,
            ..ClusterConfig::default()
        };
        fixed.validate(100).unwrap();
        let bad_rho = ClusterConfig {
            eps_from: EpsFrom::Rho,
            rho: 0.0,
            ..ClusterConfig::default()
        };
        assert!(bad_rho
            .validate(100)
            .unwrap_err()
            .to_string()
            .contains("rho"));
    }

    /// Four tight pairs far apart on a circle, as L2-normalised rows.
    fn four_pairs() -> Vec<f32> {
        (0..8)
            .flat_map(|i| {
                let a = (i / 2) as f32 * std::f32::consts::FRAC_PI_2 + (i % 2) as f32 * 0.05;
                [a.cos(), a.sin()]
            })
            .collect()
    }

    #[test]
    fn a_fixed_eps_is_cfg_eps_and_rho_derives_one_from_the_graph() {
        let x = four_pairs();
        let feats = Features::new(&x, 8, 2).unwrap();
        let fixed = ClusterConfig {
            k1: 4,
            k2: 2,
            eps: 0.55,
            min_samples: 2,
            ..ClusterConfig::default()
        };
        let r = pseudo_labels(Backend::Cpu, feats, &fixed, None, None).unwrap();
        assert_eq!(r.eps, Some(0.55));
        // The override (an eps fixed earlier) wins over both.
        let r = pseudo_labels(Backend::Cpu, feats, &fixed, Some(0.3), None).unwrap();
        assert_eq!(r.eps, Some(0.3));
        let rho = ClusterConfig {
            eps_from: EpsFrom::Rho,
            rho: 0.1,
            ..fixed.clone()
        };
        let r = pseudo_labels(Backend::Cpu, feats, &rho, None, None).unwrap();
        // 28 pairs, rho 0.1 -> the mean of the 3 smallest Jaccard distances of the graph.
        let nb = knn(Backend::Cpu, feats, 4).unwrap();
        let g = jaccard_graph(feats, &nb, JaccardParams { k1: 4, k2: 2 }, 1.0).unwrap();
        let expected = rho_eps(&g, 0.1).unwrap();
        assert_eq!(r.eps, Some(expected));
        assert_ne!(r.eps, Some(0.55));
        let r = pseudo_labels(Backend::Cpu, feats, &rho, Some(0.3), None).unwrap();
        assert_eq!(r.eps, Some(0.3));
    }
}
