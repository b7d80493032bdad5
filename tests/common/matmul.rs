//! Matmul test helpers shared by tests/matmul.rs and tests/split_k.rs: seeded operands, stored
//! shapes of transposed operands, and one product on the GPU under a chosen kernel (and split)
//! against the CPU reference.

#![allow(dead_code)]

use unreid::autograd::gradcheck::assert_close;
use unreid::ops::matmul::{with_matmul_kernel, with_split_k, MatmulKernel};
use unreid::{random, Device, Tensor};

pub const TRANSPOSES: [(bool, bool); 4] =
    [(false, false), (false, true), (true, false), (true, true)];

/// Seeded normal values as a tensor on `device`.
pub fn randn(shape: &[usize], seed: u64, device: &Device) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n as u64).map(|i| random::normal(seed, i)).collect();
    Tensor::from_f64(&v, shape, device).unwrap()
}

/// A tensor's values widened to f64.
pub fn to64(t: &Tensor) -> Vec<f64> {
    t.to_vec().unwrap().iter().map(|&x| x as f64).collect()
}

/// Stored shape of an operand: `batch` leading dims, then rows x cols (swapped when transposed).
pub fn stored(batch: &[usize], rows: usize, cols: usize, trans: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if trans { [cols, rows] } else { [rows, cols] });
    s
}

fn t(trans: bool) -> &'static str {
    if trans {
        "^T"
    } else {
        ""
    }
}

/// op(A) [m,k] times op(B) [k,n] (`size` = (m, k, n), with the given batch dims) on the GPU under
/// `family` with the reduction split into `split` chunks (None: the automatic choice), against
/// the CPU reference (rtol 1e-4; atol grows like sqrt(k), the f32 rounding of sums of k products
/// of N(0,1) values). A takes `seed`, B `seed + 1`.
pub fn check_product(
    gpu: &Device,
    family: MatmulKernel,
    split: Option<usize>,
    (a_batch, b_batch): (&[usize], &[usize]),
    (m, k, n): (usize, usize, usize),
    (ta, tb): (bool, bool),
    seed: u64,
) {
    let a_shape = stored(a_batch, m, k, ta);
    let b_shape = stored(b_batch, k, n, tb);
    let cpu = Device::cpu();
    let want = randn(&a_shape, seed, &cpu)
        .matmul_t(&randn(&b_shape, seed + 1, &cpu), ta, tb)
        .unwrap();
    let run = || {
        randn(&a_shape, seed, gpu)
            .matmul_t(&randn(&b_shape, seed + 1, gpu), ta, tb)
            .unwrap()
    };
    let got = with_matmul_kernel(family, || match split {
        Some(s) => with_split_k(s, run),
        None => run(),
    });
    let split = split.map_or(String::new(), |s| format!(" split {s}"));
    let what = format!(
        "{:?}{split} {a_shape:?}{} x {b_shape:?}{}",
        family,
        t(ta),
        t(tb)
    );
    assert_eq!(got.shape(), want.shape(), "{what}: shape");
    let atol = 2e-5 * (k.max(1) as f64).sqrt();
    assert_close(&what, &to64(&got), &to64(&want), 1e-4, atol);
}
