//! Reference batched matmul through the `gemm` crate (a well-kept pure-Rust GEMM, f32 and f64).

use rayon::prelude::*;

use super::Float;

/// Sizes and layout of one batched product `C[b] = op(A[b]) * op(B[b])` (see shaders/matmul.wgsl).
#[derive(Clone, Copy, Debug)]
pub struct MatmulDims {
    pub batch: usize,
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    /// False when A (or B) is one matrix shared by every batch entry.
    pub a_batched: bool,
    pub b_batched: bool,
}

/// When the transposed product `C^T = op(B)^T op(A)^T` replaces `C = op(A) op(B)`: B stored
/// transposed ([n, k]), m in this range, and n and k both at least twice m. The
/// `gemm` crate packs its right operand once per block of rows of the left one, value by value
/// when that operand is stored transposed; with few rows to share the packing it costs more than
/// the multiply-adds (a convolution's weight gradient dY cols^T: [64 x 2048] x [576 x 2048]^T runs
/// at 33 GFLOP/s single-threaded on a 2-core AVX-512 machine). Swapped, the large B is the left
/// operand (packed with vector loads in either layout) and the small A the right one: 88 GFLOP/s
/// there, output transposes included; with m >= 512, or n or k short, the direct product is as
/// fast or faster.
const TRANSPOSED_PRODUCT_ROWS: std::ops::RangeInclusive<usize> = 16..=256;

thread_local! {
    /// Scratch for the transposed output of a transposed product (one per thread).
    static TRANSPOSED_OUTPUT: std::cell::RefCell<Vec<f64>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst[c * rows + r] = src[r * cols + c]` for a `[rows, cols]` `src`, in 8 x 8 tiles (both sides
/// stay in a few cache lines while a tile moves). A whole tile goes through a fixed-size array
/// (8 row loads, 8 column stores, no bounds tests inside; its share of a Winograd forward profile
/// went from 16.5% to 13.3% with it); the edges of a size that is not a multiple of 8 go value by
/// value.
pub(crate) fn transpose_into<T: Float>(src: &[T], rows: usize, cols: usize, dst: &mut [T]) {
    const TILE: usize = 8;
    let (src, dst) = (&src[..rows * cols], &mut dst[..rows * cols]);
    let (full_rows, full_cols) = (rows - rows % TILE, cols - cols % TILE);
    for r0 in (0..full_rows).step_by(TILE) {
        for c0 in (0..full_cols).step_by(TILE) {
            let mut tile = [[T::zero(); TILE]; TILE];
            for (r, row) in tile.iter_mut().enumerate() {
                row.copy_from_slice(&src[(r0 + r) * cols + c0..][..TILE]);
            }
            for c in 0..TILE {
                let out: &mut [T; TILE] = (&mut dst[(c0 + c) * rows + r0..][..TILE])
                    .try_into()
                    .expect("a tile's column");
                for (r, o) in out.iter_mut().enumerate() {
                    *o = tile[r][c];
                }
            }
        }
        for r in r0..r0 + TILE {
            for c in full_cols..cols {
                dst[c * rows + r] = src[r * cols + c];
            }
        }
    }
    for r in full_rows..rows {
        for c in 0..cols {
            dst[c * rows + r] = src[r * cols + c];
        }
    }
}

/// One operand of `gemm::gemm`: its storage and the strides of its rows and columns.
#[derive(Clone, Copy)]
struct Operand<'a, T> {
    data: &'a [T],
    row_stride: isize,
    col_stride: isize,
}

impl<'a, T> Operand<'a, T> {
    /// A row-major matrix [rows, cols] as stored, read as itself or (`transposed`) as its
    /// transpose.
    fn new(data: &'a [T], cols: usize, transposed: bool) -> Self {
        let (row_stride, col_stride) = if transposed {
            (1, cols as isize)
        } else {
            (cols as isize, 1)
        };
        Operand {
            data,
            row_stride,
            col_stride,
        }
    }

    fn transposed(self) -> Self {
        Operand {
            row_stride: self.col_stride,
            col_stride: self.row_stride,
            ..self
        }
    }
}

/// The crate's one GEMM wrapper: `dst[m, n] (+)= op(a) * op(b)`, all row-major and contiguous;
/// `a` is [m, k] ([k, m] when `ta`), `b` is [k, n] ([n, k] when `tb`). `accumulate` adds to `dst`
/// instead of overwriting it; `parallel` lets the `gemm` crate split the product over rayon's
/// pool (its split is over output blocks, so the result does not depend on the thread count).
///
/// Products with a transposed B and few rows (`TRANSPOSED_PRODUCT_ROWS`) run as the transposed
/// product into a scratch `C^T`, then transposed into `dst`: each output is the same sum of the
/// same products in the same order (the crate blocks k alike), so the bits are those of the direct
/// product at the sizes checked in tests/cpu_fast.rs; only the packing cost differs.
///
/// Panics when a slice is shorter than its shape says (a caller's shape bug, never user input).
#[allow(clippy::too_many_arguments)]
pub fn gemm_into<T: Float>(
    dst: &mut [T],
    a: &[T],
    b: &[T],
    (m, k, n): (usize, usize, usize),
    ta: bool,
    tb: bool,
    accumulate: bool,
    parallel: bool,
) {
    if m * n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].iter_mut().for_each(|v| *v = T::zero());
        }
        return;
    }
    assert!(dst.len() >= m * n && a.len() >= m * k && b.len() >= k * n);
    let dst = &mut dst[..m * n];
    // op(A) [m, k] is stored [k, m] when transposed; op(B) [k, n] is stored [n, k].
    let lhs = Operand::new(&a[..m * k], if ta { m } else { k }, ta);
    let rhs = Operand::new(&b[..k * n], if tb { k } else { n }, tb);
    if tb && TRANSPOSED_PRODUCT_ROWS.contains(&m) && n >= 2 * m && k >= 2 * m {
        // Taken out of the thread-local for the call: a thread waiting inside a parallel
        // product may run another task's `gemm_into` (rayon work stealing), which then finds
        // the slot empty and allocates its own.
        let mut scratch = TRANSPOSED_OUTPUT.with(|s| s.take());
        let words = (m * n * std::mem::size_of::<T>()).div_ceil(8);
        if scratch.len() < words {
            scratch.resize(words, 0.0);
        }
        {
            // SAFETY: the buffer holds at least m*n `T`s (f64 words are 8-aligned, enough for f32
            // and f64) and any bit pattern is a valid float; it is written (the transposed `dst`
            // or the product's overwrite) before it is read.
            let dst_t: &mut [T] =
                unsafe { std::slice::from_raw_parts_mut(scratch.as_mut_ptr().cast::<T>(), m * n) };
            if accumulate {
                transpose_into(dst, m, n, dst_t);
            }
            product(
                dst_t,
                (n, k, m),
                rhs.transposed(),
                lhs.transposed(),
                accumulate,
                parallel,
            );
            transpose_into(dst_t, n, m, dst);
        }
        TRANSPOSED_OUTPUT.with(|s| *s.borrow_mut() = scratch);
        return;
    }
    product(dst, (m, k, n), lhs, rhs, accumulate, parallel);
}

/// `dst[m, n] (+)= lhs [m, k] * rhs [k, n]` through `gemm::gemm`, `dst` row-major.
fn product<T: Float>(
    dst: &mut [T],
    (m, k, n): (usize, usize, usize),
    lhs: Operand<T>,
    rhs: Operand<T>,
    accumulate: bool,
    parallel: bool,
) {
    let span = |o: &Operand<T>, rows: usize, cols: usize| {
        (rows - 1) * o.row_stride as usize + (cols - 1) * o.col_stride as usize + 1
    };
    assert!(
        dst.len() >= m * n
            && lhs.data.len() >= span(&lhs, m, k)
            && rhs.data.len() >= span(&rhs, k, n)
    );
    let par = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assert above bounds every access made with these strides (the last element of
    // each operand lies inside its slice, dst spans m*n), and `dst` is a unique borrow, so it
    // aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride,
            lhs.row_stride,
            rhs.data.as_ptr(),
            rhs.col_stride,
            rhs.row_stride,
            T::one(),
            T::one(),
            false,
            false,
            false,
            par,
        );
    }
}

pub fn matmul<T: Float>(a: &[T], b: &[T], d: MatmulDims) -> Vec<T> {
    let (m, k, n) = (d.m, d.k, d.n);
    let mut c = vec![T::zero(); d.batch * m * n];
    if m * n == 0 {
        return c;
    }
    let one_product = |i: usize, out: &mut [T], parallel: bool| {
        let a_off = if d.a_batched { i * m * k } else { 0 };
        let b_off = if d.b_batched { i * k * n } else { 0 };
        gemm_into(
            out,
            &a[a_off..a_off + m * k],
            &b[b_off..b_off + k * n],
            (m, k, n),
            d.trans_a,
            d.trans_b,
            false,
            parallel,
        );
    };
    if d.batch == 1 {
        one_product(0, &mut c, true);
    } else {
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, out)| one_product(i, out, false));
    }
    c
}
