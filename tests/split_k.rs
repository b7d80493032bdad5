//! Split-K matmul (the reduction cut over workgroups, then `splitk_sum`) against the CPU
//! reference: both split-capable kernels (`matmul_tiled`, `matmul_reg`) forced on lavapipe, several
//! splits with a remainder chunk, batch 1 and batched/broadcast products, all transposes, odd
//! sizes; gradients through split products; the conv weight gradient (its long-reduction GEMM);
//! and the automatic choice of the split.

mod common;

use unreid::autograd::gradcheck::assert_close;
use unreid::ops::conv2d::Conv2dSpec;
use unreid::ops::matmul::{split_k, with_matmul_kernel, with_split_k, MatmulDims, MatmulKernel};
use unreid::{random, Device, Tensor};

const SPLIT_FAMILIES: [MatmulKernel; 2] = [MatmulKernel::Tiled, MatmulKernel::Reg];

fn randn(shape: &[usize], seed: u64, device: &Device) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n as u64).map(|i| random::normal(seed, i)).collect();
    Tensor::from_f64(&v, shape, device).unwrap()
}

fn to64(t: &Tensor) -> Vec<f64> {
    t.to_vec().unwrap().iter().map(|&x| x as f64).collect()
}

fn stored(batch: &[usize], rows: usize, cols: usize, trans: bool) -> Vec<usize> {
    let mut s = batch.to_vec();
    s.extend(if trans { [cols, rows] } else { [rows, cols] });
    s
}

/// op(A) op(B) with the reduction forced into `splits` chunks, against the CPU device.
#[allow(clippy::too_many_arguments)]
fn check(
    gpu: &Device,
    family: MatmulKernel,
    splits: usize,
    a_batch: &[usize],
    b_batch: &[usize],
    (m, k, n): (usize, usize, usize),
    (ta, tb): (bool, bool),
    seed: u64,
) {
    let (a_shape, b_shape) = (stored(a_batch, m, k, ta), stored(b_batch, k, n, tb));
    let cpu = Device::cpu();
    let want = randn(&a_shape, seed, &cpu)
        .matmul_t(&randn(&b_shape, seed + 1, &cpu), ta, tb)
        .unwrap();
    let got = with_matmul_kernel(family, || {
        with_split_k(splits, || {
            randn(&a_shape, seed, gpu)
                .matmul_t(&randn(&b_shape, seed + 1, gpu), ta, tb)
                .unwrap()
        })
    });
    let what = format!("{family:?} split {splits} {a_shape:?} ta={ta} x {b_shape:?} tb={tb}");
    assert_eq!(got.shape(), want.shape(), "{what}");
    let atol = 2e-5 * (k as f64).sqrt();
    assert_close(&what, &to64(&got), &to64(&want), 1e-4, atol);
}

#[test]
fn split_products_match_the_cpu_reference() {
    let gpu = common::gpu();
    // K = 1037 splits 2 -> 519 + 518, 3 -> 346 x 2 + 345, 7 -> 149 x 6 + 143: every split has a
    // remainder chunk; 16 chunks of 65 at K = 1037 (the last 62) also straddle TILE_K = 16.
    let sizes = [(1, 1037, 1), (7, 1037, 9), (33, 300, 65), (5, 4, 3)];
    for family in SPLIT_FAMILIES {
        for splits in [2, 3, 7, 16] {
            for (i, &size) in sizes.iter().enumerate() {
                for tr in [(false, false), (false, true), (true, false), (true, true)] {
                    check(&gpu, family, splits, &[], &[], size, tr, 10 * i as u64);
                }
            }
        }
    }
}

#[test]
fn split_batched_and_broadcast_products() {
    let gpu = common::gpu();
    for family in SPLIT_FAMILIES {
        for splits in [2, 5] {
            let size = (9, 211, 13);
            check(&gpu, family, splits, &[1], &[1], size, (false, true), 1);
            check(&gpu, family, splits, &[3], &[3], size, (true, false), 2);
            check(&gpu, family, splits, &[], &[3], size, (false, false), 3);
            check(&gpu, family, splits, &[3], &[], size, (true, true), 4);
        }
    }
}

#[test]
fn gradients_through_split_products_match_the_cpu_reference() {
    let gpu = common::gpu();
    let (m, k, n) = (6, 517, 5);
    let run = |device: &Device| -> (Vec<f64>, Vec<f64>) {
        let a = randn(&[m, k], 7, device).with_requires_grad();
        let b = randn(&[k, n], 8, device).with_requires_grad();
        let g = randn(&[m, n], 9, device);
        a.matmul(&b)
            .unwrap()
            .mul(&g)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (to64(&a.grad().unwrap()), to64(&b.grad().unwrap()))
    };
    let (ga_want, gb_want) = run(&Device::cpu());
    for family in SPLIT_FAMILIES {
        // The forward product reduces over k = 517 in 4 chunks; the forced split applies to the
        // gradient products too (dA over n = 5 in 3 chunks of 2, dB over m = 6 in 3 of 2).
        let (ga, gb) = with_matmul_kernel(family, || with_split_k(4, || run(&gpu)));
        assert_close(&format!("{family:?} dA"), &ga, &ga_want, 1e-4, 1e-4);
        assert_close(&format!("{family:?} dB"), &gb, &gb_want, 1e-4, 1e-4);
    }
}

#[test]
fn conv_weight_gradient_with_split_k_matches_the_cpu_reference() {
    let gpu = common::gpu();
    // Batch 1 and 3, odd spatial sizes: the weight gradient reduces over N x Ho x Wo.
    for (batch, splits) in [(1, 3), (3, 5)] {
        let run = |device: &Device| -> Vec<f64> {
            let x = randn(&[batch, 3, 11, 9], 20, device);
            let w = randn(&[5, 3, 3, 3], 21, device).with_requires_grad();
            let y = x.conv2d(&w, None, Conv2dSpec::new(1, 1)).unwrap();
            let g = randn(y.shape(), 22, device);
            y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
            to64(&w.grad().unwrap())
        };
        let want = run(&Device::cpu());
        for family in SPLIT_FAMILIES {
            let got = with_matmul_kernel(family, || with_split_k(splits, || run(&gpu)));
            let what = format!("{family:?} conv dW batch {batch} split {splits}");
            assert_close(&what, &got, &want, 1e-4, 1e-4);
        }
    }
}

fn dims(batch: usize, m: usize, k: usize, n: usize) -> MatmulDims {
    MatmulDims {
        batch,
        m,
        k,
        n,
        trans_a: false,
        trans_b: true,
        a_batched: false,
        b_batched: false,
    }
}

#[test]
fn the_automatic_split_fills_the_compute_units() {
    let big = usize::MAX / 2;
    // ResNet-50 layer1 1x1 dW at batch 64 x 256 x 128: [64 x 131072] x [131072 x 64], one 64x64
    // tile; 132 compute units want 264 workgroups.
    let s = split_k(&dims(1, 64, 131_072, 64), 1, 132, big, 65_535);
    assert_eq!(s, 264);
    assert!(131_072 / s >= 256, "chunks stay long");
    // The stem's dW [64 x 147]: 3 tiles over N = 147 with K = 131072 -> 88 splits, 264 groups.
    assert_eq!(split_k(&dims(1, 64, 131_072, 147), 3, 132, big, 65_535), 88);
    // Enough tiles already: no split.
    assert_eq!(split_k(&dims(1, 512, 4608, 512), 288, 132, big, 65_535), 1);
    // Short reductions are never split.
    assert_eq!(split_k(&dims(1, 64, 500, 64), 1, 132, big, 65_535), 1);
    // K bounds the split (chunks of at least 256), so does the partials' size and the grid's z.
    assert_eq!(split_k(&dims(1, 8, 1024, 8), 1, 132, big, 65_535), 4);
    assert_eq!(
        split_k(&dims(1, 64, 131_072, 64), 1, 132, 64 * 64 * 10, 65_535),
        10
    );
    assert_eq!(split_k(&dims(4, 64, 131_072, 64), 1, 132, big, 40), 10);
}
