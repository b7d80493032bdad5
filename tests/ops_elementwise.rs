// Test inputs are listed inline as `&[x.clone()]`; clarity over saving a copy of a small vector.
#![allow(clippy::cloned_ref_to_slice_refs)]

//! Elementwise ops: GPU vs the CPU reference, numeric gradient checks, broadcasting.

mod common;
use common::{check, compare_forward};
use unreid::autograd::gradcheck::Input;
use unreid::{Device, Tensor};

/// Shapes that stress the kernels: one element, not a multiple of the workgroup, rank 3.
const SHAPES: &[&[usize]] = &[&[1], &[257], &[3, 5, 7]];

type Unary = fn(&Tensor) -> unreid::Result<Tensor>;

#[test]
fn unary_ops_match_reference_and_differentiate() {
    let cases: &[(&str, Unary, f64, f64)] = &[
        ("neg", |t| t.neg(), -2.0, 2.0),
        ("exp", |t| t.exp(), -2.0, 2.0),
        ("log", |t| t.log(), 0.2, 3.0),
        ("sqrt", |t| t.sqrt(), 0.2, 3.0),
        ("abs", |t| t.abs(), -2.0, 2.0),
        ("relu", |t| t.relu(), -2.0, 2.0),
        ("relu6", |t| t.relu6(), -3.0, 9.0),
        ("sigmoid", |t| t.sigmoid(), -6.0, 6.0),
        ("clamp", |t| t.clamp(-0.5, 0.7), -2.0, 2.0),
        ("powf", |t| t.powf(2.5), 0.2, 2.0),
        ("powf_int_negative_base", |t| t.powf(3.0), -2.0, 2.0),
        ("add_scalar", |t| t.add_scalar(1.5), -2.0, 2.0),
        ("mul_scalar", |t| t.mul_scalar(-0.75), -2.0, 2.0),
        ("recip", |t| t.recip(), 0.5, 3.0),
        ("square", |t| t.square(), -2.0, 2.0),
    ];
    for (name, op, lo, hi) in cases {
        for (s, shape) in SHAPES.iter().enumerate() {
            let x = Input::uniform(shape, *lo, *hi, 10 + s as u64);
            check(&format!("{name} {shape:?}"), &|xs, _| op(&xs[0]), &[x]);
        }
    }
}

#[test]
fn piecewise_constant_maps_forward() {
    let x = Input::uniform(&[300], -2.0, 2.0, 3);
    compare_forward("sign", &|xs, _| xs[0].sign(), &[x.clone()], 0.0, 0.0);
    compare_forward(
        "gt_scalar",
        &|xs, _| xs[0].gt_scalar(0.25),
        &[x.clone()],
        0.0,
        0.0,
    );
    compare_forward("lt_scalar", &|xs, _| xs[0].lt_scalar(-0.25), &[x], 0.0, 0.0);
}

type Binary = fn(&Tensor, &Tensor) -> unreid::Result<Tensor>;

#[test]
fn binary_ops_broadcast_and_differentiate() {
    let cases: &[(&str, Binary, f64, f64)] = &[
        ("add", |a, b| a.add(b), -2.0, 2.0),
        ("sub", |a, b| a.sub(b), -2.0, 2.0),
        ("mul", |a, b| a.mul(b), -2.0, 2.0),
        ("div", |a, b| a.div(b), 0.5, 2.0),
        ("pow", |a, b| a.pow(b), 0.5, 2.0),
        ("maximum", |a, b| a.maximum(b), -2.0, 2.0),
        ("minimum", |a, b| a.minimum(b), -2.0, 2.0),
    ];
    let shape_pairs: &[(&[usize], &[usize])] = &[
        (&[1], &[1]),
        (&[2, 3], &[2, 3]),
        (&[3, 1, 5], &[4, 1]),
        (&[130], &[]),
        (&[], &[2, 3]),
        (&[2, 1, 3, 1], &[1, 4, 1, 5]),
    ];
    for (name, op, lo, hi) in cases {
        for (s, (sa, sb)) in shape_pairs.iter().enumerate() {
            let a = Input::uniform(sa, *lo, *hi, 100 + s as u64);
            let b = Input::uniform(sb, *lo, *hi, 200 + s as u64);
            check(
                &format!("{name} {sa:?} {sb:?}"),
                &|xs, _| op(&xs[0], &xs[1]),
                &[a, b],
            );
        }
    }
}

#[test]
fn comparisons_and_where() {
    // Values on a coarse grid so that equal elements really occur.
    let grid = |shape: &[usize], seed| {
        let mut i = Input::uniform(shape, -2.0, 2.0, seed);
        i.values.iter_mut().for_each(|v| *v = v.round());
        i
    };
    let (a, b) = (grid(&[4, 1, 6], 1), grid(&[3, 6], 2));
    let ops: &[(&str, Binary)] = &[
        ("eq", |a, b| a.eq(b)),
        ("ne", |a, b| a.ne(b)),
        ("lt", |a, b| a.lt(b)),
        ("le", |a, b| a.le(b)),
        ("gt", |a, b| a.gt(b)),
        ("ge", |a, b| a.ge(b)),
    ];
    for (name, op) in ops {
        compare_forward(
            name,
            &|xs, _| op(&xs[0], &xs[1]),
            &[a.clone(), b.clone()],
            0.0,
            0.0,
        );
    }
    // where_select: a mask broadcast against two differently shaped branches.
    let cond = grid(&[4, 1, 1], 3);
    check(
        "where_select",
        &|xs, d| {
            let c = Tensor::from_f64(&cond.values, &cond.shape, d)?;
            Tensor::where_select(&c, &xs[0], &xs[1])
        },
        &[Input::randn(&[4, 3, 6], 4), Input::randn(&[6], 5)],
    );
}

#[test]
fn maximum_splits_ties_like_torch() {
    let d = Device::CpuF64;
    let a = Tensor::from_slice(&[1.0, 2.0, 3.0], &[3], &d)
        .unwrap()
        .with_requires_grad();
    let b = Tensor::from_slice(&[1.0, 5.0, 0.0], &[3], &d)
        .unwrap()
        .with_requires_grad();
    a.maximum(&b)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert_eq!(a.grad().unwrap().to_vec().unwrap(), vec![0.5, 0.0, 1.0]);
    assert_eq!(b.grad().unwrap().to_vec().unwrap(), vec![0.5, 1.0, 0.0]);
}

#[test]
fn shape_and_device_errors_are_results() {
    let g = common::gpu();
    let a = Tensor::zeros(&[3], &g).unwrap();
    let b = Tensor::zeros(&[4], &g).unwrap();
    let err = a.add(&b).unwrap_err().to_string();
    assert!(err.contains("[3]") && err.contains("[4]"), "{err}");
    let c = Tensor::zeros(&[3], &Device::Cpu).unwrap();
    let err = a.add(&c).unwrap_err().to_string();
    assert!(err.contains("different devices"), "{err}");
    let labels = Tensor::from_i32(&[1, 2, 3], &[3], &g).unwrap();
    assert!(a.add(&labels).unwrap_err().to_string().contains("I32"));
}

#[test]
fn broadcasting_over_many_unmergeable_dims() {
    let a = Input::randn(&[2, 1, 2, 1, 2, 1], 15);
    let b = Input::randn(&[1, 3, 1, 3, 1, 3], 16);
    check("mul rank 6 broadcast", &|xs, _| xs[0].mul(&xs[1]), &[a, b]);
}

/// ReLU / ReLU6 backward (one kernel on the GPU) against the rule written here: the upstream
/// gradient passes where 0 < x (and x < 6), exactly, with values at the kinks (0 and 6, which get
/// no gradient), odd sizes and a single element.
#[test]
fn relu_backward_passes_the_gradient_exactly_where_the_input_is_active() {
    for (n, seed) in [(1usize, 1u64), (257, 2), (1000, 3)] {
        let mut x = Input::uniform(&[n], -3.0, 9.0, seed).values;
        // Kinks and values either side of them.
        for (i, v) in [0.0, 6.0, -0.0, 5.999, 1e-6, 6.001].into_iter().enumerate() {
            if i < n {
                x[i] = v;
            }
        }
        let g = Input::randn(&[n], seed + 10).values;
        for relu6 in [false, true] {
            let want: Vec<f64> = x
                .iter()
                .zip(&g)
                .map(|(&x, &g)| {
                    if x > 0.0 && (!relu6 || x < 6.0) {
                        g
                    } else {
                        0.0
                    }
                })
                .collect();
            for device in [common::gpu(), Device::CpuF64] {
                let xt = Tensor::from_f64(&x, &[n], &device)
                    .unwrap()
                    .with_requires_grad();
                let gt = Tensor::from_f64(&g, &[n], &device).unwrap();
                let y = if relu6 { xt.relu6() } else { xt.relu() }.unwrap();
                y.mul(&gt).unwrap().sum_all().unwrap().backward().unwrap();
                let got = xt.grad().unwrap().to_vec_f64().unwrap();
                // f32 on the GPU: compare with the f32 rounding of g.
                let want: Vec<f64> = want.iter().map(|&v| v as f32 as f64).collect();
                let got: Vec<f64> = got.iter().map(|&v| v as f32 as f64).collect();
                assert_eq!(got, want, "relu6={relu6} n={n} on {device}");
            }
        }
    }
}
