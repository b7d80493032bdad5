//! Dense dot-product tiles, the only O(N^2 D) work: everything else is sparse.
//!
//! `gram_into` computes one block `A B^T` with the crate's GEMM wrapper (`ops::matmul::gemm_into`)
//! on the calling thread; the drivers below spread blocks over rayon's pool (one single-threaded
//! GEMM per worker gives better cache use than one multi-threaded GEMM per block at these sizes).

use super::{Backend, ClusterError, Features};
use crate::ops::matmul::gemm_into;
use rayon::prelude::*;

/// Rows per tile side. 768 x 768 f32 = 2.3 MB of output per worker: big enough for GEMM efficiency,
/// small enough that the selection pass over the tile stays in L2/L3.
pub const TILE: usize = 768;

/// `out[a * b_rows + b] = dot(A[a], B[b])` for row-major `a` (a_rows x dim) and `b` (b_rows x dim).
pub fn gram_into(a: &[f32], a_rows: usize, b: &[f32], b_rows: usize, dim: usize, out: &mut [f32]) {
    assert_eq!(a.len(), a_rows * dim);
    assert_eq!(b.len(), b_rows * dim);
    assert!(out.len() >= a_rows * b_rows);
    // A [a_rows, dim] x B^T: B is stored [b_rows, dim], i.e. op(B) = B transposed.
    gemm_into(out, a, b, (a_rows, dim, b_rows), false, true, false, false);
}

/// One block of the symmetric N x N dot-product matrix: rows `row0..row0+rows` against columns
/// `col0..col0+cols`, with `col0 >= row0`. On a diagonal tile (`row0 == col0`) callers must use only
/// one triangle (or handle both orientations once).
pub struct SymmetricTile<'a> {
    pub row0: usize,
    pub rows: usize,
    pub col0: usize,
    pub cols: usize,
    /// rows x cols, row-major dot products.
    pub gram: &'a [f32],
}

impl SymmetricTile<'_> {
    #[inline]
    pub fn is_diagonal(&self) -> bool {
        self.row0 == self.col0
    }
}

/// Calls `visit` for every upper-triangle block (including the diagonal) of `X X^T`. On the CPU the
/// blocks run in parallel, each worker reusing one tile buffer; on a GPU each block is one matmul
/// (read back, then visited while the next one is computed by the device queue in order).
pub fn for_each_symmetric_tile<F>(
    backend: Backend,
    x: Features<'_>,
    tile: usize,
    visit: F,
) -> Result<(), ClusterError>
where
    F: Fn(&SymmetricTile<'_>) + Sync,
{
    let n = x.rows;
    let tile = tile.max(1);
    let blocks = n.div_ceil(tile);
    let pairs: Vec<(usize, usize)> = (0..blocks)
        .flat_map(|bi| (bi..blocks).map(move |bj| (bi, bj)))
        .collect();
    let span = |b: usize| (b * tile, tile.min(n - b * tile));
    match backend {
        Backend::Cpu => {
            pairs.par_iter().for_each_init(
                || vec![0f32; tile * tile],
                |buf, &(bi, bj)| {
                    let ((row0, rows), (col0, cols)) = (span(bi), span(bj));
                    let a = &x.data[row0 * x.dim..(row0 + rows) * x.dim];
                    let b = &x.data[col0 * x.dim..(col0 + cols) * x.dim];
                    gram_into(a, rows, b, cols, x.dim, buf);
                    visit(&SymmetricTile {
                        row0,
                        rows,
                        col0,
                        cols,
                        gram: &buf[..rows * cols],
                    });
                },
            );
            Ok(())
        }
        Backend::Gpu(device) => {
            let _no_grad = crate::NoGradGuard::new();
            let err = |e: crate::Error| ClusterError::Device(e.to_string());
            let upload = |b: usize| {
                let (start, len) = span(b);
                crate::Tensor::from_slice(
                    &x.data[start * x.dim..(start + len) * x.dim],
                    &[len, x.dim],
                    &device,
                )
            };
            let uploaded: Vec<crate::Tensor> = (0..blocks)
                .map(upload)
                .collect::<Result<_, _>>()
                .map_err(err)?;
            for &(bi, bj) in &pairs {
                let ((row0, rows), (col0, cols)) = (span(bi), span(bj));
                let gram = uploaded[bi]
                    .matmul_t(&uploaded[bj], false, true)
                    .and_then(|g| g.to_vec())
                    .map_err(err)?;
                visit(&SymmetricTile {
                    row0,
                    rows,
                    col0,
                    cols,
                    gram: &gram,
                });
            }
            Ok(())
        }
    }
}
