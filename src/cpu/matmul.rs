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

/// The crate's one GEMM wrapper: `dst[m, n] (+)= op(a) * op(b)`, all row-major and contiguous;
/// `a` is [m, k] ([k, m] when `ta`), `b` is [k, n] ([n, k] when `tb`). `accumulate` adds to `dst`
/// instead of overwriting it; `parallel` lets the `gemm` crate split the product over rayon's
/// pool (its split is over output blocks, so the result does not depend on the thread count).
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
    // Strides (row, column) of op(A) and op(B) in their storage.
    let (a_rs, a_cs) = if ta { (1, m as isize) } else { (k as isize, 1) };
    let (b_rs, b_cs) = if tb { (1, k as isize) } else { (n as isize, 1) };
    let par = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the assert above bounds every access made with these strides (op(A) spans m*k
    // elements, op(B) k*n, dst m*n), and `dst` is a unique borrow, so it aliases neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
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
