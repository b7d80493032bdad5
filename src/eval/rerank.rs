//! k-reciprocal re-ranking (Zhong et al., CVPR 2017) as the re-ID codebases (open-reid, SpCL)
//! implement `re_ranking(q_g_dist, q_q_dist, g_g_dist, k1=20, k2=6, lambda_value=0.3)`, sparse:
//!
//! - over all M = Q + G points, `original[i][j] = d(i,j)^2 / max_j' d(i,j')^2` with d the squared
//!   Euclidean distance (the reference squares the squared distances it is given);
//! - forward lists of k1 + 1 entries (self included), half lists of round(k1/2) + 1, the 2/3
//!   expansion rule, `V[i] = exp(-original[i]) / sum` over the expansion set;
//! - V' = mean of the V rows of the k2 nearest (V' = V when k2 == 1);
//! - `J(q, g) = 1 - S / (2 - S)` over shared support (exactly 1 otherwise) and
//!   `final = (1 - lambda) J + lambda original`.
//!
//! The M x M matrices are never formed: the kNN is blocked, V and V' are CSR, and the final
//! query x gallery rows are produced per block of queries for the streaming evaluation.

use crate::cluster::jaccard::{
    expanded_reciprocal_sets, jaccard_row, query_expansion, transpose, Csr,
};
use crate::cluster::knn::{knn_with, RankKey};
use crate::cluster::tiles::{gram_into, TILE};
use crate::cluster::{dot, par_rows, Backend, ClusterError, Features};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RerankParams {
    pub k1: usize,
    pub k2: usize,
    pub lambda: f32,
}

impl Default for RerankParams {
    fn default() -> Self {
        Self {
            k1: 20,
            k2: 6,
            lambda: 0.3,
        }
    }
}

/// Everything re-ranking needs, O(M k) in memory; [`Reranker::rows`] yields final distances.
pub struct Reranker {
    all: Vec<f32>,
    dim: usize,
    num_query: usize,
    num_gallery: usize,
    norms: Vec<f32>,
    /// max_j d(i,j)^2 over all M columns, per row.
    row_max: Vec<f32>,
    vq: Csr<(u32, f32)>,
    /// Column index of V' restricted to gallery rows (global ids >= num_query).
    inverted: Csr<(u32, f32)>,
    params: RerankParams,
}

impl Reranker {
    pub fn new(
        backend: Backend,
        query: Features<'_>,
        gallery: Features<'_>,
        params: RerankParams,
    ) -> Result<Self, ClusterError> {
        let RerankParams { k1, k2, lambda } = params;
        if query.dim != gallery.dim {
            return Err(ClusterError::Param(format!(
                "query features are {}-d, gallery {}-d",
                query.dim, gallery.dim
            )));
        }
        let m = query.rows + gallery.rows;
        if k1 == 0 || k2 == 0 || k2 > k1 + 1 || k1 + 1 > m {
            return Err(ClusterError::Param(format!(
                "re-ranking needs 1 <= k2 <= k1 + 1 <= {m} (query + gallery size), got k1 = {k1}, k2 = {k2}"
            )));
        }
        if !(0.0..=1.0).contains(&lambda) {
            return Err(ClusterError::Param(format!(
                "re-ranking lambda = {lambda} must lie in [0, 1]"
            )));
        }
        let dim = query.dim;
        let mut all = Vec::with_capacity(m * dim);
        all.extend_from_slice(query.data);
        all.extend_from_slice(gallery.data);
        let x = Features {
            data: &all,
            rows: m,
            dim,
        };
        let norms = x.squared_norms();
        // Lists ordered by d^2 exactly as the reference's argsort of the squared matrix; their
        // keys are d^2, and row_max is the normaliser.
        let (nb, row_max) = knn_with(backend, x, k1 + 1, RankKey::SquaredEuclideanSquared, TILE)?;
        let sets = expanded_reciprocal_sets(&nb, k1 + 1, round_half(k1) + 1);
        let (offsets, values) = par_rows(
            m,
            64,
            || (),
            |_, i, out| {
                let expansion = sets.row(i);
                let (row, keys) = (nb.row(i), nb.row_distances(i));
                let weights: Vec<f64> = expansion
                    .iter()
                    .map(|&j| {
                        let d2 = match row.iter().position(|&q| q == j) {
                            Some(p) => keys[p],
                            None => {
                                let d = norms[i] + norms[j as usize]
                                    - 2.0 * dot(x.row(i), x.row(j as usize));
                                d * d
                            }
                        };
                        (-(normalise(d2, row_max[i]) as f64)).exp()
                    })
                    .collect();
                let sum: f64 = weights.iter().sum();
                out.extend(
                    expansion
                        .iter()
                        .zip(&weights)
                        .map(|(&j, &w)| (j, (w / sum) as f32)),
                );
            },
        );
        let v = Csr { offsets, values };
        let vq = query_expansion(&v, &nb, k2);
        drop(v);
        let inverted = transpose(&vq, m);
        Ok(Self {
            all,
            dim,
            num_query: query.rows,
            num_gallery: gallery.rows,
            norms,
            row_max,
            vq,
            inverted,
            params,
        })
    }

    pub fn num_query(&self) -> usize {
        self.num_query
    }

    pub fn num_gallery(&self) -> usize {
        self.num_gallery
    }

    /// Final re-ranked distances of queries `q0..q0+count` to every gallery item, row-major.
    pub fn rows(&self, q0: usize, count: usize, out: &mut [f32]) {
        let (dim, nq, ng) = (self.dim, self.num_query, self.num_gallery);
        let gallery = &self.all[nq * dim..];
        gram_into(
            &self.all[q0 * dim..(q0 + count) * dim],
            count,
            gallery,
            ng,
            dim,
            out,
        );
        let lambda = self.params.lambda;
        let mut acc = vec![0f32; nq + ng];
        let mut touched = Vec::new();
        let mut jac = vec![1f32; ng];
        for t in 0..count {
            let i = q0 + t;
            jac.fill(1.0);
            jaccard_row(
                self.vq.row(i),
                &self.inverted,
                nq as u32,
                &mut acc,
                &mut touched,
                |j, v| {
                    jac[j as usize - nq] = v;
                },
            );
            let row = &mut out[t * ng..(t + 1) * ng];
            for (g, (v, &jv)) in row.iter_mut().zip(&jac).enumerate() {
                let d = self.norms[i] + self.norms[nq + g] - 2.0 * *v;
                *v = jv * (1.0 - lambda) + normalise(d * d, self.row_max[i]) * lambda;
            }
        }
    }
}

/// `int(np.around(k1 / 2))`: numpy rounds half to even.
fn round_half(k1: usize) -> usize {
    ((k1 as f64) / 2.0).round_ties_even() as usize
}

#[inline]
fn normalise(d2: f32, max: f32) -> f32 {
    if max > 0.0 {
        d2 / max
    } else {
        0.0
    }
}
