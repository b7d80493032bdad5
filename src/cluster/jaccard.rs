//! k-reciprocal Jaccard distance (shared/ALGORITHMS.md section 8), sparse from end to end.
//!
//! Matches SpCL's `compute_jaccard_distance`: kNN lists of exactly k1 entries (self included),
//! half lists of round(k1/2)+1 entries (numpy rounds half to even), the 2/3 expansion rule, V as a
//! softmax of -(2 - 2 x.y) over the expansion set, V' = mean of the V rows of the k2 nearest (self
//! included; V' = V when k2 == 1), J = 1 - S/(2 - S) with S = sum_k min(V'_ik, V'_jk), negative J
//! clipped to 0. V and V' are CSR; S is accumulated only for pairs that share support, so every
//! pair absent from the output graph has J exactly 1.
//!
//! Set `UNREID_PROFILE=1` to print the time of each sub-stage to stderr.

use super::knn::Neighbours;
use super::{dot, par_rows, ClusterError, Features, SparseGraph};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JaccardParams {
    /// Length of the kNN lists (self included).
    pub k1: usize,
    /// Number of nearest rows (self included) averaged by query expansion.
    pub k2: usize,
}

impl Default for JaccardParams {
    /// SpCL's clustering defaults.
    fn default() -> Self {
        Self { k1: 30, k2: 6 }
    }
}

/// Length of the half lists used by the expansion step: `int(np.around(k1/2)) + 1` (numpy rounds
/// half to even), capped at k1 because the reference's rank table has only k1 columns.
pub fn half_list_len(k1: usize) -> usize {
    (((k1 as f64) / 2.0).round_ties_even() as usize + 1).min(k1)
}

/// Row-compressed sparse rows.
#[derive(Debug, Clone, Default)]
pub struct Csr<T> {
    pub offsets: Vec<usize>,
    pub values: Vec<T>,
}

impl<T> Csr<T> {
    #[inline]
    pub fn row(&self, i: usize) -> &[T] {
        &self.values[self.offsets[i]..self.offsets[i + 1]]
    }
}

/// R(i, k) = { j in top-k(i) : i in top-k(j) } for every i, in i's kNN order.
pub fn reciprocal_lists(nb: &Neighbours, k: usize) -> Csr<u32> {
    let n = nb.num_rows();
    let (offsets, values) = par_rows(
        n,
        256,
        || (),
        |_, i, out| {
            for &j in &nb.row(i)[..k] {
                if nb.row(j as usize)[..k].contains(&(i as u32)) {
                    out.push(j);
                }
            }
        },
    );
    Csr { offsets, values }
}

/// The expanded k-reciprocal sets R*(i, k) of Zhong et al. (CVPR 2017, eq. 6-7) for every row i:
/// R(i, k) (from [`reciprocal_lists`] over the first `k` neighbours) joined with R(c, `half_k`) of
/// each candidate c in R(i, k) that shares more than 2/3 of its own half list with R(i, k).
/// Rows are sorted by index and deduplicated. Shared by the Jaccard distance of clustering
/// ([`v_matrix`], k = k1) and re-ranking (`eval::rerank`, k = k1 + 1, whose kNN lists hold the
/// query itself), so both follow one definition. `nb` must hold at least `k` neighbours per row.
pub fn expanded_reciprocal_sets(nb: &Neighbours, k: usize, half_k: usize) -> Csr<u32> {
    let full = reciprocal_lists(nb, k);
    let half = reciprocal_lists(nb, half_k);
    let (offsets, values) = par_rows(nb.num_rows(), 64, Vec::<u32>::new, |expansion, i, out| {
        let r = full.row(i);
        expansion.clear();
        expansion.extend_from_slice(r);
        for &c in r {
            let candidate = half.row(c as usize);
            let shared = candidate.iter().filter(|j| r.contains(j)).count();
            // Same float comparison as the reference (`> 2/3 * len`).
            if shared as f64 > 2.0 / 3.0 * candidate.len() as f64 {
                expansion.extend_from_slice(candidate);
            }
        }
        expansion.sort_unstable();
        expansion.dedup();
        out.extend_from_slice(expansion);
    });
    Csr { offsets, values }
}

/// The sparse V matrix: row i = softmax of -(2 - 2 x_i.x_j) over i's expanded k-reciprocal set.
/// `nb` must come from [`super::knn`] (its distances are squared Euclidean).
pub fn v_matrix(x: Features<'_>, nb: &Neighbours, k1: usize) -> Csr<(u32, f32)> {
    let sets = expanded_reciprocal_sets(nb, k1, half_list_len(k1));
    let norms = x.squared_norms();
    let (offsets, values) = par_rows(x.rows, 64, Vec::<f64>::new, |logits, i, out| {
        let expansion = sets.row(i);
        let xi = x.row(i);
        let (row, row_dist) = (nb.row(i), nb.row_distances(i));
        logits.clear();
        logits.extend(expansion.iter().map(|&j| {
            // 2 - 2 x_i.x_j, from the kNN's |x_i|^2 + |x_j|^2 - 2 x_i.x_j when j is in the list
            // (almost always: it saves a D-long dot product per entry).
            let dist = match row.iter().position(|&q| q == j) {
                Some(p) => 2.0 - norms[i] - norms[j as usize] + row_dist[p],
                None => 2.0 - 2.0 * dot(xi, x.row(j as usize)),
            };
            -dist as f64
        }));
        let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = logits.iter().map(|l| (l - max).exp()).sum();
        out.extend(
            expansion
                .iter()
                .zip(logits.iter())
                .map(|(&j, &l)| (j, ((l - max).exp() / sum) as f32)),
        );
    });
    Csr { offsets, values }
}

/// Query expansion: row i of V' = mean of the V rows of i's k2 nearest neighbours (self included).
pub fn query_expansion(v: &Csr<(u32, f32)>, nb: &Neighbours, k2: usize) -> Csr<(u32, f32)> {
    if k2 <= 1 {
        // The reference skips the step entirely when k2 == 1.
        return v.clone();
    }
    let n = v.offsets.len() - 1;
    let (offsets, values) = par_rows(n, 64, Vec::<(u32, u32, f32)>::new, |gathered, i, out| {
        gathered.clear();
        for (pos, &nbr) in nb.row(i)[..k2].iter().enumerate() {
            gathered.extend(
                v.row(nbr as usize)
                    .iter()
                    .map(|&(c, val)| (c, pos as u32, val)),
            );
        }
        // Sum each column in neighbour order, as numpy's mean over axis 0 adds rows in order.
        gathered.sort_unstable_by_key(|&(c, pos, _)| (c, pos));
        let inv = k2 as f32;
        let mut t = 0;
        while t < gathered.len() {
            let col = gathered[t].0;
            let mut s = 0.0f32;
            while t < gathered.len() && gathered[t].0 == col {
                s += gathered[t].2;
                t += 1;
            }
            out.push((col, s / inv));
        }
    });
    Csr { offsets, values }
}

/// Column-major copy (the reference's inverted index): column k lists (row, value), rows ascending.
pub fn transpose(m: &Csr<(u32, f32)>, cols: usize) -> Csr<(u32, f32)> {
    let mut counts = vec![0usize; cols + 1];
    for &(c, _) in &m.values {
        counts[c as usize + 1] += 1;
    }
    for c in 0..cols {
        counts[c + 1] += counts[c];
    }
    let offsets = counts.clone();
    let mut cursor = counts;
    let mut values = vec![(0u32, 0f32); m.values.len()];
    for r in 0..m.offsets.len() - 1 {
        for &(c, val) in m.row(r) {
            values[cursor[c as usize]] = (r as u32, val);
            cursor[c as usize] += 1;
        }
    }
    Csr { offsets, values }
}

/// Jaccard distances between one V' row (`vq_row`) and every row j >= `first_row` of the column
/// index `inverted` that shares support with it: calls `emit(j, J)` for each, in no particular
/// order. Pairs without shared support are not reported (their J is exactly 1). `acc` (one slot per
/// row, all zero) and `touched` are scratch, left zeroed / cleared for the next call.
pub(crate) fn jaccard_row(
    vq_row: &[(u32, f32)],
    inverted: &Csr<(u32, f32)>,
    first_row: u32,
    acc: &mut [f32],
    touched: &mut Vec<u32>,
    mut emit: impl FnMut(u32, f32),
) {
    touched.clear();
    for &(col, v_ik) in vq_row {
        let column = inverted.row(col as usize);
        let start = column.partition_point(|&(r, _)| r < first_row);
        for &(j, v_jk) in &column[start..] {
            let slot = &mut acc[j as usize];
            // V' entries are strictly positive (softmax weights), so 0 means "not touched yet".
            if *slot == 0.0 {
                touched.push(j);
            }
            *slot += v_ik.min(v_jk);
        }
    }
    for &j in touched.iter() {
        let s = std::mem::replace(&mut acc[j as usize], 0.0);
        let jac = 1.0 - s / (2.0 - s);
        emit(j, jac.max(0.0));
    }
}

/// The Jaccard graph: every pair i != j with J(i,j) <= `eps_max` (at most 1), with J.
/// `nb` must hold at least k1 neighbours per row, nearest first, self included.
pub fn jaccard_graph(
    x: Features<'_>,
    nb: &Neighbours,
    params: JaccardParams,
    eps_max: f32,
) -> Result<SparseGraph, ClusterError> {
    let JaccardParams { k1, k2 } = params;
    if k1 == 0 || k2 == 0 || k2 > k1 {
        return Err(ClusterError::Param(format!(
            "Jaccard needs 1 <= k2 <= k1, got k1 = {k1}, k2 = {k2}"
        )));
    }
    if nb.num_rows() != x.rows || nb.k < k1 {
        return Err(ClusterError::Param(format!(
            "neighbour lists are {} x {}, need {} x at least k1 = {k1}",
            nb.num_rows(),
            nb.k,
            x.rows
        )));
    }
    if !(0.0..=1.0).contains(&eps_max) {
        return Err(ClusterError::Param(format!(
            "eps_max = {eps_max} must lie in [0, 1]"
        )));
    }
    let nb = if nb.k == k1 {
        std::borrow::Cow::Borrowed(nb)
    } else {
        std::borrow::Cow::Owned(truncate(nb, k1))
    };
    let profile = std::env::var_os("UNREID_PROFILE").is_some();
    let t = std::time::Instant::now();
    let v = v_matrix(x, &nb, k1);
    let t_v = t.elapsed();
    let vq = query_expansion(&v, &nb, k2);
    let t_vq = t.elapsed();
    drop(v);
    let inverted = transpose(&vq, x.rows);
    let n = x.rows;
    // Only j > i is accumulated: S is symmetric (same terms, same order), so each pair is done once.
    let (offsets, upper) = par_rows(
        n,
        32,
        || (vec![0f32; n], Vec::<u32>::new()),
        |(acc, touched), i, out| {
            let start = out.len();
            jaccard_row(
                vq.row(i),
                &inverted,
                i as u32 + 1,
                acc,
                touched,
                |j, jac| {
                    if jac <= eps_max {
                        out.push((j, jac));
                    }
                },
            );
            // Only the kept edges (few) are sorted, not every pair that shared support.
            out[start..].sort_unstable_by_key(|e| e.0);
        },
    );
    let t_j = t.elapsed();
    let graph = SparseGraph::from_upper(&offsets, &upper, eps_max, Some(1.0));
    if profile {
        eprintln!(
            "jaccard: V {:.2}s, V' {:.2}s, J {:.2}s, CSR {:.2}s; nnz V' {}, edges {}",
            t_v.as_secs_f64(),
            (t_vq - t_v).as_secs_f64(),
            (t_j - t_vq).as_secs_f64(),
            (t.elapsed() - t_j).as_secs_f64(),
            vq.values.len(),
            upper.len()
        );
    }
    Ok(graph)
}

/// The first k entries of every list.
pub fn truncate(nb: &Neighbours, k: usize) -> Neighbours {
    let n = nb.num_rows();
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for i in 0..n {
        indices.extend_from_slice(&nb.row(i)[..k]);
        distances.extend_from_slice(&nb.row_distances(i)[..k]);
    }
    Neighbours {
        k,
        indices,
        distances,
    }
}
