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

pub fn matmul<T: Float>(a: &[T], b: &[T], d: MatmulDims) -> Vec<T> {
    let (m, k, n) = (d.m, d.k, d.n);
    let mut c = vec![T::zero(); d.batch * m * n];
    if m * n == 0 {
        return c;
    }
    // Strides (row, column) of op(A) and op(B) in their storage.
    let (a_rs, a_cs) = if d.trans_a {
        (1, m as isize)
    } else {
        (k as isize, 1)
    };
    let (b_rs, b_cs) = if d.trans_b {
        (1, k as isize)
    } else {
        (n as isize, 1)
    };
    let one_product = |i: usize, out: &mut [T], parallel: gemm::Parallelism| {
        let a_off = if d.a_batched { i * m * k } else { 0 };
        let b_off = if d.b_batched { i * k * n } else { 0 };
        // SAFETY: the pointers cover m*k, k*n and m*n elements with the strides given above,
        // which the caller's shape checks guarantee.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out.as_mut_ptr(),
                1,
                n as isize,
                false,
                a.as_ptr().add(a_off),
                a_cs,
                a_rs,
                b.as_ptr().add(b_off),
                b_cs,
                b_rs,
                T::zero(),
                T::one(),
                false,
                false,
                false,
                parallel,
            );
        }
    };
    if d.batch == 1 {
        one_product(0, &mut c, gemm::Parallelism::Rayon(0));
    } else {
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, out)| one_product(i, out, gemm::Parallelism::None));
    }
    c
}
