//! Exact brute-force k-nearest neighbours by Euclidean distance, blocked over N.
//!
//! Memory is O(N k) plus one tile per worker. Only the upper triangle of the symmetric distance
//! matrix is computed (half the FLOPs): every tile feeds both its rows' and its columns' lists.
//! Lists include the point itself and are ordered by (distance, index), so ties go to the lower
//! index; distances are `|x|^2 + |y|^2 - 2 x.y` in f32, as faiss's flat L2 index computes them.
//! On a GPU backend (k <= 64) the distance rows and the per-row top-k selection both run on the GPU.

use super::tiles::{for_each_symmetric_tile, TILE};
use super::{Backend, ClusterError, Features};
use std::sync::Mutex;

/// Row-major N x k neighbour lists.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbours {
    pub k: usize,
    pub indices: Vec<u32>,
    pub distances: Vec<f32>,
}

impl Neighbours {
    pub fn num_rows(&self) -> usize {
        self.indices.len().checked_div(self.k).unwrap_or(0)
    }

    /// The k nearest of point i, nearest first (usually i itself).
    #[inline]
    pub fn row(&self, i: usize) -> &[u32] {
        &self.indices[i * self.k..(i + 1) * self.k]
    }

    #[inline]
    pub fn row_distances(&self, i: usize) -> &[f32] {
        &self.distances[i * self.k..(i + 1) * self.k]
    }
}

/// What the lists are ordered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RankKey {
    /// `|x|^2 + |y|^2 - 2 x.y`.
    SquaredEuclidean,
    /// Its square, as the k-reciprocal re-ranking code orders by (it squares the squared distance).
    SquaredEuclideanSquared,
}

/// The k nearest neighbours (self included) of every row of `x`.
pub fn knn(backend: Backend, x: Features<'_>, k: usize) -> Result<Neighbours, ClusterError> {
    knn_tiled(backend, x, k, TILE)
}

/// [`knn`] with an explicit tile size (tests use small tiles to exercise the block seams).
pub fn knn_tiled(
    backend: Backend,
    x: Features<'_>,
    k: usize,
    tile: usize,
) -> Result<Neighbours, ClusterError> {
    if let Backend::Gpu(device) = &backend {
        if k <= crate::ops::topk::TOPK_MAX && (1..=x.rows).contains(&k) {
            return knn_on_device(device, x, k).map_err(|e| ClusterError::Device(e.to_string()));
        }
    }
    Ok(knn_with(backend, x, k, RankKey::SquaredEuclidean, tile.max(1))?.0)
}

/// kNN with both the distance rows and their top-k selection on the GPU (`Tensor::topk`, ties to
/// the lower index as here); only the N x k lists come back. Row blocks keep each distance block
/// within one storage binding, so memory stays O(N k) plus one block.
fn knn_on_device(device: &crate::Device, x: Features<'_>, k: usize) -> crate::Result<Neighbours> {
    let n = x.rows;
    let all = crate::Tensor::from_slice(x.data, &[n, x.dim], device)?;
    let norms = all.square()?.sum(1, true)?;
    let norms_row = norms.reshape(&[1, n])?;
    let limit = device.as_gpu().map_or(1 << 28, |g| g.max_binding_bytes()) as usize;
    let block = (limit / 4 / n).clamp(1, 4096).min(n);
    let (mut indices, mut distances) = (Vec::with_capacity(n * k), Vec::with_capacity(n * k));
    for start in (0..n).step_by(block) {
        let len = block.min(n - start);
        let gram = all.narrow(0, start, len)?.matmul_t(&all, false, true)?;
        let d = norms
            .narrow(0, start, len)?
            .add(&norms_row)?
            .sub(&gram.mul_scalar(2.0)?)?;
        let (values, idx) = d.topk(k, false)?;
        indices.extend(idx.to_vec_i32()?.into_iter().map(|i| i as u32));
        distances.extend(values.to_vec()?);
    }
    Ok(Neighbours {
        k,
        indices,
        distances,
    })
}

#[inline]
fn before(d1: f32, i1: u32, d2: f32, i2: u32) -> bool {
    d1 < d2 || (d1 == d2 && i1 < i2)
}

/// A sorted fixed-size list of the best (key, index) candidates seen so far.
struct TopK<'a> {
    keys: &'a mut [f32],
    idx: &'a mut [u32],
}

impl TopK<'_> {
    #[inline]
    fn offer(&mut self, key: f32, index: u32) {
        let k = self.keys.len();
        if !before(key, index, self.keys[k - 1], self.idx[k - 1]) {
            return;
        }
        let mut p = k - 1;
        while p > 0 && before(key, index, self.keys[p - 1], self.idx[p - 1]) {
            self.keys[p] = self.keys[p - 1];
            self.idx[p] = self.idx[p - 1];
            p -= 1;
        }
        self.keys[p] = key;
        self.idx[p] = index;
    }
}

/// Merges sorted list `(lk, li)` into the sorted list `(gk, gi)`, keeping the best `k`.
fn merge_into(
    gk: &mut [f32],
    gi: &mut [u32],
    lk: &[f32],
    li: &[u32],
    scratch: &mut Vec<(f32, u32)>,
) {
    let k = gk.len();
    scratch.clear();
    let (mut a, mut b) = (0, 0);
    while scratch.len() < k {
        if b >= k || (a < k && before(gk[a], gi[a], lk[b], li[b])) {
            scratch.push((gk[a], gi[a]));
            a += 1;
        } else {
            scratch.push((lk[b], li[b]));
            b += 1;
        }
    }
    for (t, &(key, i)) in scratch.iter().enumerate() {
        gk[t] = key;
        gi[t] = i;
    }
}

struct BlockState {
    keys: Vec<f32>,
    idx: Vec<u32>,
    row_max: Vec<f32>,
}

/// Shared driver: the lists ordered by `rank`, their true squared Euclidean distances, and each
/// row's largest `rank` key over all N columns (needed by re-ranking's row normalisation).
pub(crate) fn knn_with(
    backend: Backend,
    x: Features<'_>,
    k: usize,
    rank: RankKey,
    tile: usize,
) -> Result<(Neighbours, Vec<f32>), ClusterError> {
    let n = x.rows;
    if k == 0 || k > n {
        return Err(ClusterError::Param(format!(
            "k = {k} neighbours requested for {n} points (need 1 <= k <= N)"
        )));
    }
    let norms = x.squared_norms();
    let blocks = n.div_ceil(tile);
    let states: Vec<Mutex<BlockState>> = (0..blocks)
        .map(|b| {
            let rows = tile.min(n - b * tile);
            Mutex::new(BlockState {
                keys: vec![f32::INFINITY; rows * k],
                idx: vec![u32::MAX; rows * k],
                row_max: vec![f32::NEG_INFINITY; rows],
            })
        })
        .collect();
    let key_of = |d: f32| match rank {
        RankKey::SquaredEuclidean => d,
        RankKey::SquaredEuclideanSquared => d * d,
    };

    let track_max = rank == RankKey::SquaredEuclideanSquared;
    for_each_symmetric_tile(backend, x, tile, |t| {
        let (rows, cols) = (t.rows, t.cols);
        let off_diag = !t.is_diagonal();
        let (rblock, cblock) = (t.row0 / tile, t.col0 / tile);
        // Snapshot of each row's current k-th key: a candidate above it can never enter the final
        // list, so most of the tile is rejected by one comparison (<= keeps index ties for merge).
        let worst = |block: usize, count: usize| -> Vec<f32> {
            let st = states[block].lock().unwrap_or_else(|e| e.into_inner());
            (0..count).map(|r| st.keys[r * k + k - 1]).collect()
        };
        let row_thr = worst(rblock, rows);
        let mut col_thr = if off_diag {
            worst(cblock, cols)
        } else {
            Vec::new()
        };
        let mut row_keys = vec![f32::INFINITY; rows * k];
        let mut row_idx = vec![u32::MAX; rows * k];
        let mut row_max = vec![f32::NEG_INFINITY; rows];
        let mut col_keys = vec![f32::INFINITY; if off_diag { cols * k } else { 0 }];
        let mut col_idx = vec![u32::MAX; col_keys.len()];
        let mut col_max = vec![f32::NEG_INFINITY; if off_diag { cols } else { 0 }];
        let col_norms = &norms[t.col0..t.col0 + cols];
        let mut keys = vec![0f32; cols];
        for a in 0..rows {
            let i = t.row0 + a;
            let ni = norms[i];
            let g = &t.gram[a * cols..(a + 1) * cols];
            for ((key, &gv), &nj) in keys.iter_mut().zip(g).zip(col_norms) {
                *key = key_of(ni + nj - 2.0 * gv);
            }
            if track_max {
                row_max[a] = keys.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                if off_diag {
                    for (m, &key) in col_max.iter_mut().zip(&keys) {
                        *m = m.max(key);
                    }
                }
            }
            // Row side: columns come in ascending index order, so a strict `<` against the local
            // list's worst is the (distance, index) order.
            let (rk, ri) = (
                &mut row_keys[a * k..(a + 1) * k],
                &mut row_idx[a * k..(a + 1) * k],
            );
            let mut thr = row_thr[a];
            for (b, &key) in keys.iter().enumerate() {
                if key <= thr && key < rk[k - 1] {
                    TopK {
                        keys: &mut *rk,
                        idx: &mut *ri,
                    }
                    .offer(key, (t.col0 + b) as u32);
                    thr = thr.min(rk[k - 1]);
                }
            }
            // Column side (off-diagonal tiles): the same values seen from the column points.
            if off_diag {
                for (b, &key) in keys.iter().enumerate() {
                    if key <= col_thr[b] {
                        let (ck, ci) = (
                            &mut col_keys[b * k..(b + 1) * k],
                            &mut col_idx[b * k..(b + 1) * k],
                        );
                        if key < ck[k - 1] {
                            TopK { keys: ck, idx: ci }.offer(key, i as u32);
                            col_thr[b] = col_thr[b].min(ck[k - 1]);
                        }
                    }
                }
            }
        }
        let mut scratch = Vec::with_capacity(k);
        let mut merge = |block: usize, n_local: usize, keys: &[f32], idx: &[u32], maxes: &[f32]| {
            let mut st = states[block].lock().unwrap_or_else(|e| e.into_inner());
            let st = &mut *st;
            for r in 0..n_local {
                let s = r * k..(r + 1) * k;
                if keys[r * k] != f32::INFINITY {
                    merge_into(
                        &mut st.keys[s.clone()],
                        &mut st.idx[s.clone()],
                        &keys[s.clone()],
                        &idx[s],
                        &mut scratch,
                    );
                }
                st.row_max[r] = st.row_max[r].max(maxes[r]);
            }
        };
        merge(rblock, rows, &row_keys, &row_idx, &row_max);
        if off_diag {
            merge(cblock, cols, &col_keys, &col_idx, &col_max);
        }
    })?;

    let mut indices = Vec::with_capacity(n * k);
    let mut keys = Vec::with_capacity(n * k);
    let mut row_max = Vec::with_capacity(n);
    for st in states {
        let st = st.into_inner().unwrap_or_else(|e| e.into_inner());
        indices.extend_from_slice(&st.idx);
        keys.extend_from_slice(&st.keys);
        row_max.extend_from_slice(&st.row_max);
    }
    // `distances` holds the ranking keys: the squared Euclidean distances for plain kNN.
    let distances = keys;
    Ok((
        Neighbours {
            k,
            indices,
            distances,
        },
        row_max,
    ))
}
