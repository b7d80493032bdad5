// Test inputs are listed inline as `&[x.clone()]`; clarity over saving a copy of a small vector.
#![allow(clippy::cloned_ref_to_slice_refs)]

//! Splitting work to fit the binding limit: each test opens the adapter with an artificially low
//! limit (`GpuOptions::max_binding_bytes`, a few KiB) so the chunked paths of conv2d (im2col
//! columns over the batch, padded pointwise operands over the batch) and matmul's unpadded
//! fallback run on small tensors; outputs and gradients must equal the f64 CPU reference, which
//! never chunks. Each case's whole-batch buffer is larger than the limit (asserted), so an
//! unchunked launch would be refused by `Gpu::alloc`.

use unreid::autograd::gradcheck::{check_op, Input};
use unreid::gpu::GpuOptions;
use unreid::ops::conv2d::Conv2dSpec;
use unreid::{Device, Tensor};

fn device(limit: u64) -> Device {
    let d = Device::gpu_with(&GpuOptions {
        max_binding_bytes: Some(limit),
        poison: true,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("the GPU tests need an adapter: {e}"));
    assert_eq!(d.as_gpu().unwrap().max_binding_bytes(), limit);
    d
}

fn conv_case(dev: &Device, name: &str, x: &[usize], w: &[usize], spec: Conv2dSpec, seed: u64) {
    let inputs = [Input::randn(x, seed), Input::randn(w, seed + 1)];
    check_op(
        name,
        &move |xs, _| xs[0].conv2d(&xs[1], None, spec),
        &inputs,
        dev,
        2e-4,
        1e-5,
    )
    .unwrap_or_else(|e| panic!("{name}: {e}"));
}

/// matmul_sg's padded im2col columns for `images` images: [K4, (images*P)4] f32.
fn cols_bytes(k: usize, p: usize, images: usize) -> u64 {
    4 * (k.next_multiple_of(4) * (images * p).next_multiple_of(4)) as u64
}

#[test]
fn im2col_convolutions_split_the_batch() {
    // 3x3 pad 1 on 5x7: K = 27 (28 padded), P = 35: one image's columns 4032 bytes, two 8064.
    let limit = 4100;
    assert!(cols_bytes(27, 35, 1) <= limit && cols_bytes(27, 35, 2) > limit);
    let dev = device(limit);
    conv_case(
        &dev,
        "one image per chunk",
        &[3, 3, 5, 7],
        &[4, 3, 3, 3],
        Conv2dSpec::new(1, 1),
        31,
    );
    // Stride 2, pad 2, dilation 2 on 9x8 -> 5x4: K = 18 (20 padded), P = 20; batch 5 in chunks
    // of 2, 2 and a ragged 1.
    let limit = 4 * 20 * 40 + 4;
    assert!(cols_bytes(18, 20, 2) <= limit && cols_bytes(18, 20, 3) > limit);
    let dev = device(limit);
    conv_case(
        &dev,
        "chunks of 2, stride 2, dilation 2",
        &[5, 2, 9, 8],
        &[3, 2, 3, 3],
        Conv2dSpec::new(2, 2).dilation(2),
        34,
    );
}

#[test]
fn pointwise_convolutions_split_the_batch() {
    // 1x1 6 -> 7 on 3x5 (P = 15): each image's padded operand is 8 x 16 floats = 512 bytes; the
    // output [5, 7, 3, 5] (2100 bytes) fits, the whole padded input (2560) does not: chunks of 4
    // and 1 (forward and dX), dW through the im2col path in chunks of 4 and 1.
    let limit = 2100;
    assert!(4 * 5 * 8 * 16 > limit);
    let dev = device(limit);
    conv_case(
        &dev,
        "pointwise, chunks of 4",
        &[5, 6, 3, 5],
        &[7, 6, 1, 1],
        Conv2dSpec::new(1, 0),
        40,
    );
}

#[test]
fn matmul_whose_padding_would_not_fit_runs_unpadded() {
    // 33 x 33 operands fit exactly; padded to 36 x 36 for the subgroup kernel they would not.
    let limit = 33 * 33 * 4;
    let dev = device(limit);
    let inputs = [Input::randn(&[33, 33], 50), Input::randn(&[33, 33], 51)];
    check_op(
        "matmul 33x33 at a 33x33 limit",
        &|xs, _| xs[0].matmul(&xs[1]),
        &inputs,
        &dev,
        2e-4,
        1e-5,
    )
    .unwrap();
}

#[test]
fn an_activation_over_the_limit_is_a_clear_error() {
    // The output [2, 8, 4, 4] (1024 bytes) cannot be split: an error naming the limit, no panic.
    let dev = device(1000);
    let x = Tensor::zeros(&[2, 4, 4, 4], &dev).unwrap();
    let w = Tensor::zeros(&[8, 4, 1, 1], &dev).unwrap();
    let e = x
        .conv2d(&w, None, Conv2dSpec::new(1, 0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most 1000"), "{e}");
}

#[test]
fn a_zero_limit_is_refused() {
    let e = Device::gpu_with(&GpuOptions {
        max_binding_bytes: Some(0),
        ..Default::default()
    })
    .unwrap_err()
    .to_string();
    assert!(e.contains("max_binding_bytes") && e.contains("0"), "{e}");
}
