// Test inputs are listed inline as `&[x.clone()]`; clarity over saving a copy of a small vector.
#![allow(clippy::cloned_ref_to_slice_refs)]

//! Convolution: GPU vs the CPU reference and f64 finite differences, over strides, padding,
//! dilation, groups (depthwise included), 1x1 and 7x7 kernels, odd sizes and batch 1.

mod common;
use common::{check_on, compare_forward_on};
use unreid::autograd::gradcheck::Input;
use unreid::ops::conv2d::Conv2dSpec;

/// The op's full check (finite differences, GPU vs the reference) on the adapter's own kernel
/// shapes and on the GPU shapes (on lavapipe: im2col rows per workgroup 32, then 4; batch-norm
/// reductions 8, then 256 wide).
fn conv_case(name: &str, x: &[usize], w: &[usize], spec: Conv2dSpec, bias: bool, seed: u64) {
    let mut inputs = vec![Input::randn(x, seed), Input::randn(w, seed + 1)];
    if bias {
        inputs.push(Input::randn(&[w[0]], seed + 2));
    }
    for device in [common::gpu(), common::gpu_shaped()] {
        check_on(
            &device,
            name,
            &move |xs, _| xs[0].conv2d(&xs[1], xs.get(2), spec),
            &inputs,
        );
    }
}

#[test]
fn conv2d_gradients() {
    let s = Conv2dSpec::new;
    conv_case(
        "3x3 pad 1 bias",
        &[2, 3, 5, 7],
        &[4, 3, 3, 3],
        s(1, 1),
        true,
        1,
    );
    conv_case(
        "3x3 stride 2 odd",
        &[1, 2, 7, 5],
        &[3, 2, 3, 3],
        s(2, 1),
        false,
        4,
    );
    conv_case("1x1", &[2, 4, 3, 3], &[5, 4, 1, 1], s(1, 0), true, 7);
    conv_case(
        "1x1 stride 2",
        &[2, 3, 5, 5],
        &[2, 3, 1, 1],
        s(2, 0),
        false,
        10,
    );
    conv_case(
        "7x7 stride 2 pad 3",
        &[1, 2, 9, 8],
        &[2, 2, 7, 7],
        s(2, 3),
        false,
        13,
    );
    conv_case(
        "dilation 2",
        &[2, 2, 7, 6],
        &[3, 2, 3, 3],
        s(1, 2).dilation(2),
        false,
        16,
    );
    conv_case(
        "groups 2",
        &[2, 4, 5, 5],
        &[6, 2, 3, 3],
        s(1, 1).groups(2),
        true,
        19,
    );
    conv_case(
        "depthwise stride 2",
        &[2, 3, 7, 6],
        &[3, 1, 3, 3],
        s(2, 1).groups(3),
        false,
        22,
    );
    conv_case(
        "depthwise x2 dilation 2",
        &[1, 2, 6, 7],
        &[4, 1, 3, 3],
        s(1, 2).groups(2).dilation(2),
        false,
        25,
    );
    conv_case(
        "asymmetric stride/pad",
        &[1, 2, 6, 9],
        &[2, 2, 3, 2],
        Conv2dSpec {
            stride: (2, 1),
            padding: (0, 1),
            ..Default::default()
        },
        false,
        28,
    );
    // Grouped, the other way round (the direct input gradient with a stride per dim).
    conv_case(
        "grouped asymmetric stride/pad",
        &[1, 4, 7, 9],
        &[4, 2, 3, 2],
        Conv2dSpec {
            stride: (1, 2),
            padding: (1, 0),
            groups: 2,
            ..Default::default()
        },
        false,
        29,
    );
}

#[test]
fn conv2d_forward_larger_shapes() {
    // Sizes past one workgroup, a channel count of 3 into 64 (a ResNet stem at small scale), and
    // a depthwise layer with many channels.
    let s = Conv2dSpec::new;
    let cases: Vec<(&str, Vec<usize>, Vec<usize>, Conv2dSpec)> = vec![
        ("stem 7x7", vec![2, 3, 33, 17], vec![64, 3, 7, 7], s(2, 3)),
        ("3x3 64", vec![3, 64, 9, 7], vec![32, 64, 3, 3], s(1, 1)),
        (
            "depthwise 96",
            vec![2, 96, 11, 9],
            vec![96, 1, 3, 3],
            s(2, 1).groups(96),
        ),
    ];
    for ((name, x, w, spec), dev) in cases
        .into_iter()
        .flat_map(|case| [(case.clone(), common::gpu()), (case, common::gpu_shaped())])
    {
        let inputs = [Input::randn(&x, 3), Input::randn(&w, 4)];
        compare_forward_on(
            &dev,
            name,
            &move |xs, _| xs[0].conv2d(&xs[1], None, spec),
            &inputs,
            1e-4,
            1e-4,
        );
        // Backward at these sizes: GPU vs the f64 reference (no finite differences).
        let inputs2 = inputs.clone();
        let want = unreid::autograd::gradcheck::evaluate(
            &move |xs, _| xs[0].conv2d(&xs[1], None, spec),
            &inputs2,
            &unreid::Device::CpuF64,
        )
        .unwrap();
        let got = unreid::autograd::gradcheck::evaluate(
            &move |xs, _| xs[0].conv2d(&xs[1], None, spec),
            &inputs2,
            &dev,
        )
        .unwrap();
        for (i, (g, r)) in got.grads.iter().zip(&want.grads).enumerate() {
            unreid::autograd::gradcheck::assert_close(
                &format!("{name} grad {i}"),
                g,
                r,
                1e-4,
                1e-3,
            );
        }
    }
}

#[test]
fn conv2d_rejects_bad_shapes() {
    let dev = unreid::Device::Cpu;
    let x = unreid::Tensor::zeros(&[1, 3, 5, 5], &dev).unwrap();
    let w = unreid::Tensor::zeros(&[4, 2, 3, 3], &dev).unwrap();
    let e = x
        .conv2d(&w, None, Conv2dSpec::new(1, 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("input channels"), "{e}");
    let w = unreid::Tensor::zeros(&[4, 3, 7, 7], &dev).unwrap();
    let e = x
        .conv2d(&w, None, Conv2dSpec::new(1, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("does not fit"), "{e}");
}
