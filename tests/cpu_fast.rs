// Test inputs are listed inline as `&[x.clone()]`; clarity over saving a copy of a small vector.
#![allow(clippy::cloned_ref_to_slice_refs)]

//! The CPU device's fast path (`cpu::fast`, what `Device::Cpu` runs) against the plain reference
//! (`cpu::`, what `Device::CpuF64` runs): conv2d over strides, padding, dilation, groups
//! (depthwise), 1x1 and 7x7 kernels, odd sizes, batch 1, both GEMM layouts (one per image for
//! wide outputs, images side by side for narrow ones) and several chunks; batch norm in training
//! and evaluation mode; ReLU and ReLU6 gradients. Small cases also check the f64 reference's
//! gradients against finite differences (`check_op`).

use unreid::autograd::gradcheck::{assert_close, check_op, evaluate, Input, TestFn};
use unreid::cpu::conv2d::ConvGeom;
use unreid::ops::batchnorm::Activation;
use unreid::ops::conv2d::Conv2dSpec;
use unreid::{Device, Tensor};

/// Forward and every gradient on the fast device vs the f64 reference (no finite differences).
fn compare(name: &str, f: &TestFn, inputs: &[Input], rtol: f64, atol: f64) {
    let want = evaluate(f, inputs, &Device::CpuF64).unwrap();
    let got = evaluate(f, inputs, &Device::Cpu).unwrap();
    assert_eq!(got.output_shape, want.output_shape, "{name}");
    assert_close(
        &format!("{name} forward"),
        &got.output,
        &want.output,
        rtol,
        atol,
    );
    for (i, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
        assert_close(&format!("{name} grad {i}"), g, w, rtol, atol);
    }
}

fn conv_f(spec: Conv2dSpec) -> impl Fn(&[Tensor], &Device) -> unreid::Result<Tensor> {
    move |xs: &[Tensor], _: &Device| xs[0].conv2d(&xs[1], None, spec)
}

#[test]
fn conv2d_fast_gradients_small() {
    // Small outputs (fewer than 32 pixels, batch > 1): the side-by-side layout; finite
    // differences check the reference too.
    let s = Conv2dSpec::new;
    let cases: Vec<(&str, [usize; 4], [usize; 4], Conv2dSpec)> = vec![
        ("3x3 pad 1", [2, 3, 5, 6], [4, 3, 3, 3], s(1, 1)),
        (
            "3x3 stride 2 odd, batch 1",
            [1, 2, 7, 5],
            [3, 2, 3, 3],
            s(2, 1),
        ),
        ("1x1", [3, 4, 3, 3], [5, 4, 1, 1], s(1, 0)),
        ("1x1 stride 2", [2, 3, 5, 5], [2, 3, 1, 1], s(2, 0)),
        ("7x7 stride 2 pad 3", [2, 2, 9, 8], [2, 2, 7, 7], s(2, 3)),
        ("3x3 stride 3", [2, 2, 8, 10], [3, 2, 3, 3], s(3, 1)),
        (
            "dilation 2",
            [2, 2, 5, 6],
            [3, 2, 3, 3],
            s(1, 2).dilation(2),
        ),
        ("stride 2x1 pad 0x2", [2, 2, 6, 5], [2, 2, 3, 2], {
            let mut sp = s(1, 0);
            sp.stride = (2, 1);
            sp.padding = (0, 2);
            sp
        }),
        (
            "depthwise stride 2",
            [2, 4, 7, 6],
            [4, 1, 3, 3],
            s(2, 1).groups(4),
        ),
        (
            "depthwise dilation 2",
            [1, 3, 6, 7],
            [3, 1, 3, 3],
            s(1, 2).dilation(2).groups(3),
        ),
        (
            "grouped (reference path)",
            [2, 4, 5, 5],
            [6, 2, 3, 3],
            s(1, 1).groups(2),
        ),
    ];
    for (i, (name, x, w, spec)) in cases.into_iter().enumerate() {
        let inputs = [
            Input::randn(&x, 10 + i as u64),
            Input::randn(&w, 50 + i as u64),
        ];
        check_op(name, &conv_f(spec), &inputs, &Device::Cpu, 1e-4, 1e-5)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn conv2d_fast_matches_reference_on_wide_outputs() {
    // ho*wo >= 32: one GEMM per image (batch 1 and 3), im2col runs, 1x1 shortcut, depthwise.
    let s = Conv2dSpec::new;
    let cases: Vec<(&str, [usize; 4], [usize; 4], Conv2dSpec)> = vec![
        ("stem 7x7/2", [2, 3, 37, 35], [8, 3, 7, 7], s(2, 3)),
        ("3x3 batch 1", [1, 5, 17, 19], [6, 5, 3, 3], s(1, 1)),
        ("5x5 stride 3", [2, 3, 26, 29], [4, 3, 5, 5], s(3, 2)),
        (
            "3x3 dilation 2",
            [3, 4, 20, 17],
            [5, 4, 3, 3],
            s(1, 2).dilation(2),
        ),
        ("1x1 pointwise", [3, 7, 17, 16], [9, 7, 1, 1], s(1, 0)),
        (
            "1x1 pointwise batch 1",
            [1, 7, 16, 17],
            [5, 7, 1, 1],
            s(1, 0),
        ),
        (
            "depthwise 3x3",
            [2, 6, 19, 17],
            [6, 1, 3, 3],
            s(1, 1).groups(6),
        ),
        (
            "depthwise 5x5/2",
            [2, 5, 37, 33],
            [5, 1, 5, 5],
            s(2, 2).groups(5),
        ),
    ];
    for (i, (name, x, w, spec)) in cases.into_iter().enumerate() {
        let inputs = [
            Input::randn(&x, 100 + i as u64),
            Input::randn(&w, 200 + i as u64),
        ];
        compare(name, &conv_f(spec), &inputs, 1e-4, 1e-4);
    }
}

#[test]
fn conv2d_fast_chunks() {
    // A chunk bound of one image's columns: every chunk holds one image; then two images.
    let s = Conv2dSpec::new;
    // Dilation 2: a 3x3 stride-1 convolution would take the Winograd path instead.
    let (x, w, spec) = ([5, 3, 6, 5], [4, 3, 3, 3], s(1, 2).dilation(2));
    let per_image = 27 * 30;
    for floats in [per_image, 2 * per_image + 1] {
        unreid::cpu::fast::conv2d::set_chunk_floats(floats);
        let inputs = [Input::randn(&x, 7), Input::randn(&w, 8)];
        compare(
            &format!("chunks of {floats} floats"),
            &conv_f(spec),
            &inputs,
            1e-4,
            1e-5,
        );
        let inputs = [
            Input::randn(&[5, 6, 4, 3], 9),
            Input::randn(&[4, 6, 1, 1], 10),
        ];
        compare("1x1 in chunks", &conv_f(s(1, 0)), &inputs, 1e-4, 1e-5);
    }
    unreid::cpu::fast::conv2d::set_chunk_floats(8 << 20);
}

#[test]
fn conv2d_fast_functions_match_reference_f32() {
    // The functions themselves, both in f32: any layout slip shows as a large error.
    let g = ConvGeom {
        n: 3,
        c: 4,
        h: 9,
        w: 11,
        cout: 5,
        kh: 3,
        kw: 3,
        groups: 1,
        stride: (2, 2),
        padding: (1, 1),
        dilation: (1, 1),
        ho: 5,
        wo: 6,
    };
    let rnd = |n: usize, seed: u64| -> Vec<f32> {
        (0..n as u64)
            .map(|i| unreid::random::normal(seed, i) as f32)
            .collect()
    };
    let x = rnd(g.n * g.c * g.h * g.w, 1);
    let w = rnd(g.cout * g.kg(), 2);
    let dy = rnd(g.n * g.cout * g.p(), 3);
    let close = |what: &str, a: Vec<f32>, b: Vec<f32>| {
        let a: Vec<f64> = a.into_iter().map(f64::from).collect();
        let b: Vec<f64> = b.into_iter().map(f64::from).collect();
        assert_close(what, &a, &b, 1e-5, 1e-5);
    };
    use unreid::cpu::{conv2d as r, fast::conv2d as f};
    close("forward", f::forward(&x, &w, &g), r::forward(&x, &w, &g));
    close(
        "dx",
        f::backward_input(&dy, &w, &g),
        r::backward_input(&dy, &w, &g),
    );
    close(
        "dw",
        f::backward_weight(&dy, &x, &g),
        r::backward_weight(&dy, &x, &g),
    );
}

#[test]
fn batch_norm_fast_matches_reference() {
    let train = |xs: &[Tensor], _: &Device| {
        Ok(xs[0]
            .batch_norm_train(&xs[1], &xs[2], 1e-5, Activation::None)?
            .0)
    };
    // Small: finite differences too. [N, C, H, W] with odd planes, batch 1, and [N, C].
    for (i, shape) in [vec![2, 3, 5, 3], vec![1, 4, 3, 7], vec![6, 5]]
        .into_iter()
        .enumerate()
    {
        let c = shape[1];
        let seed = 300 + 10 * i as u64;
        let mut x = Input::randn(&shape, seed);
        x.values.iter_mut().for_each(|v| *v = 2.0 * *v + 1.5); // a mean and scale to remove
        let (gamma, beta) = (
            Input::uniform(&[c], 0.5, 1.5, seed + 1),
            Input::randn(&[c], seed + 2),
        );
        check_op(
            "bn train",
            &train,
            &[x.clone(), gamma.clone(), beta.clone()],
            &Device::Cpu,
            1e-4,
            1e-5,
        )
        .unwrap();
        // Evaluation mode: running statistics are constants (no gradient), not inputs.
        let (mean, var) = (
            Input::randn(&[c], seed + 3),
            Input::uniform(&[c], 0.5, 2.0, seed + 4),
        );
        let eval = move |xs: &[Tensor], dev: &Device| {
            let m = Tensor::from_f64(&mean.values, &[c], dev)?;
            let v = Tensor::from_f64(&var.values, &[c], dev)?;
            xs[0].batch_norm_eval(&xs[1], &xs[2], &m, &v, 1e-5, Activation::None)
        };
        check_op(
            "bn eval",
            &eval,
            &[x, gamma, beta],
            &Device::Cpu,
            1e-4,
            1e-5,
        )
        .unwrap();
    }
    // Larger planes (past the 16-lane sums and the per-task minimum).
    let shape = [3, 7, 33, 29];
    let inputs = [
        Input::randn(&shape, 1),
        Input::uniform(&[7], 0.5, 1.5, 2),
        Input::randn(&[7], 3),
    ];
    compare("bn train large", &train, &inputs, 1e-4, 1e-4);
}

#[test]
fn relu_gradients_on_the_cpu_devices() {
    // Values away from the kinks at 0 and 6 so finite differences are exact.
    let vals: Vec<f64> = (0..60)
        .map(|i| {
            let v = -3.0 + 0.25 * i as f64 + 0.1;
            if (v - 6.0).abs() < 0.05 {
                6.3
            } else {
                v
            }
        })
        .collect();
    let x = Input::new(vals, &[4, 15]);
    for (name, f) in [
        (
            "relu",
            (|xs: &[Tensor], _: &Device| xs[0].relu()) as fn(&[Tensor], &Device) -> _,
        ),
        ("relu6", |xs: &[Tensor], _: &Device| xs[0].relu6()),
    ] {
        check_op(name, &f, &[x.clone()], &Device::Cpu, 1e-6, 1e-7).unwrap();
    }
}

fn seeded(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| unreid::random::normal(seed, i) as f32)
        .collect()
}

fn close_f32(what: &str, a: &[f32], b: &[f32], tol: f64) {
    let a: Vec<f64> = a.iter().map(|&v| v as f64).collect();
    let b: Vec<f64> = b.iter().map(|&v| v as f64).collect();
    assert_close(what, &a, &b, tol, tol);
}

fn geom(
    n: usize,
    c: usize,
    hw: (usize, usize),
    cout: usize,
    k: usize,
    s: usize,
    p: usize,
) -> ConvGeom {
    ConvGeom {
        n,
        c,
        h: hw.0,
        w: hw.1,
        cout,
        kh: k,
        kw: k,
        groups: 1,
        stride: (s, s),
        padding: (p, p),
        dilation: (1, 1),
        ho: (hw.0 + 2 * p - k) / s + 1,
        wo: (hw.1 + 2 * p - k) / s + 1,
    }
}

#[test]
fn conv2d_fast_weight_gradient_of_deep_layers_is_one_parallel_gemm() {
    // A narrow output (P = 12 < 32) with a large dW (128 x 4608 = 589,824 values >= 2^19): the
    // multi-threaded path; stride 1 pad 1 also takes the row-aligned im2col / col2im blocks.
    use unreid::cpu::{conv2d as r, fast::conv2d as f};
    for g in [
        geom(3, 512, (4, 3), 128, 3, 1, 1),
        geom(1, 512, (4, 3), 128, 3, 1, 1),
    ] {
        let (x, w, dy) = (
            seeded(g.n * g.c * g.h * g.w, 11),
            seeded(g.cout * g.kg(), 12),
            seeded(g.n * g.cout * g.p(), 13),
        );
        let label = format!("n {}", g.n);
        let wide = |v: &[f32]| -> Vec<f64> { v.iter().map(|&a| a as f64).collect() };
        let (x64, w64, dy64) = (wide(&x), wide(&w), wide(&dy));
        close_to_f64_reference(
            &format!("{label} dw"),
            &f::backward_weight(&dy, &x, &g),
            &r::backward_weight(&dy64, &x64, &g),
        );
        close_to_f64_reference(
            &format!("{label} dx"),
            &f::backward_input(&dy, &w, &g),
            &r::backward_input(&dy64, &w64, &g),
        );
        close_to_f64_reference(
            &format!("{label} y"),
            &f::forward(&x, &w, &g),
            &r::forward(&x64, &w64, &g),
        );
    }
}

#[test]
fn conv2d_fast_winograd_matches_the_f64_reference() {
    // Dense 3x3 stride-1 convolutions take Winograd F(2x2, 3x3) (forward and input gradient)
    // and F(3x3, 2x2) (weight gradient, summed over image ranges):
    // batch 1 (one unit, parallel GEMMs), paddings 0 / 1 / 2, odd output sizes (clipped tiles),
    // channel counts off the 16-lane width, units of several images with a remainder (6 images
    // of 16 tiles, units of 4), and planes wide enough to be split into blocks of tile rows.
    use unreid::cpu::{conv2d as r, fast::conv2d as f};
    let wide = |v: &[f32]| -> Vec<f64> { v.iter().map(|&a| a as f64).collect() };
    for (i, g) in [
        geom(1, 5, (9, 11), 7, 3, 1, 1),
        geom(2, 17, (8, 9), 23, 3, 1, 0),
        geom(3, 19, (7, 6), 33, 3, 1, 2),
        geom(6, 16, (16, 16), 16, 3, 1, 1),
        geom(1, 64, (21, 64), 48, 3, 1, 1),
        geom(2, 40, (13, 15), 64, 3, 1, 1),
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 40 + 3 * i as u64;
        let (x, w, dy) = (
            seeded(g.n * g.c * g.h * g.w, seed),
            seeded(g.cout * g.kg(), seed + 1),
            seeded(g.n * g.cout * g.p(), seed + 2),
        );
        let (x64, w64, dy64) = (wide(&x), wide(&w), wide(&dy));
        let label = format!(
            "{}x{}x{}x{} -> {} pad {}",
            g.n, g.c, g.h, g.w, g.cout, g.padding.0
        );
        close_to_f64_reference(
            &format!("{label}: y"),
            &f::forward(&x, &w, &g),
            &r::forward(&x64, &w64, &g),
        );
        close_to_f64_reference(
            &format!("{label}: dx"),
            &f::backward_input(&dy, &w, &g),
            &r::backward_input(&dy64, &w64, &g),
        );
        close_to_f64_reference(
            &format!("{label}: dw"),
            &f::backward_weight(&dy, &x, &g),
            &r::backward_weight(&dy64, &x64, &g),
        );
    }
}

/// f32 results of sums of hundreds of terms against the f64 reference: the error bound scales
/// with the terms, not with each result (a result near zero is a cancellation of large terms),
/// so the tolerance is 1e-5 of the reference's root mean square. Both f32 paths (the reference
/// run in f32, and the fast one: GEMMs, Winograd's transforms) stay within 4e-6 of it on N(0, 1)
/// data; a layout slip is off by the whole scale.
fn close_to_f64_reference(what: &str, fast: &[f32], reference: &[f64]) {
    let rms = (reference.iter().map(|v| v * v).sum::<f64>() / reference.len().max(1) as f64).sqrt();
    let fast: Vec<f64> = fast.iter().map(|&v| v as f64).collect();
    assert_close(what, &fast, reference, 0.0, 1e-5 * rms.max(1e-30));
}

#[test]
fn conv2d_fast_is_exact_after_a_larger_call_left_stale_work_buffers() {
    // The fast path reuses its column buffers between calls without clearing them: every
    // call must overwrite what it reads. A large call first, then smaller ones of other
    // shapes (row-aligned and strided, wide and narrow, padding rows and columns) reuse them.
    use unreid::cpu::{conv2d as r, fast::conv2d as f};
    let big = geom(4, 32, (20, 18), 16, 3, 1, 1);
    let _ = f::backward_input(&seeded(4 * 16 * 360, 1), &seeded(16 * 288, 2), &big);
    let _ = f::forward(&seeded(4 * 32 * 360, 3), &seeded(16 * 288, 4), &big);
    for (i, g) in [
        geom(3, 5, (6, 7), 4, 3, 1, 1),
        geom(2, 3, (9, 8), 5, 3, 2, 1),
        geom(2, 4, (17, 16), 3, 5, 1, 2),
        geom(1, 2, (5, 4), 3, 3, 1, 0),
    ]
    .into_iter()
    .enumerate()
    {
        let s = 20 + 3 * i as u64;
        let (x, w, dy) = (
            seeded(g.n * g.c * g.h * g.w, s),
            seeded(g.cout * g.kg(), s + 1),
            seeded(g.n * g.cout * g.p(), s + 2),
        );
        for _ in 0..2 {
            close_f32(
                "forward",
                &f::forward(&x, &w, &g),
                &r::forward(&x, &w, &g),
                1e-5,
            );
            close_f32(
                "dx",
                &f::backward_input(&dy, &w, &g),
                &r::backward_input(&dy, &w, &g),
                1e-5,
            );
            close_f32(
                "dw",
                &f::backward_weight(&dy, &x, &g),
                &r::backward_weight(&dy, &x, &g),
                1e-5,
            );
        }
    }
}

#[test]
fn max_pool_fast_equals_reference_values_and_argmax() {
    // Exact equality (values and argmax): ties (values rounded to a few levels) must pick the
    // first maximum in scan order, windows overlapping the padding never pick it.
    use unreid::cpu::pool::{max_pool, PoolGeom};
    let cases = [
        (7, 9, 3, 2, 1), // ResNet's stem pooling, odd sizes
        (8, 6, 2, 2, 0), // 2x2/2
        (5, 5, 3, 1, 1), // stride 1, every border window in the padding
        (1, 4, 3, 2, 1), // one row
    ];
    for (i, (h, w, k, s, p)) in cases.into_iter().enumerate() {
        let planes = 3;
        let g = PoolGeom {
            planes,
            h,
            w,
            kernel: (k, k),
            stride: (s, s),
            padding: (p, p),
            ho: (h + 2 * p - k) / s + 1,
            wo: (w + 2 * p - k) / s + 1,
        };
        let x: Vec<f32> = seeded(planes * h * w, 40 + i as u64)
            .into_iter()
            .map(|v| (v * 1.5).round() - 2.0) // few levels, mostly negative: ties everywhere
            .collect();
        let (want, want_i) = max_pool(&x, &g);
        let (got, got_i) = unreid::cpu::fast::pool::max_pool(&x, &g);
        assert_eq!(got, want, "case {i}: values");
        assert_eq!(got_i, want_i, "case {i}: argmax");
    }
}

#[test]
fn adam_fast_is_bitwise_the_reference_over_several_steps() {
    // Out of place and parallel over chunks (70,001 values: three chunks and a remainder), the
    // same f32 arithmetic as the in-place reference: equal bit for bit after 4 steps.
    use unreid::cpu::optim::{adam, AdamHyper};
    let n = 70_001;
    let (mut p, mut m, mut v) = (seeded(n, 1), vec![0f32; n], vec![0f32; n]);
    let (mut fp, mut fm, mut fv) = (p.clone(), m.clone(), v.clone());
    for step in 1..=4u64 {
        let g = seeded(n, 100 + step);
        let h = AdamHyper {
            lr: 3.5e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 5e-4,
            step,
        };
        adam(&mut p, &g, &mut m, &mut v, h);
        [fp, fm, fv] = unreid::cpu::fast::optim::adam(&fp, &g, &fm, &fv, h);
        for (name, a, b) in [("param", &fp, &p), ("m", &fm, &m), ("v", &fv, &v)] {
            let same = a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same, "step {step}: {name} differs from the reference");
        }
    }
}

/// Everything one batch norm step produces on the CPU device, as f32 bit patterns: output, batch
/// (or given) statistics, running statistics, and the gradients of x, gamma and beta.
type BnBits = Vec<(&'static str, Vec<u32>)>;

/// Batch norm then `act` on the CPU device, fused (`fused`) or as today's sequence of separate
/// ops (`batch_norm_*` with no activation, then `relu()` / `relu6()`), in training mode with
/// running statistics or in evaluation mode; the loss weights every output element differently.
fn bn_step(
    inputs: &[Vec<f32>; 5],
    shape: &[usize],
    act: Activation,
    train: bool,
    fused: bool,
) -> BnBits {
    use unreid::ops::batchnorm::RunningStats;
    let dev = Device::Cpu;
    let c = shape[1];
    let t = |v: &[f32], s: &[usize]| Tensor::from_slice(v, s, &dev).unwrap();
    let x = t(&inputs[0], shape).with_requires_grad();
    let gamma = t(&inputs[1], &[c]).with_requires_grad();
    let beta = t(&inputs[2], &[c]).with_requires_grad();
    let (rm, rv) = (t(&inputs[3], &[c]), t(&inputs[4], &[c]));
    let inner = if fused { act } else { Activation::None };
    let mut stats = Vec::new();
    let y = if train {
        let running = RunningStats {
            mean: &rm,
            var: &rv,
            momentum: 0.1,
            donated: false,
        };
        let out = x
            .batch_norm_train_running(&gamma, &beta, 1e-5, inner, running)
            .unwrap();
        stats = vec![
            ("batch mean", out.mean),
            ("batch var", out.var),
            ("running mean", out.running_mean),
            ("running var", out.running_var),
        ];
        out.y
    } else {
        x.batch_norm_eval(&gamma, &beta, &rm, &rv, 1e-5, inner)
            .unwrap()
    };
    let y = match (fused, act) {
        (false, Activation::Relu) => y.relu().unwrap(),
        (false, Activation::Relu6) => y.relu6().unwrap(),
        _ => y,
    };
    let w: Vec<f32> = seeded(y.numel(), 77).iter().map(|v| v + 0.5).collect();
    y.mul(&t(&w, shape))
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let bits = |t: &Tensor| t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect();
    let mut out = vec![("y", bits(&y))];
    out.extend(stats.iter().map(|(k, t)| (*k, bits(t))));
    for (k, leaf) in [("dx", &x), ("dgamma", &gamma), ("dbeta", &beta)] {
        out.push((k, bits(&leaf.grad().unwrap())));
    }
    out
}

/// The fused BN + activation on the CPU device gives bit-identical outputs, gradients and
/// running statistics to BN followed by `relu()` / `relu6()` (a last-bit change moves the quick
/// demo's mAP by points), in training and evaluation mode, for ResNet- and MobileNetV2-like
/// shapes, odd sizes and batch 1. Channel 0 sits exactly on ReLU's kink (gamma = beta = 0: every
/// output is 0) and channel 1 on ReLU6's (gamma = 0, beta = 6).
#[test]
fn fused_batch_norm_activation_is_bit_identical_to_bn_then_activation() {
    let shapes: [&[usize]; 7] = [
        &[4, 64, 8, 4],   // ResNet layer1 at a small image
        &[2, 96, 16, 8],  // MobileNetV2 expansion (depthwise input)
        &[3, 24, 17, 9],  // odd planes
        &[1, 8, 5, 7],    // batch 1
        &[1, 32, 1, 1],   // batch 1, one value per channel
        &[5, 6],          // [N, C]
        &[2, 16, 33, 29], // planes past the per-task minimum
    ];
    for (k, shape) in shapes.into_iter().enumerate() {
        let c = shape[1];
        let seed = 900 + 10 * k as u64;
        let n: usize = shape.iter().product();
        // A mean and a scale to remove, and outputs that reach past 6 (ReLU6's upper kink).
        let x: Vec<f32> = seeded(n, seed).iter().map(|v| 2.0 * v + 1.5).collect();
        let mut gamma: Vec<f32> = seeded(c, seed + 1).iter().map(|v| 2.0 + v).collect();
        let mut beta: Vec<f32> = seeded(c, seed + 2).iter().map(|v| 2.0 * v + 1.0).collect();
        (gamma[0], beta[0], gamma[1], beta[1]) = (0.0, 0.0, 0.0, 6.0);
        let rm = seeded(c, seed + 3);
        let rv: Vec<f32> = seeded(c, seed + 4)
            .iter()
            .map(|v| 1.0 + 0.3 * v.abs())
            .collect();
        let inputs = [x, gamma, beta, rm, rv];
        for act in [Activation::None, Activation::Relu, Activation::Relu6] {
            for train in [true, false] {
                let want = bn_step(&inputs, shape, act, train, false);
                let got = bn_step(&inputs, shape, act, train, true);
                assert_eq!(got.len(), want.len());
                for ((name, g), (_, w)) in got.iter().zip(&want) {
                    assert!(
                        g == w,
                        "{name} of {shape:?}, {act:?}, train {train}: not bit-identical"
                    );
                }
                // The cases exercise the mask: some outputs are masked, some pass.
                if act != Activation::None {
                    let y = &got[0].1;
                    assert!(y.iter().any(|&b| f32::from_bits(b) == 0.0));
                    assert!(y.iter().any(|&b| f32::from_bits(b) > 0.0));
                }
                if act == Activation::Relu6 {
                    assert!(got[0].1.iter().any(|&b| f32::from_bits(b) == 6.0));
                }
            }
        }
    }
}

/// The CPU device's training-mode batch norm computes each channel's statistics and output in
/// one sweep (`train_forward`): bit-for-bit the statistics of `stats` and the output of `apply`
/// with them, for planes shorter and longer than the 16-lane partial sums, a remainder, batch 1
/// and one channel (the quick demo's result moves with last-bit changes).
#[test]
fn batch_norm_train_sweep_is_bit_identical_to_stats_then_apply() {
    use unreid::cpu::fast::batchnorm::{apply, stats, train_forward};
    let bits = |v: &[f32]| v.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let dims = [
        (1, 1, 1),
        (2, 3, 8),
        (3, 4, 16),
        (2, 5, 17),
        (1, 3, 100),
        (4, 2, 2049),
    ];
    for (k, &(n, c, s)) in dims.iter().enumerate() {
        let seed = 40 + 10 * k as u64;
        let x: Vec<f32> = seeded(n * c * s, seed)
            .iter()
            .map(|v| 3.0 * v + 1.0)
            .collect();
        let gamma: Vec<f32> = seeded(c, seed + 1).iter().map(|v| 2.0 + v).collect();
        let beta: Vec<f32> = seeded(c, seed + 2).iter().map(|v| 2.0 * v + 1.0).collect();
        let (mean, var) = stats(&x, n, c, s);
        for act in [Activation::None, Activation::Relu, Activation::Relu6] {
            let want = apply(&x, &mean, &var, &gamma, &beta, c, s, 1e-5, act);
            let (y, m, v) = train_forward(&x, &gamma, &beta, (n, c, s), 1e-5, act);
            let what = format!("[{n}, {c}, {s}] {act:?}");
            assert_eq!(bits(&m), bits(&mean), "mean of {what}");
            assert_eq!(bits(&v), bits(&var), "variance of {what}");
            assert_eq!(bits(&y), bits(&want), "output of {what}");
        }
    }
}

/// `gemm_into` with a transposed B runs products with few rows as the transposed product (see
/// `cpu::matmul`): the same bits as the same product with B stored row-major (which the crate
/// multiplies directly), with and without accumulation, single- and multi-threaded, A plain and
/// transposed, at the sizes where the swap applies and just outside them, in f32 and f64; and
/// within f32 rounding of a host f64 product written out as the sum it is.
#[test]
fn gemm_with_a_transposed_b_matches_the_row_major_product_bit_for_bit() {
    use unreid::cpu::matmul::gemm_into;
    let transpose = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
        let mut t = vec![0f32; x.len()];
        for r in 0..rows {
            for c in 0..cols {
                t[c * rows + r] = x[r * cols + c];
            }
        }
        t
    };
    // (m, k, n): the swap applies to all but the last three (m too small, n or k too short).
    let cases = [
        (16, 32, 32),
        (17, 300, 147),
        (64, 513, 576),
        (100, 1000, 751),
        (256, 512, 600),
        (15, 300, 147),
        (64, 100, 576),
        (64, 513, 127),
    ];
    // f64 (the CpuF64 reference device's products) takes the same path.
    {
        let (m, k, n) = (20, 90, 70);
        let a: Vec<f64> = seeded(m * k, 60).iter().map(|&v| v as f64 / 3.0).collect();
        let b_t: Vec<f64> = seeded(n * k, 61).iter().map(|&v| v as f64 / 7.0).collect();
        let mut b = vec![0f64; k * n];
        for j in 0..n {
            for i in 0..k {
                b[i * n + j] = b_t[j * k + i];
            }
        }
        let (mut want, mut got) = (vec![0f64; m * n], vec![0f64; m * n]);
        gemm_into(&mut want, &a, &b, (m, k, n), false, false, false, false);
        gemm_into(&mut got, &a, &b_t, (m, k, n), false, true, false, false);
        assert!(
            got.iter()
                .zip(&want)
                .all(|(g, w)| g.to_bits() == w.to_bits()),
            "f64"
        );
    }
    for (i, &(m, k, n)) in cases.iter().enumerate() {
        let seed = 70 + 3 * i as u64;
        let a = seeded(m * k, seed);
        let b_t = seeded(n * k, seed + 1); // op(B) stored transposed: [n, k]
        let b = transpose(&b_t, n, k); // the same op(B) row-major: [k, n]
        let a_t = transpose(&a, m, k); // op(A) stored transposed: [k, m]
        let start = seeded(m * n, seed + 2);
        // Host f64 oracle: start + sum over k in order.
        let oracle: Vec<f64> = (0..m * n)
            .map(|o| {
                let (r, c) = (o / n, o % n);
                let dot: f64 = (0..k)
                    .map(|j| a[r * k + j] as f64 * b[j * n + c] as f64)
                    .sum();
                start[o] as f64 + dot
            })
            .collect();
        for accumulate in [false, true] {
            for parallel in [false, true] {
                for ta in [false, true] {
                    let what =
                        format!("{m}x{k}x{n} accumulate {accumulate} parallel {parallel} ta {ta}");
                    let a_stored = if ta { &a_t } else { &a };
                    let mut want = start.clone();
                    gemm_into(
                        &mut want,
                        a_stored,
                        &b,
                        (m, k, n),
                        ta,
                        false,
                        accumulate,
                        parallel,
                    );
                    let mut got = start.clone();
                    gemm_into(
                        &mut got,
                        a_stored,
                        &b_t,
                        (m, k, n),
                        ta,
                        true,
                        accumulate,
                        parallel,
                    );
                    let differ = got
                        .iter()
                        .zip(&want)
                        .filter(|(g, w)| g.to_bits() != w.to_bits())
                        .count();
                    assert_eq!(differ, 0, "{what}: values differing in bits");
                    let got: Vec<f64> = got.iter().map(|&v| v as f64).collect();
                    let shift = if accumulate { 0.0 } else { 1.0 };
                    let oracle: Vec<f64> = oracle
                        .iter()
                        .zip(&start)
                        .map(|(o, s)| o - shift * *s as f64)
                        .collect();
                    assert_close(&what, &got, &oracle, 1e-4, 1e-4 * (k as f64).sqrt());
                }
            }
        }
    }
}
