// Test inputs are listed inline as `&[x.clone()]`; clarity over saving a copy of a small vector.
#![allow(clippy::cloned_ref_to_slice_refs)]

//! Reductions and softmax: GPU vs the CPU reference, long axes, ties, gradients.

mod common;
use common::{check, compare_forward};
use unreid::autograd::gradcheck::Input;
use unreid::{Device, Tensor};

#[test]
fn sum_mean_max_min_over_every_axis() {
    // Axis lengths on both sides of the serial/workgroup threshold (64) and of the workgroup size.
    for (s, shape) in [&[3usize, 4, 5][..], &[2, 70, 3], &[1], &[300, 2]]
        .iter()
        .enumerate()
    {
        for axis in 0..shape.len() as isize {
            for keepdim in [false, true] {
                let x = Input::randn(shape, 40 + s as u64);
                let tag = format!("{shape:?} axis {axis} keepdim {keepdim}");
                check(
                    &format!("sum {tag}"),
                    &|xs, _| xs[0].sum(axis, keepdim),
                    &[x.clone()],
                );
                check(
                    &format!("mean {tag}"),
                    &|xs, _| xs[0].mean(axis, keepdim),
                    &[x.clone()],
                );
                // max/min need distinct values: a near-tie within the finite-difference step
                // would put the numeric derivative across the kink.
                let n: usize = shape.iter().product();
                let spread = (0..n)
                    .map(|i| ((i * 7919 + s) % n) as f64 * 0.01 - 1.0)
                    .collect();
                let distinct = Input::new(spread, shape);
                check(
                    &format!("max {tag}"),
                    &|xs, _| xs[0].max(axis, keepdim),
                    &[distinct.clone()],
                );
                let negative_axis = axis - shape.len() as isize;
                check(
                    &format!("min {tag}"),
                    &|xs, _| xs[0].min(negative_axis, keepdim),
                    &[distinct],
                );
            }
        }
    }
}

#[test]
fn long_reductions_stay_accurate() {
    // 100,003 elements in one workgroup reduce; f32 tree sums vs the f64 reference.
    let x = Input::uniform(&[100_003], -1.0, 1.0, 7);
    compare_forward(
        "sum 100003",
        &|xs, _| xs[0].sum(0, false),
        &[x.clone()],
        1e-4,
        1e-3,
    );
    compare_forward(
        "max 100003",
        &|xs, _| xs[0].max(0, false),
        &[x.clone()],
        0.0,
        0.0,
    );
    compare_forward(
        "min 100003",
        &|xs, _| xs[0].min(0, false),
        &[x.clone()],
        0.0,
        0.0,
    );
    compare_forward(
        "mean_all 100003",
        &|xs, _| xs[0].mean_all(),
        &[x],
        1e-4,
        1e-6,
    );
    // Many outputs over a long axis, and many outputs over a short strided axis.
    let y = Input::randn(&[37, 1000], 8);
    compare_forward(
        "sum rows",
        &|xs, _| xs[0].sum(1, false),
        &[y.clone()],
        1e-5,
        1e-4,
    );
    compare_forward("sum cols", &|xs, _| xs[0].sum(0, false), &[y], 1e-5, 1e-4);
}

fn argmax_of(values: &[f32], shape: &[usize], axis: isize, device: &Device) -> Vec<i32> {
    let t = Tensor::from_slice(values, shape, device).unwrap();
    t.argmax(axis, false).unwrap().to_vec_i32().unwrap()
}

#[test]
fn argmax_argmin_take_the_first_of_ties() {
    let g = common::gpu();
    let v = [1.0, 3.0, 3.0, 0.0, 2.0, 2.0, 2.0, -1.0];
    for device in [&g, &Device::Cpu] {
        assert_eq!(argmax_of(&v, &[2, 4], 1, device), vec![1, 0]);
        assert_eq!(argmax_of(&v, &[2, 4], 0, device), vec![1, 0, 0, 0]);
        // Column 1 and 2 tie at 3 vs 2; a real tie: both rows equal.
        assert_eq!(argmax_of(&[5.0, 5.0, 5.0], &[3], 0, device), vec![0]);
        let t = Tensor::from_slice(&v, &[8], device).unwrap();
        assert_eq!(t.argmin(0, false).unwrap().to_vec_i32().unwrap(), vec![7]);
    }
    // A long axis whose maximum occurs in several workgroup lanes.
    let mut long = vec![0.0f32; 5000];
    for i in [4999, 1234, 777, 3000] {
        long[i] = 9.0;
    }
    assert_eq!(argmax_of(&long, &[5000], 0, &g), vec![777]);
    // Random data against the reference, keepdim shape included.
    let x = Input::randn(&[6, 200], 9);
    let f32s: Vec<f32> = x.values.iter().map(|&v| v as f32).collect();
    assert_eq!(
        argmax_of(&f32s, &[6, 200], 1, &g),
        argmax_of(&f32s, &[6, 200], 1, &Device::Cpu)
    );
    let t = Tensor::from_slice(&f32s, &[6, 200], &g).unwrap();
    assert_eq!(t.argmax(1, true).unwrap().shape(), &[6, 1]);
}

#[test]
fn sum_to_shape_undoes_broadcasting() {
    let x = Input::randn(&[2, 3, 4], 11);
    check(
        "sum_to_shape [3,1]",
        &|xs, _| xs[0].sum_to_shape(&[3, 1]),
        &[x.clone()],
    );
    check(
        "sum_to_shape [4]",
        &|xs, _| xs[0].sum_to_shape(&[4]),
        &[x.clone()],
    );
    check("sum_to_shape []", &|xs, _| xs[0].sum_to_shape(&[]), &[x]);
}

#[test]
fn softmax_and_log_softmax() {
    for (s, shape) in [&[1usize, 1][..], &[3, 5], &[2, 300], &[2, 2, 7]]
        .iter()
        .enumerate()
    {
        let x = Input::randn(shape, 60 + s as u64);
        check(
            &format!("softmax {shape:?}"),
            &|xs, _| xs[0].softmax(),
            &[x.clone()],
        );
        check(
            &format!("log_softmax {shape:?}"),
            &|xs, _| xs[0].log_softmax(),
            &[x],
        );
    }
    // Large logits (temperature 0.05 on cosine similarities reaches +-20; far larger here) stay finite.
    let big = Input::uniform(&[4, 751], -2000.0, 2000.0, 61);
    compare_forward(
        "softmax large logits",
        &|xs, _| xs[0].softmax(),
        &[big.clone()],
        1e-4,
        1e-6,
    );
    compare_forward(
        "log_softmax large logits",
        &|xs, _| xs[0].log_softmax(),
        &[big],
        1e-5,
        1e-3,
    );
}
