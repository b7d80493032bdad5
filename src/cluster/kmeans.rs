//! k-means: greedy k-means++ initialisation (sklearn's variant: 2 + ln k candidate draws per centre,
//! keep the one that lowers the potential most) and Lloyd iterations, seeded. The assignment step
//! is a blocked distance + argmin over GEMM tiles (ties go to the lower centre index): on the CPU
//! with the gemm crate, or on a GPU backend with the runtime's matmul and argmin kernels (the
//! features are uploaded once per Lloyd run; only labels and distances come back).

use super::tiles::gram_into;
use super::{Backend, ClusterError, Features};
use crate::random::Rng;
use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KmeansParams {
    pub k: usize,
    pub max_iter: usize,
    /// Stop when the total squared centre shift is below `tol` x the mean per-dimension variance
    /// of the data (sklearn's convention), or when no label changes.
    pub tol: f64,
    pub seed: u64,
}

impl Default for KmeansParams {
    fn default() -> Self {
        Self {
            k: 500,
            max_iter: 300,
            tol: 1e-4,
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct KmeansResult {
    pub labels: Vec<i64>,
    /// k x D, row-major.
    pub centers: Vec<f32>,
    /// Sum of squared distances to the assigned centres.
    pub inertia: f64,
    pub iterations: usize,
}

const ROW_BLOCK: usize = 256;

/// The features resident on a GPU for the assignment step, with their squared norms.
pub struct DeviceRows {
    rows: crate::Tensor,
    norms: crate::Tensor,
}

impl DeviceRows {
    pub fn upload(device: &crate::Device, x: Features<'_>) -> Result<DeviceRows, ClusterError> {
        let gpu = |e: crate::Error| ClusterError::Device(e.to_string());
        let rows = crate::Tensor::from_slice(x.data, &[x.rows, x.dim], device).map_err(gpu)?;
        let norms = rows.square().and_then(|t| t.sum(1, true)).map_err(gpu)?;
        Ok(DeviceRows { rows, norms })
    }

    /// Nearest centre (lowest index on ties) and squared distance of every row, computed in row
    /// blocks small enough for one storage binding.
    pub fn assign(&self, centers: &[f32], k: usize) -> crate::Result<(Vec<u32>, Vec<f32>)> {
        let (n, dim) = (self.rows.shape()[0], self.rows.shape()[1]);
        let device = self.rows.device();
        let c = crate::Tensor::from_slice(centers, &[k, dim], device)?;
        let c_norms = c.square()?.sum(1, false)?.reshape(&[1, k])?;
        let limit = device.as_gpu().map_or(1 << 28, |g| g.max_binding_bytes()) as usize;
        let block = (limit / 4 / k.max(1)).clamp(1, n.max(1)).min(65_536);
        let (mut labels, mut dists) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for start in (0..n).step_by(block) {
            let len = block.min(n - start);
            let xb = self.rows.narrow(0, start, len)?;
            let d = self
                .norms
                .narrow(0, start, len)?
                .add(&c_norms)?
                .sub(&xb.matmul_t(&c, false, true)?.mul_scalar(2.0)?)?;
            labels.extend(
                d.argmin(1, false)?
                    .to_vec_i32()?
                    .into_iter()
                    .map(|i| i as u32),
            );
            dists.extend(d.min(1, false)?.to_vec()?.into_iter().map(|v| v.max(0.0)));
        }
        Ok((labels, dists))
    }
}

/// Nearest centre of every row and its squared distance (clamped at 0).
pub fn assign(
    backend: Backend,
    x: Features<'_>,
    centers: &[f32],
    k: usize,
) -> Result<(Vec<u32>, Vec<f32>), ClusterError> {
    match backend {
        Backend::Gpu(device) => DeviceRows::upload(&device, x)?
            .assign(centers, k)
            .map_err(|e| ClusterError::Device(e.to_string())),
        Backend::Cpu => Ok(assign_cpu(x, centers, k)),
    }
}

fn assign_cpu(x: Features<'_>, centers: &[f32], k: usize) -> (Vec<u32>, Vec<f32>) {
    let dim = x.dim;
    let center_norms: Vec<f32> = centers
        .chunks(dim.max(1))
        .map(|c| super::dot(c, c))
        .take(k)
        .collect();
    let mut labels = vec![0u32; x.rows];
    let mut dists = vec![0f32; x.rows];
    labels
        .par_chunks_mut(ROW_BLOCK)
        .zip(dists.par_chunks_mut(ROW_BLOCK))
        .enumerate()
        .for_each_init(
            || vec![0f32; ROW_BLOCK * k],
            |gram, (blk, (lab, dis))| {
                let row0 = blk * ROW_BLOCK;
                let rows = lab.len();
                gram_into(
                    &x.data[row0 * dim..(row0 + rows) * dim],
                    rows,
                    centers,
                    k,
                    dim,
                    gram,
                );
                for a in 0..rows {
                    let xi = x.row(row0 + a);
                    let ni = super::dot(xi, xi);
                    let g = &gram[a * k..(a + 1) * k];
                    let (mut best, mut best_d) = (0usize, f32::INFINITY);
                    for c in 0..k {
                        let d = ni + center_norms[c] - 2.0 * g[c];
                        if d < best_d {
                            best_d = d;
                            best = c;
                        }
                    }
                    lab[a] = best as u32;
                    dis[a] = best_d.max(0.0);
                }
            },
        );
    (labels, dists)
}

/// Squared distances of every row to each of `points` (rows of x), clamped at 0: `out[t][i]`.
fn distances_to_rows(x: Features<'_>, norms: &[f32], points: &[usize]) -> Vec<Vec<f32>> {
    let dim = x.dim;
    let m = points.len();
    let cand: Vec<f32> = points
        .iter()
        .flat_map(|&p| x.row(p).iter().copied())
        .collect();
    let mut flat = vec![0f32; x.rows * m];
    flat.par_chunks_mut(ROW_BLOCK * m)
        .enumerate()
        .for_each(|(blk, out)| {
            let row0 = blk * ROW_BLOCK;
            let rows = out.len() / m;
            gram_into(
                &x.data[row0 * dim..(row0 + rows) * dim],
                rows,
                &cand,
                m,
                dim,
                out,
            );
            for a in 0..rows {
                for t in 0..m {
                    let v = &mut out[a * m + t];
                    *v = (norms[row0 + a] + norms[points[t]] - 2.0 * *v).max(0.0);
                }
            }
        });
    (0..m)
        .map(|t| (0..x.rows).map(|i| flat[i * m + t]).collect())
        .collect()
}

/// Greedy k-means++: indices of the k rows chosen as initial centres.
pub fn kmeans_plus_plus(x: Features<'_>, k: usize, seed: u64) -> Result<Vec<usize>, ClusterError> {
    let n = x.rows;
    if k == 0 || k > n {
        return Err(ClusterError::Param(format!(
            "k-means with k = {k} on {n} points (need 1 <= k <= N)"
        )));
    }
    let mut rng = Rng::new(seed);
    let norms = x.squared_norms();
    let trials = 2 + (k as f64).ln() as usize;
    let first = rng.below(n);
    let mut chosen = vec![first];
    let mut closest = distances_to_rows(x, &norms, &[first])
        .pop()
        .unwrap_or_default();
    let mut cumulative = vec![0f64; n];
    for _ in 1..k {
        let mut acc = 0f64;
        for (c, &d) in cumulative.iter_mut().zip(&closest) {
            acc += d as f64;
            *c = acc;
        }
        let candidates: Vec<usize> = (0..trials)
            .map(|_| {
                if acc <= 0.0 {
                    // Every point coincides with a centre: any point is as good as another.
                    return rng.below(n);
                }
                let r = rng.next_f64() * acc;
                cumulative.partition_point(|&c| c <= r).min(n - 1)
            })
            .collect();
        let per_candidate = distances_to_rows(x, &norms, &candidates);
        let mut best: Option<(f64, usize)> = None;
        for (t, d) in per_candidate.iter().enumerate() {
            let potential: f64 = d.iter().zip(&closest).map(|(&a, &b)| a.min(b) as f64).sum();
            if best.is_none_or(|(p, _)| potential < p) {
                best = Some((potential, t));
            }
        }
        let t = best.map(|b| b.1).unwrap_or(0);
        for (c, &d) in closest.iter_mut().zip(&per_candidate[t]) {
            *c = c.min(d);
        }
        chosen.push(candidates[t]);
    }
    Ok(chosen)
}

/// Lloyd iterations from the given initial centres (k x D).
pub fn lloyd(
    backend: Backend,
    x: Features<'_>,
    mut centers: Vec<f32>,
    max_iter: usize,
    tol: f64,
) -> Result<KmeansResult, ClusterError> {
    let dim = x.dim;
    if dim == 0 || centers.len() % dim != 0 || centers.is_empty() {
        return Err(ClusterError::Param(format!(
            "{} centre values do not form rows of {dim}",
            centers.len()
        )));
    }
    let k = centers.len() / dim;
    let tol_abs = tol * mean_variance(x);
    let on_device = match &backend {
        Backend::Gpu(device) => Some(DeviceRows::upload(device, x)?),
        Backend::Cpu => None,
    };
    let assign = |centers: &[f32]| match &on_device {
        Some(rows) => rows
            .assign(centers, k)
            .map_err(|e| ClusterError::Device(e.to_string())),
        None => Ok(assign_cpu(x, centers, k)),
    };
    let mut labels: Vec<u32> = Vec::new();
    let mut iterations = 0;
    for _ in 0..max_iter {
        iterations += 1;
        let (new_labels, dists) = assign(&centers)?;
        let unchanged = new_labels == labels;
        labels = new_labels;
        if unchanged {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &l) in labels.iter().enumerate() {
            counts[l as usize] += 1;
            for (s, &v) in sums[l as usize * dim..(l as usize + 1) * dim]
                .iter_mut()
                .zip(x.row(i))
            {
                *s += v as f64;
            }
        }
        // Empty clusters take the points farthest from their centres (as sklearn relocates them).
        let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
        if !empty.is_empty() {
            let mut far: Vec<usize> = (0..x.rows).collect();
            far.sort_by(|&a, &b| dists[b].total_cmp(&dists[a]).then(a.cmp(&b)));
            for (&c, &p) in empty.iter().zip(&far) {
                let old = labels[p] as usize;
                if counts[old] > 1 {
                    counts[old] -= 1;
                    for (s, &v) in sums[old * dim..(old + 1) * dim].iter_mut().zip(x.row(p)) {
                        *s -= v as f64;
                    }
                    counts[c] = 1;
                    for (s, &v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(x.row(p)) {
                        *s = v as f64;
                    }
                }
            }
        }
        let mut shift = 0f64;
        for c in 0..k {
            if counts[c] == 0 {
                continue;
            }
            for d in 0..dim {
                let v = (sums[c * dim + d] / counts[c] as f64) as f32;
                shift += ((v - centers[c * dim + d]) as f64).powi(2);
                centers[c * dim + d] = v;
            }
        }
        if shift <= tol_abs {
            break;
        }
    }
    // Labels consistent with the returned centres.
    let (labels, dists) = assign(&centers)?;
    let inertia = dists.iter().map(|&d| d as f64).sum();
    Ok(KmeansResult {
        labels: labels.into_iter().map(i64::from).collect(),
        centers,
        inertia,
        iterations,
    })
}

fn mean_variance(x: Features<'_>) -> f64 {
    let (n, dim) = (x.rows as f64, x.dim);
    if x.rows == 0 || dim == 0 {
        return 0.0;
    }
    let mut mean = vec![0f64; dim];
    let mut sq = vec![0f64; dim];
    for i in 0..x.rows {
        for (d, &v) in x.row(i).iter().enumerate() {
            mean[d] += v as f64;
            sq[d] += (v as f64) * (v as f64);
        }
    }
    (0..dim)
        .map(|d| sq[d] / n - (mean[d] / n).powi(2))
        .sum::<f64>()
        / dim as f64
}

/// k-means++ then Lloyd.
pub fn kmeans(
    backend: Backend,
    x: Features<'_>,
    params: KmeansParams,
) -> Result<KmeansResult, ClusterError> {
    let init = kmeans_plus_plus(x, params.k, params.seed)?;
    let centers: Vec<f32> = init
        .iter()
        .flat_map(|&p| x.row(p).iter().copied())
        .collect();
    lloyd(backend, x, centers, params.max_iter, params.tol)
}
