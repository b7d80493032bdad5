//! Reference per-row top-k: a full sort by (value, index) of every row.

use rayon::prelude::*;

use super::Float;

/// The k smallest (or largest) values of each row of length `len`, sorted, ties by lower index.
pub fn topk<T: Float>(x: &[T], len: usize, k: usize, largest: bool) -> (Vec<T>, Vec<i32>) {
    let rows: Vec<(Vec<T>, Vec<i32>)> = x
        .par_chunks(len.max(1))
        .map(|row| {
            let mut order: Vec<usize> = (0..row.len()).collect();
            order.sort_by(|&a, &b| {
                let (va, vb) = if largest {
                    (-row[a], -row[b])
                } else {
                    (row[a], row[b])
                };
                va.partial_cmp(&vb)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(&b))
            });
            order.truncate(k);
            (
                order.iter().map(|&i| row[i]).collect(),
                order.iter().map(|&i| i as i32).collect(),
            )
        })
        .collect();
    let mut values = Vec::with_capacity(rows.len() * k);
    let mut indices = Vec::with_capacity(rows.len() * k);
    for (v, i) in rows {
        values.extend(v);
        indices.extend(i);
    }
    (values, indices)
}
