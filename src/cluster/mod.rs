//! Clustering of re-ID features at scale: exact kNN, k-reciprocal Jaccard distance, DBSCAN on a sparse
//! graph, k-means and SpCL's self-paced reliability (shared/ALGORITHMS.md sections 4 and 8).
//!
//! Nothing here holds an N x N matrix: distances are produced tile by tile ([`tiles`]) and only
//! O(N * k) neighbour lists or the sparse edges under an eps survive a tile.

pub mod dbscan;
pub mod jaccard;
pub mod kmeans;
pub mod knn;
pub mod pseudo;
pub mod quality;
pub mod radius;
pub mod reliability;
pub mod tiles;

pub use dbscan::{dbscan, dbscan_many, DbscanResult};
pub use jaccard::{jaccard_graph, JaccardParams};
pub use kmeans::{kmeans, KmeansParams, KmeansResult};
pub use knn::{knn, Neighbours};
pub use pseudo::{
    pseudo_labels, rho_eps, ClusterAlgo, ClusterConfig, ClusterDistance, EpsFrom, PseudoLabels,
};
pub use quality::{label_quality, LabelQuality};
pub use radius::{radius_graph, PlainDistance};
pub use reliability::{self_paced_labels, SelfPacedResult};

/// Errors of the clustering and evaluation kernels: always about the caller's data or parameters.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("feature buffer has {len} values, which is not {rows} rows x {dim} columns")]
    Shape { len: usize, rows: usize, dim: usize },
    #[error("feature row {row} contains a non-finite value (NaN or infinity)")]
    NonFinite { row: usize },
    #[error("invalid parameter: {0}")]
    Param(String),
    #[error("GPU: {0}")]
    Device(String),
}

/// Where the dense dot-product tiles of the clustering stages (kNN, radius graph) are computed:
/// on the CPU (rayon + the `gemm` crate), or with the runtime's matmul on a GPU device. Every
/// sparse stage after the tiles runs on the CPU either way. Use [`Backend::from_device`] with the
/// result of `Device::choose`, so a CPU-only adapter (lavapipe) takes the fast CPU path.
#[derive(Clone, Default)]
pub enum Backend {
    #[default]
    Cpu,
    Gpu(crate::Device),
}

impl Backend {
    pub fn from_device(device: &crate::Device) -> Self {
        if device.is_gpu() {
            Backend::Gpu(device.clone())
        } else {
            Backend::Cpu
        }
    }
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Cpu => write!(f, "Cpu"),
            Backend::Gpu(_) => write!(f, "Gpu"),
        }
    }
}

/// A row-major N x D feature matrix borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct Features<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub dim: usize,
}

impl<'a> Features<'a> {
    /// Checks the shape and that every value is finite (a NaN would silently poison every ranking).
    pub fn new(data: &'a [f32], rows: usize, dim: usize) -> Result<Self, ClusterError> {
        if rows.checked_mul(dim) != Some(data.len()) || (rows > 0 && dim == 0) {
            return Err(ClusterError::Shape {
                len: data.len(),
                rows,
                dim,
            });
        }
        if rows > u32::MAX as usize {
            return Err(ClusterError::Param(format!(
                "{rows} rows exceed the u32 index range"
            )));
        }
        if let Some(row) = data
            .chunks(dim.max(1))
            .position(|r| r.iter().any(|v| !v.is_finite()))
        {
            return Err(ClusterError::NonFinite { row });
        }
        Ok(Self { data, rows, dim })
    }

    #[inline]
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// Squared L2 norm of every row, in f32 like the GEMM that uses them.
    pub fn squared_norms(&self) -> Vec<f32> {
        use rayon::prelude::*;
        (0..self.rows)
            .into_par_iter()
            .map(|i| dot(self.row(i), self.row(i)))
            .collect()
    }
}

/// Camera-centred features for clustering: from every row ([N, D], `features`) the mean of the
/// rows of its camera (`camids[i]`) is subtracted, then each row is L2-normalised again.
///
/// Features of a re-ID model trained on another domain often carry more of the camera (background,
/// illumination, colour cast) than of the person, so DBSCAN groups one camera's people together
/// and a cluster rarely spans two cameras (measured on the synthetic benchmark with the source
/// model: 13 of 17 clusters held a single camera). Removing each camera's mean is the
/// feature-level form of camera-based batch normalisation (Zhuang et al., "Rethinking the
/// Distribution Gap of Person Re-identification with Camera-based Batch Normalization",
/// ECCV 2020). Not part of Cluster Contrast / ISE's public code: they use it only when asked.
///
/// A camera with a single image has no mean to remove (its row would vanish): its row is kept
/// as it is. Errors: `camids` of another length than the rows; a row that becomes zero (every
/// image of its camera has the same feature), which has no direction to normalise.
pub fn camera_centered(features: Features<'_>, camids: &[u32]) -> Result<Vec<f32>, ClusterError> {
    let (n, d) = (features.rows, features.dim);
    if camids.len() != n {
        return Err(ClusterError::Param(format!(
            "{} camera ids for {n} feature rows",
            camids.len()
        )));
    }
    let mut sums: std::collections::BTreeMap<u32, (Vec<f64>, usize)> = Default::default();
    for (i, &cam) in camids.iter().enumerate() {
        let (sum, count) = sums.entry(cam).or_insert_with(|| (vec![0.0; d], 0));
        for (s, &v) in sum.iter_mut().zip(features.row(i)) {
            *s += v as f64;
        }
        *count += 1;
    }
    let mut out = Vec::with_capacity(n * d);
    for (i, &cam) in camids.iter().enumerate() {
        let (sum, count) = &sums[&cam];
        let row: Vec<f64> = if *count < 2 {
            features.row(i).iter().map(|&v| v as f64).collect()
        } else {
            features
                .row(i)
                .iter()
                .zip(sum)
                .map(|(&v, &s)| v as f64 - s / *count as f64)
                .collect()
        };
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(ClusterError::Param(format!(
                "feature row {i} equals the mean of camera {cam}: nothing is left after camera centring"
            )));
        }
        out.extend(row.iter().map(|v| (v / norm) as f32));
    }
    Ok(out)
}

/// Dot product. Dispatches at run time to an AVX2+FMA build of the same loop when the CPU has it
/// (the crate is compiled for baseline x86-64, where `mul_add` would be a slow libm call).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU supports the features the function is compiled for.
            return unsafe { dot_avx2_fma(a, b) };
        }
    }
    dot_portable(a, b)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2_fma(a: &[f32], b: &[f32]) -> f32 {
    dot_fused(a, b)
}

/// Sixteen independent accumulators so the compiler vectorises (two 8-lane FMA chains).
#[inline(always)]
fn dot_fused(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 16];
    let chunks = n / 16;
    for c in 0..chunks {
        let (x, y) = (&a[c * 16..c * 16 + 16], &b[c * 16..c * 16 + 16]);
        for l in 0..16 {
            acc[l] = x[l].mul_add(y[l], acc[l]);
        }
    }
    let mut tail = 0.0f32;
    for t in chunks * 16..n {
        tail = a[t].mul_add(b[t], tail);
    }
    let mut half = [0.0f32; 8];
    for l in 0..8 {
        half[l] = acc[l] + acc[l + 8];
    }
    ((half[0] + half[4]) + (half[1] + half[5])) + ((half[2] + half[6]) + (half[3] + half[7])) + tail
}

fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0.0f32; 8];
    let chunks = n / 8;
    for c in 0..chunks {
        for l in 0..8 {
            acc[l] += a[c * 8 + l] * b[c * 8 + l];
        }
    }
    let mut tail = 0.0f32;
    for t in chunks * 8..n {
        tail += a[t] * b[t];
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// A symmetric sparse distance graph in CSR form: row i lists neighbours j != i (ascending) with
/// their distance. Pairs that are absent are farther than `eps_max`, except that for Jaccard graphs
/// (`absent_distance == Some(1.0)`) every absent pair is known to be at distance exactly 1.
#[derive(Debug, Clone, Default)]
pub struct SparseGraph {
    pub offsets: Vec<usize>,
    pub neighbours: Vec<u32>,
    pub distances: Vec<f32>,
    /// The largest distance kept; edges above it were dropped.
    pub eps_max: f32,
    /// Distance of every pair not stored, when it is known exactly (Jaccard: 1).
    pub absent_distance: Option<f32>,
}

impl SparseGraph {
    pub fn num_nodes(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn num_edges(&self) -> usize {
        self.neighbours.len()
    }

    /// Neighbours and distances of node i.
    #[inline]
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (s, e) = (self.offsets[i], self.offsets[i + 1]);
        (&self.neighbours[s..e], &self.distances[s..e])
    }

    /// Builds the symmetric CSR from upper-triangle edges in CSR form: row i of (`offsets`,
    /// `upper`) holds (j, d) with j > i, ascending in j. Each edge is stored in both rows.
    pub(crate) fn from_upper(
        offsets_upper: &[usize],
        upper: &[(u32, f32)],
        eps_max: f32,
        absent_distance: Option<f32>,
    ) -> Self {
        let n = offsets_upper.len() - 1;
        let mut degree = vec![0usize; n];
        for i in 0..n {
            degree[i] += offsets_upper[i + 1] - offsets_upper[i];
            for &(j, _) in &upper[offsets_upper[i]..offsets_upper[i + 1]] {
                degree[j as usize] += 1;
            }
        }
        let mut offsets = vec![0usize; n + 1];
        for i in 0..n {
            offsets[i + 1] = offsets[i] + degree[i];
        }
        let total = offsets[n];
        let mut neighbours = vec![0u32; total];
        let mut distances = vec![0f32; total];
        let mut cursor = offsets[..n].to_vec();
        // Visiting i ascending writes every row's lower entries (from i < j) in ascending order
        // before that row's own upper entries, so rows end up sorted without a sort.
        for i in 0..n {
            let row = &upper[offsets_upper[i]..offsets_upper[i + 1]];
            for &(j, d) in row {
                let j = j as usize;
                neighbours[cursor[j]] = i as u32;
                distances[cursor[j]] = d;
                cursor[j] += 1;
            }
            for &(j, d) in row {
                neighbours[cursor[i]] = j;
                distances[cursor[i]] = d;
                cursor[i] += 1;
            }
        }
        Self {
            offsets,
            neighbours,
            distances,
            eps_max,
            absent_distance,
        }
    }
}

/// Builds a CSR-like (offsets, values) table by calling `fill(state, i, out)` for every row i in
/// parallel chunks; `fill` appends row i's values. `init` makes one scratch state per worker.
pub(crate) fn par_rows<T, S, I, F>(n: usize, chunk: usize, init: I, fill: F) -> (Vec<usize>, Vec<T>)
where
    T: Send,
    I: Fn() -> S + Sync + Send,
    F: Fn(&mut S, usize, &mut Vec<T>) + Sync + Send,
{
    use rayon::prelude::*;
    let chunk = chunk.max(1);
    let parts: Vec<(Vec<usize>, Vec<T>)> = (0..n.div_ceil(chunk))
        .into_par_iter()
        .map_init(&init, |state, c| {
            let rows = c * chunk..((c + 1) * chunk).min(n);
            let mut lens = Vec::with_capacity(rows.len());
            let mut vals = Vec::new();
            for i in rows {
                let before = vals.len();
                fill(state, i, &mut vals);
                lens.push(vals.len() - before);
            }
            (lens, vals)
        })
        .collect();
    let total: usize = parts.iter().map(|p| p.1.len()).sum();
    let mut offsets = Vec::with_capacity(n + 1);
    offsets.push(0);
    let mut values = Vec::with_capacity(total);
    for (lens, vals) in parts {
        for l in lens {
            offsets.push(offsets.last().copied().unwrap_or(0) + l);
        }
        values.extend(vals);
    }
    (offsets, values)
}
