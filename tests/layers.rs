// Test inputs are listed inline as `&[x.clone()]`; clarity over saving a copy of a small vector.
#![allow(clippy::cloned_ref_to_slice_refs)]

//! Batch norm (train / eval), pooling, GeM, linear, dropout, L2 normalise: GPU vs the CPU
//! reference and f64 finite differences.

mod common;
use common::{check, check_on, compare_forward, compare_forward_on};
use unreid::autograd::gradcheck::{assert_close, evaluate, Input};
use unreid::ops::batchnorm::Activation;
use unreid::{Device, Tensor};

#[test]
fn batch_norm_train_and_eval() {
    for device in [common::gpu(), common::gpu_shaped()] {
        batch_norm_train_and_eval_on(&device);
    }
}

fn batch_norm_train_and_eval_on(device: &Device) {
    let check = |name: &str, f: &unreid::autograd::gradcheck::TestFn, inputs: &[Input]| {
        check_on(device, name, f, inputs)
    };
    for (name, shape) in [
        ("2d", vec![3, 4, 3, 5]),
        ("2d batch 1", vec![1, 3, 2, 3]),
        ("1d", vec![5, 6]),
    ] {
        let c = shape[1];
        let x = Input::randn(&shape, 1);
        let gamma = Input::uniform(&[c], 0.5, 1.5, 2);
        let beta = Input::randn(&[c], 3);
        check(
            &format!("batch_norm_train {name}"),
            &|xs, _| {
                Ok(xs[0]
                    .batch_norm_train(&xs[1], &xs[2], 1e-5, Activation::None)?
                    .0)
            },
            &[x.clone(), gamma.clone(), beta.clone()],
        );
        let mean = Input::randn(&[c], 4);
        let var = Input::uniform(&[c], 0.5, 2.0, 5);
        check(
            &format!("batch_norm_eval {name}"),
            &move |xs, dev| {
                let m = Tensor::from_f64(&mean.values, &[c], dev)?;
                let v = Tensor::from_f64(&var.values, &[c], dev)?;
                xs[0].batch_norm_eval(&xs[1], &xs[2], &m, &v, 1e-5, Activation::None)
            },
            &[x, gamma, beta],
        );
    }
    // Batch statistics at a size past one workgroup: mean and biased variance vs the reference.
    let x = Input::randn(&[4, 7, 9, 11], 8);
    for which in 0..2 {
        compare_forward_on(
            device,
            &format!("batch stats {which}"),
            &move |xs, dev| {
                let g = Tensor::ones(&[7], dev)?;
                let b = Tensor::zeros(&[7], dev)?;
                let (_, m, v) = xs[0].batch_norm_train(&g, &b, 1e-5, Activation::None)?;
                Ok(if which == 0 { m } else { v })
            },
            &[x.clone()],
            1e-4,
            1e-5,
        );
    }
}

/// BN with ReLU / ReLU6 fused into its pass: the f64 reference's gradients vs finite differences,
/// and the GPU's output and gradients vs that reference (the mask folded into both backward
/// kernels), training and evaluation mode, 2-D with odd planes, batch 1 and [N, C]. gamma and
/// beta spread the outputs over both kinks (ReLU6's 6 included).
#[test]
fn batch_norm_with_fused_activation() {
    fused_activation_checks(&common::gpu());
    fused_activation_checks(&common::gpu_shaped());
}

/// The same checks on an adapter that binds at most 8 storage buffers per shader stage (WebGPU's
/// baseline): the backward's elementwise pass then takes `bn_bwd_apply_packed` (the two sums in
/// one buffer) instead of the 9-buffer `bn_bwd_apply`; its results are bit-identical to those of
/// the adapter's own limits.
#[test]
fn batch_norm_with_fused_activation_on_the_webgpu_baseline() {
    let baseline = common::baseline_gpu();
    fused_activation_checks(&baseline);
    for act in [Activation::None, Activation::Relu, Activation::Relu6] {
        for (train, shape) in [
            (true, [4, 7, 9, 11]),
            (false, [3, 4, 3, 5]),
            (true, [2, 3, 64, 64]),
        ] {
            let c = shape[1];
            let inputs = [
                Input::randn(&shape, 61),
                Input::uniform(&[c], 1.0, 4.0, 62),
                Input::uniform(&[c], -1.0, 4.0, 63),
                Input::randn(&[c], 64),
                Input::uniform(&[c], 0.5, 2.0, 65),
            ];
            let f = move |xs: &[Tensor], _: &Device| {
                if train {
                    Ok(xs[0].batch_norm_train(&xs[1], &xs[2], 1e-5, act)?.0)
                } else {
                    xs[0].batch_norm_eval(
                        &xs[1],
                        &xs[2],
                        &xs[3].detach(),
                        &xs[4].detach(),
                        1e-5,
                        act,
                    )
                }
            };
            let wide = evaluate(&f, &inputs, &common::gpu()).unwrap();
            let narrow = evaluate(&f, &inputs, &baseline).unwrap();
            let what = format!("{act:?} train {train} {shape:?}");
            assert_eq!(narrow.output, wide.output, "{what} output");
            assert_eq!(narrow.grads, wide.grads, "{what} gradients");
        }
    }
}

/// The fused-activation checks of [`batch_norm_with_fused_activation`] on `device`.
fn fused_activation_checks(device: &Device) {
    for act in [Activation::Relu, Activation::Relu6] {
        for (name, shape, seed) in [
            ("2d", vec![3, 4, 3, 5], 11u64),
            ("2d batch 1", vec![1, 3, 2, 3], 21),
            ("1d", vec![7, 5], 31),
        ] {
            let c = shape[1];
            let x = Input::randn(&shape, seed);
            let gamma = Input::uniform(&[c], 1.0, 4.0, seed + 1);
            let beta = Input::uniform(&[c], -1.0, 4.0, seed + 2);
            check_on(
                device,
                &format!("batch_norm_train {act:?} {name}"),
                &move |xs, _| Ok(xs[0].batch_norm_train(&xs[1], &xs[2], 1e-5, act)?.0),
                &[x.clone(), gamma.clone(), beta.clone()],
            );
            let mean = Input::randn(&[c], seed + 3);
            let var = Input::uniform(&[c], 0.5, 2.0, seed + 4);
            check_on(
                device,
                &format!("batch_norm_eval {act:?} {name}"),
                &move |xs, dev| {
                    let m = Tensor::from_f64(&mean.values, &[c], dev)?;
                    let v = Tensor::from_f64(&var.values, &[c], dev)?;
                    xs[0].batch_norm_eval(&xs[1], &xs[2], &m, &v, 1e-5, act)
                },
                &[x, gamma, beta],
            );
        }
        // Past one workgroup per channel, odd sizes: forward and gradients vs the reference.
        let shape = [4, 7, 9, 11];
        let inputs = [
            Input::randn(&shape, 41),
            Input::uniform(&[7], 1.0, 4.0, 42),
            Input::randn(&[7], 43),
        ];
        let f = move |xs: &[Tensor], _: &Device| {
            Ok(xs[0].batch_norm_train(&xs[1], &xs[2], 1e-5, act)?.0)
        };
        let want = evaluate(&f, &inputs, &Device::CpuF64).unwrap();
        let got = evaluate(&f, &inputs, device).unwrap();
        assert_close(
            &format!("{act:?} large forward"),
            &got.output,
            &want.output,
            1e-4,
            1e-5,
        );
        for (i, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
            assert_close(&format!("{act:?} large gradient {i}"), g, w, 1e-4, 1e-4);
        }
    }
}

/// Channels of many values: the GPU splits each channel's statistics and backward sums over
/// several workgroups (partial results, then a combining kernel). Batch statistics, running
/// statistics, output and gradients vs the f64 reference, with a mean to remove, uneven last
/// chunks and batch 1.
#[test]
fn batch_norm_split_reductions() {
    use unreid::ops::batchnorm::RunningStats;
    for (shape, seed) in [
        (vec![2, 3, 64, 64], 51u64), // 2 chunks per channel
        (vec![1, 1, 131, 257], 52),  // 8 chunks, the last one shorter, batch 1
        (vec![4, 2, 99, 101], 53),   // 9 chunks
    ] {
        let c = shape[1];
        let mut x = Input::randn(&shape, seed);
        x.values.iter_mut().for_each(|v| *v = 2.0 * *v + 3.0);
        let gamma = Input::uniform(&[c], 0.5, 1.5, seed + 1);
        let beta = Input::randn(&[c], seed + 2);
        let (rm0, rv0) = (
            Input::randn(&[c], seed + 3),
            Input::uniform(&[c], 0.5, 2.0, seed + 4),
        );
        let run = |dev: &Device| {
            let t = |i: &Input| Tensor::from_f64(&i.values, &i.shape, dev).unwrap();
            let out = t(&x)
                .batch_norm_train_running(
                    &t(&gamma),
                    &t(&beta),
                    1e-5,
                    Activation::None,
                    RunningStats {
                        mean: &t(&rm0),
                        var: &t(&rv0),
                        momentum: 0.1,
                        donated: false,
                    },
                )
                .unwrap();
            [out.mean, out.var, out.running_mean, out.running_var].map(|t| t.to_vec_f64().unwrap())
        };
        let want = run(&Device::CpuF64);
        for device in [common::gpu(), common::gpu_shaped()] {
            let got = run(&device);
            for (k, what) in ["mean", "var", "running mean", "running var"]
                .iter()
                .enumerate()
            {
                assert_close(
                    &format!("{what} of {shape:?} on {device}"),
                    &got[k],
                    &want[k],
                    1e-4,
                    1e-5,
                );
            }
        }
        for act in [Activation::None, Activation::Relu] {
            let f = move |xs: &[Tensor], _: &Device| {
                Ok(xs[0].batch_norm_train(&xs[1], &xs[2], 1e-5, act)?.0)
            };
            let inputs = [x.clone(), gamma.clone(), beta.clone()];
            let want = evaluate(&f, &inputs, &Device::CpuF64).unwrap();
            for device in [common::gpu(), common::gpu_shaped()] {
                let got = evaluate(&f, &inputs, &device).unwrap();
                let name = format!("{shape:?} {act:?} on {device}");
                assert_close(
                    &format!("{name} forward"),
                    &got.output,
                    &want.output,
                    1e-4,
                    1e-4,
                );
                for (i, (g, w)) in got.grads.iter().zip(&want.grads).enumerate() {
                    assert_close(&format!("{name} gradient {i}"), g, w, 1e-3, 1e-3);
                }
            }
        }
    }
}

#[test]
fn pooling() {
    // Distinct values so no window has a near-tie within the finite-difference step.
    let n = 2 * 3 * 7 * 6;
    let distinct = Input::new(
        (0..n)
            .map(|i| ((i * 7919) % n) as f64 * 0.01 - 1.0)
            .collect(),
        &[2, 3, 7, 6],
    );
    check(
        "max_pool 3/2/1",
        &|xs, _| xs[0].max_pool2d(3, 2, 1),
        &[distinct.clone()],
    );
    check(
        "max_pool 2/2/0",
        &|xs, _| xs[0].max_pool2d(2, 2, 0),
        &[distinct.clone()],
    );
    check(
        "avg_pool 3/2/1",
        &|xs, _| xs[0].avg_pool2d(3, 2, 1),
        &[distinct.clone()],
    );
    check(
        "avg_pool 2/1/0",
        &|xs, _| xs[0].avg_pool2d(2, 1, 0),
        &[distinct.clone()],
    );
    check(
        "global_avg_pool",
        &|xs, _| xs[0].global_avg_pool(),
        &[distinct.clone()],
    );
    let pos = Input::uniform(&[2, 3, 3, 5], 0.1, 2.0, 9);
    check(
        "gem_pool",
        &|xs, _| xs[0].gem_pool(&xs[1], 1e-6),
        &[pos, Input::new(vec![3.0], &[1])],
    );
    // Max pool indices and values at a ResNet stem size (odd).
    let big = Input::randn(&[2, 5, 33, 17], 10);
    compare_forward(
        "max_pool large",
        &|xs, _| xs[0].max_pool2d(3, 2, 1),
        &[big],
        0.0,
        0.0,
    );
}

#[test]
fn linear_normalize_dropout() {
    let x = Input::randn(&[3, 5], 1);
    let w = Input::randn(&[4, 5], 2);
    let b = Input::randn(&[4], 3);
    check(
        "linear",
        &|xs, _| xs[0].linear(&xs[1], Some(&xs[2])),
        &[x.clone(), w.clone(), b],
    );
    check(
        "linear no bias",
        &|xs, _| xs[0].linear(&xs[1], None),
        &[x.clone(), w],
    );
    check("l2_normalize", &|xs, _| xs[0].l2_normalize(1), &[x.clone()]);
    check(
        "flatten",
        &|xs, _| xs[0].reshape(&[3, 5, 1, 1])?.flatten(),
        &[x.clone()],
    );
    check("dropout", &|xs, _| xs[0].dropout(0.5, 42), &[x.clone()]);
    // Same mask on every device; roughly p dropped; kept values scaled by 1/(1-p).
    let ones = Tensor::ones(&[10_000], &Device::Cpu)
        .unwrap()
        .dropout(0.3, 7)
        .unwrap()
        .to_vec()
        .unwrap();
    let dropped = ones.iter().filter(|&&v| v == 0.0).count();
    assert!(
        (2700..3300).contains(&dropped),
        "{dropped} of 10000 dropped at p=0.3"
    );
    assert!(ones
        .iter()
        .all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-6));
    let g = Tensor::ones(&[10_000], &common::gpu())
        .unwrap()
        .dropout(0.3, 7)
        .unwrap()
        .to_vec()
        .unwrap();
    assert_eq!(g, ones);
}

/// The running-statistics update folded into the statistics kernel: output, batch statistics and
/// running statistics vs the CPU reference and the torch formula computed here in f64, in place
/// (donated) and into copies (the given running tensors keep their values).
#[test]
fn batch_norm_running_statistics_in_the_stats_kernel() {
    use unreid::ops::batchnorm::RunningStats;
    for (shape, seed, act) in [
        (vec![3, 5, 3, 7], 1u64, Activation::None),
        (vec![1, 3, 1, 1], 2, Activation::Relu),
        (vec![9, 6], 3, Activation::Relu6),
    ] {
        let c = shape[1];
        let m = shape.iter().product::<usize>() / c;
        let x = Input::randn(&shape, seed);
        let gamma = Input::uniform(&[c], 0.5, 1.5, seed + 10);
        let beta = Input::randn(&[c], seed + 20);
        let rm0 = Input::randn(&[c], seed + 30);
        let rv0 = Input::uniform(&[c], 0.5, 2.0, seed + 40);
        let momentum = 0.1;
        let run = |device: &Device, donated: bool| {
            let t = |i: &Input| Tensor::from_f64(&i.values, &i.shape, device).unwrap();
            let (rm, rv) = (t(&rm0), t(&rv0));
            let out = t(&x)
                .batch_norm_train_running(
                    &t(&gamma),
                    &t(&beta),
                    1e-5,
                    act,
                    RunningStats {
                        mean: &rm,
                        var: &rv,
                        momentum,
                        donated,
                    },
                )
                .unwrap();
            let v = |t: &Tensor| t.to_vec_f64().unwrap();
            if !donated {
                assert_eq!(v(&rm), rm0.values, "the given running mean kept its values");
                assert_eq!(v(&rv), rv0.values, "the given running var kept its values");
            } else if device.is_gpu() {
                assert_eq!(out.running_mean.storage_id(), rm.storage_id(), "in place");
                assert_eq!(out.running_var.storage_id(), rv.storage_id(), "in place");
            }
            [
                v(&out.y),
                v(&out.mean),
                v(&out.var),
                v(&out.running_mean),
                v(&out.running_var),
            ]
        };
        let want = run(&Device::CpuF64, false);
        // The torch update from the reference's batch statistics, here in f64.
        let unbias = m as f64 / (m.max(2) - 1) as f64;
        let oracle_mean = rm0.values.iter().zip(&want[1]);
        let oracle_var = rv0.values.iter().zip(&want[2]);
        for (ch, ((r, m), (q, v))) in oracle_mean.zip(oracle_var).enumerate() {
            let rm = (1.0 - momentum) * r + momentum * m;
            let rv = (1.0 - momentum) * q + momentum * v * unbias;
            assert!((want[3][ch] - rm).abs() < 1e-12 && (want[4][ch] - rv).abs() < 1e-12);
        }
        for donated in [false, true] {
            let got = run(&common::gpu(), donated);
            for (k, what) in ["y", "mean", "var", "running mean", "running var"]
                .iter()
                .enumerate()
            {
                unreid::autograd::gradcheck::assert_close(
                    &format!("{what} of {shape:?}, donated {donated}"),
                    &got[k],
                    &want[k],
                    1e-4,
                    1e-5,
                );
            }
        }
    }
}
