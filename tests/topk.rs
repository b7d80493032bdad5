//! Per-row top-k: GPU vs the full-sort reference, ties, both directions, long rows.

mod common;
use unreid::autograd::gradcheck::Input;
use unreid::{Device, Tensor};

fn run(
    values: &[f32],
    shape: &[usize],
    k: usize,
    largest: bool,
    d: &Device,
) -> (Vec<f32>, Vec<i32>) {
    let t = Tensor::from_slice(values, shape, d).unwrap();
    let (v, i) = t.topk(k, largest).unwrap();
    (v.to_vec().unwrap(), i.to_vec_i32().unwrap())
}

#[test]
fn topk_matches_the_sorting_reference() {
    let g = common::gpu();
    let cases: &[(&[usize], usize)] = &[
        (&[1, 1], 1),
        (&[3, 7], 7),
        (&[5, 300], 30),
        (&[2, 12_936], 64),
        (&[4, 129], 6),
    ];
    for (s, &(shape, k)) in cases.iter().enumerate() {
        let x: Vec<f32> = Input::randn(shape, 70 + s as u64)
            .values
            .iter()
            .map(|&v| v as f32)
            .collect();
        for largest in [false, true] {
            assert_eq!(
                run(&x, shape, k, largest, &g),
                run(&x, shape, k, largest, &Device::Cpu),
                "{shape:?} k {k} largest {largest}"
            );
        }
    }
}

#[test]
fn ties_go_to_the_lower_index() {
    let g = common::gpu();
    // Many equal values spread over different invocations' strided shares.
    let mut x = vec![5.0f32; 1000];
    for i in [999, 3, 500, 128, 129, 0] {
        x[i] = 1.0;
    }
    let (v, i) = run(&x, &[1, 1000], 8, false, &g);
    assert_eq!(i, vec![0, 3, 128, 129, 500, 999, 1, 2]);
    assert_eq!(v, vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 5.0, 5.0]);
    let (_, i) = run(&x, &[1, 1000], 3, true, &g);
    assert_eq!(i, vec![1, 2, 4]);
}

#[test]
fn bad_k_is_an_error() {
    let t = Tensor::zeros(&[2, 5], &Device::Cpu).unwrap();
    assert!(t.topk(6, false).is_err() && t.topk(0, false).is_err());
    let wide = Tensor::zeros(&[1, 100], &Device::Cpu).unwrap();
    assert!(wide
        .topk(65, false)
        .unwrap_err()
        .to_string()
        .contains("k = 65"));
}
