//! CMC (first-match-break) and mAP, Market-1501 protocol:
//!
//! - distance: squared Euclidean `|q|^2 + |g|^2 - 2 q.g` (= 2 - 2 cos for L2-normalised features);
//! - ranking by (distance, gallery index): ties go to the lower gallery index;
//! - for each query, gallery items with the same pid *and* the same camid are removed, and gallery
//!   items with pid -1 (junk) are removed; camid values are compared literally (-1 == -1);
//! - a query with no remaining true match (or with pid -1) is skipped and counted;
//! - AP = mean of the precision at each true match's rank; CMC rank-k = fraction of valid queries
//!   whose first true match is within the top k;
//! - INP (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook", the AGW
//!   baseline, as fast-reid computes it) = number of true matches / rank of the last true match
//!   (1-based, after the same exclusions); mINP = mean over valid queries;
//! - zero valid queries is an error ([`EvalError::NoValidQueries`]) that counts why each query was
//!   skipped, never an mAP of 0.
//!
//! A query's ranks are found without sorting its row: matches are few, so each other gallery item
//! is placed among the sorted matches by binary search (O(G log M) instead of O(G log G)).

use crate::cluster::tiles::gram_into;
use crate::cluster::{Backend, ClusterError, Features};
use rayon::prelude::*;

/// Features with identities and cameras (pid -1 = unknown / junk).
#[derive(Debug, Clone, Copy)]
pub struct LabeledFeatures<'a> {
    pub x: Features<'a>,
    pub pids: &'a [i64],
    pub camids: &'a [i64],
}

impl<'a> LabeledFeatures<'a> {
    pub fn new(x: Features<'a>, pids: &'a [i64], camids: &'a [i64]) -> Result<Self, ClusterError> {
        if pids.len() != x.rows || camids.len() != x.rows {
            return Err(ClusterError::Param(format!(
                "{} pids and {} camids for {} feature rows",
                pids.len(),
                camids.len(),
                x.rows
            )));
        }
        Ok(Self { x, pids, camids })
    }
}

/// Evaluation failures.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(
        "no valid query among {num_queries}, so mAP and CMC are undefined: {skipped} \
         (each query needs a gallery image of its id from another camera)"
    )]
    NoValidQueries {
        num_queries: usize,
        skipped: SkipCounts,
    },
}

/// Why queries were skipped, counted per reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SkipCounts {
    /// Query pid -1 (unknown or junk: the file name or list gave no identity).
    pub unknown_id: usize,
    /// The query's id never occurs in the gallery.
    pub id_not_in_gallery: usize,
    /// The id occurs in the gallery only in the query's own camera.
    pub same_camera_only: usize,
}

impl SkipCounts {
    pub fn total(&self) -> usize {
        self.unknown_id + self.id_not_in_gallery + self.same_camera_only
    }
}

impl std::fmt::Display for SkipCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} with an unknown id (pid -1), {} with an id absent from the gallery, {} with true \
             matches only in their own camera",
            self.unknown_id, self.id_not_in_gallery, self.same_camera_only
        )
    }
}

/// Counts why each query without a valid true match is skipped (`valid[q]` = it was scored).
pub fn skip_reasons(
    query: (&[i64], &[i64]),
    gallery: (&[i64], &[i64]),
    valid: impl Fn(usize) -> bool,
) -> SkipCounts {
    let mut gallery_ids = std::collections::HashSet::new();
    gallery_ids.extend(gallery.0.iter().copied().filter(|&p| p >= 0));
    let mut counts = SkipCounts::default();
    for (q, &pid) in query.0.iter().enumerate() {
        if valid(q) {
            continue;
        }
        if pid < 0 {
            counts.unknown_id += 1;
        } else if !gallery_ids.contains(&pid) {
            counts.id_not_in_gallery += 1;
        } else {
            counts.same_camera_only += 1;
        }
    }
    counts
}

/// Market-1501 protocol results over the valid queries (at least one, see [`EvalError`]).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalResult {
    pub map: f64,
    /// Mean inverse negative penalty (see the module docs).
    pub minp: f64,
    /// `cmc[r]` = fraction of valid queries whose first true match has rank <= r + 1.
    pub cmc: Vec<f64>,
    pub num_queries: usize,
    pub num_valid_queries: usize,
    /// Queries with no true match left after the exclusions (or with pid -1).
    pub num_skipped_queries: usize,
    /// Why they were skipped.
    pub skipped: SkipCounts,
    /// Per query: its score, or None when it was skipped (in query order).
    pub per_query: Vec<Option<QueryScore>>,
}

impl EvalResult {
    /// Rank-k accuracy (k >= 1); None when k is 0 or exceeds the CMC length.
    pub fn rank(&self, k: usize) -> Option<f64> {
        self.cmc.get(k.checked_sub(1)?).copied()
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QueryScore {
    pub average_precision: f64,
    /// 0-based rank of the first true match among the valid gallery items.
    pub first_match: usize,
    /// Inverse negative penalty: true matches / (1-based rank of the last true match).
    pub inp: f64,
}

#[inline]
fn before(d1: f32, i1: usize, d2: f32, i2: usize) -> bool {
    d1 < d2 || (d1 == d2 && i1 < i2)
}

/// Scores one query from its distances to every gallery item; None if it has no valid true match.
pub fn score_query(
    dist: &[f32],
    qpid: i64,
    qcam: i64,
    gpids: &[i64],
    gcams: &[i64],
) -> Option<QueryScore> {
    if qpid < 0 {
        return None;
    }
    let mut matches: Vec<(f32, usize)> = (0..dist.len())
        .filter(|&j| gpids[j] == qpid && gcams[j] != qcam)
        .map(|j| (dist[j], j))
        .collect();
    if matches.is_empty() {
        return None;
    }
    matches.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let (last_d, last_j) = matches[matches.len() - 1];
    // hist[p] = number of valid non-matches ranked after exactly p matches; its prefix sums give,
    // for match t, how many non-matches precede it.
    let mut hist = vec![0usize; matches.len() + 1];
    for (j, (&d, &pid)) in dist.iter().zip(gpids).enumerate() {
        if pid == qpid || pid < 0 || !before(d, j, last_d, last_j) {
            continue;
        }
        let p = matches.partition_point(|&(md, mj)| before(md, mj, d, j));
        hist[p] += 1;
    }
    let mut nonmatch_before = 0usize;
    let mut precision_sum = 0.0f64;
    let mut first_match = 0;
    let mut last_match = 0;
    for (t, h) in hist.iter().take(matches.len()).enumerate() {
        nonmatch_before += h;
        let rank = t + nonmatch_before;
        if t == 0 {
            first_match = rank;
        }
        last_match = rank;
        precision_sum += (t + 1) as f64 / (rank + 1) as f64;
    }
    Some(QueryScore {
        average_precision: precision_sum / matches.len() as f64,
        first_match,
        inp: matches.len() as f64 / (last_match + 1) as f64,
    })
}

/// The first `n` valid gallery items of a query's ranking (junk and same-camera same-pid items
/// removed), with whether each is a true match.
pub fn top_ranked(
    dist: &[f32],
    qpid: i64,
    qcam: i64,
    gpids: &[i64],
    gcams: &[i64],
    n: usize,
) -> Vec<(usize, bool)> {
    let mut valid: Vec<usize> = (0..dist.len())
        .filter(|&j| gpids[j] >= 0 && !(gpids[j] == qpid && gcams[j] == qcam))
        .collect();
    let n = n.min(valid.len());
    let cmp = |a: &usize, b: &usize| dist[*a].total_cmp(&dist[*b]).then(a.cmp(b));
    if n > 0 && n < valid.len() {
        valid.select_nth_unstable_by(n - 1, cmp);
    }
    valid.truncate(n);
    valid.sort_by(cmp);
    valid.into_iter().map(|j| (j, gpids[j] == qpid)).collect()
}

/// Queries scored per block: how many rows a worker fills at once.
pub const QUERY_BLOCK: usize = 128;

/// Evaluation over distance rows produced by `rows(first_query, count, out)`, which must write
/// `count` rows of `num_gallery` distances into `out`. Blocks run in parallel.
///
/// Errors: [`EvalError::NoValidQueries`] when no query has a true match left (with the reasons
/// counted), so an undefined mAP never reads as 0.
pub fn evaluate_with<F>(
    query: (&[i64], &[i64]),
    gallery: (&[i64], &[i64]),
    max_rank: usize,
    rows: F,
) -> Result<EvalResult, EvalError>
where
    F: Fn(usize, usize, &mut [f32]) + Sync,
{
    let (qpids, qcams) = query;
    let (gpids, gcams) = gallery;
    let (nq, ng) = (qpids.len(), gpids.len());
    let scores: Vec<Option<QueryScore>> = (0..nq.div_ceil(QUERY_BLOCK))
        .into_par_iter()
        .flat_map_iter(|b| {
            let q0 = b * QUERY_BLOCK;
            let count = QUERY_BLOCK.min(nq - q0);
            let mut buf = vec![0f32; count * ng];
            rows(q0, count, &mut buf);
            (0..count)
                .map(|t| {
                    score_query(
                        &buf[t * ng..(t + 1) * ng],
                        qpids[q0 + t],
                        qcams[q0 + t],
                        gpids,
                        gcams,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let skipped = skip_reasons(query, gallery, |q| scores[q].is_some());
    let valid: Vec<&QueryScore> = scores.iter().flatten().collect();
    let nv = valid.len();
    if nv == 0 {
        return Err(EvalError::NoValidQueries {
            num_queries: nq,
            skipped,
        });
    }
    let mut cmc = vec![0f64; max_rank];
    for s in &valid {
        if s.first_match < max_rank {
            cmc[s.first_match] += 1.0;
        }
    }
    let mut running = 0.0;
    for c in cmc.iter_mut() {
        running += *c;
        *c = running / nv as f64;
    }
    let map = valid.iter().map(|s| s.average_precision).sum::<f64>() / nv as f64;
    let minp = valid.iter().map(|s| s.inp).sum::<f64>() / nv as f64;
    Ok(EvalResult {
        map,
        minp,
        cmc,
        num_queries: nq,
        num_valid_queries: nv,
        num_skipped_queries: nq - nv,
        skipped,
        per_query: scores,
    })
}

/// Squared Euclidean distances of queries `q0..q0+count` to the whole gallery, row-major.
pub fn distance_rows(
    query: Features<'_>,
    gallery: Features<'_>,
    gallery_norms: &[f32],
    q0: usize,
    count: usize,
    out: &mut [f32],
) {
    let (dim, ng) = (query.dim, gallery.rows);
    gram_into(
        &query.data[q0 * dim..(q0 + count) * dim],
        count,
        gallery.data,
        ng,
        dim,
        out,
    );
    for t in 0..count {
        let q = query.row(q0 + t);
        let nq = crate::cluster::dot(q, q);
        for (v, &ngj) in out[t * ng..(t + 1) * ng].iter_mut().zip(gallery_norms) {
            *v = nq + ngj - 2.0 * *v;
        }
    }
}

/// mAP and CMC (up to `max_rank`) of `query` against `gallery` by squared Euclidean distance.
/// On a GPU backend the gallery is uploaded once and each query block's distances are computed
/// on the device; ranking is streamed per query on the host either way.
pub fn evaluate(
    backend: Backend,
    query: LabeledFeatures<'_>,
    gallery: LabeledFeatures<'_>,
    max_rank: usize,
) -> Result<EvalResult, EvalError> {
    if query.x.dim != gallery.x.dim {
        return Err(ClusterError::Param(format!(
            "query features are {}-d but gallery features are {}-d",
            query.x.dim, gallery.x.dim
        ))
        .into());
    }
    let gallery_norms = gallery.x.squared_norms();
    let labels = ((query.pids, query.camids), (gallery.pids, gallery.camids));
    match backend {
        Backend::Cpu => evaluate_with(labels.0, labels.1, max_rank, |q0, count, out| {
            distance_rows(query.x, gallery.x, &gallery_norms, q0, count, out)
        }),
        Backend::Gpu(device) => {
            let err = |e: crate::Error| ClusterError::Device(e.to_string());
            let (dim, ng) = (gallery.x.dim, gallery.x.rows);
            let g = crate::Tensor::from_slice(gallery.x.data, &[ng, dim], &device).map_err(err)?;
            let g_norms =
                crate::Tensor::from_slice(&gallery_norms, &[1, ng], &device).map_err(err)?;
            let block_rows = |q0: usize, count: usize| -> crate::Result<Vec<f32>> {
                let q = crate::Tensor::from_slice(
                    &query.x.data[q0 * dim..(q0 + count) * dim],
                    &[count, dim],
                    &device,
                )?;
                let q_norms = q.square()?.sum(1, true)?;
                q_norms
                    .add(&g_norms)?
                    .sub(&q.matmul_t(&g, false, true)?.mul_scalar(2.0)?)?
                    .to_vec()
            };
            // The row callback cannot fail, so the first device error is kept and returned after.
            let first_error = std::sync::Mutex::new(None);
            let result =
                evaluate_with(
                    labels.0,
                    labels.1,
                    max_rank,
                    |q0, count, out| match block_rows(q0, count) {
                        Ok(d) => out.copy_from_slice(&d),
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            out.fill(f32::INFINITY);
                        }
                    },
                );
            match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
                Some(e) => Err(err(e).into()),
                None => result,
            }
        }
    }
}
