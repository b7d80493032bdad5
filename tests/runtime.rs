//! The GPU runtime: batching, pooling, big dispatch grids, and errors instead of panics.

mod common;
use unreid::gpu::{GpuOptions, Kernel, TimestampSupport, SHADERS, SUBMIT_SLICE};
use unreid::{Device, Tensor};

#[test]
fn a_thousand_small_ops_go_out_in_a_handful_of_submissions() {
    // Its own device, so no other test's work is counted.
    let d = Device::gpu_with(&GpuOptions::default()).unwrap();
    let gpu = d.as_gpu().unwrap().clone();
    let mut x = Tensor::from_slice(&[1.0; 16], &[16], &d).unwrap();
    let before = gpu.stats();
    for _ in 0..1000 {
        x = x.add_scalar(1.0).unwrap();
    }
    let out = x.to_vec().unwrap();
    let after = gpu.stats();
    assert_eq!(out, vec![1001.0; 16]);
    assert_eq!(after.dispatches - before.dispatches, 1000);
    // Submitted in slices (so the device starts early), never one submission per op.
    let submissions = after.submissions - before.submissions;
    let most = (1000 / SUBMIT_SLICE + 2) as u64;
    assert!(
        submissions <= most,
        "1000 ops took {submissions} submissions (at most {most})"
    );
    assert!(submissions >= 1000 / SUBMIT_SLICE as u64, "{submissions}");
    assert_eq!(after.host_waits - before.host_waits, 1, "one read-back");
}

#[test]
fn steady_state_dispatches_build_no_bind_groups() {
    let d = Device::gpu_with(&GpuOptions::default()).unwrap();
    let gpu = d.as_gpu().unwrap().clone();
    let run = |n: usize| {
        let mut x = Tensor::from_slice(&[0.5; 300], &[300], &d).unwrap();
        for _ in 0..n {
            x = x.mul_scalar(2.0).unwrap().add_scalar(-0.5).unwrap();
        }
        x.to_vec().unwrap()
    };
    run(10);
    let before = gpu.stats();
    let out = run(300);
    let delta = gpu.stats().since(&before);
    assert_eq!(out, vec![0.5; 300]);
    // The pool hands the same few buffers back, so after the first iterations every (kernel,
    // buffers) pair has its bind group cached.
    assert_eq!(delta.dispatches, 600);
    assert!(delta.bind_groups_created <= 8, "{delta:?}");
    assert_eq!(
        delta.bind_group_hits + delta.bind_groups_created,
        600,
        "{delta:?}"
    );
    assert!(delta.record_ns > 0);
}

#[test]
fn buffers_are_reused_from_the_pool() {
    let d = Device::gpu_with(&GpuOptions::default()).unwrap();
    let gpu = d.as_gpu().unwrap().clone();
    let x = Tensor::ones(&[1000], &d).unwrap();
    for _ in 0..3 {
        x.exp().unwrap().log().unwrap().to_vec().unwrap();
    }
    let warm = gpu.stats().buffers_created;
    for _ in 0..20 {
        x.exp().unwrap().log().unwrap().to_vec().unwrap();
    }
    assert_eq!(
        gpu.stats().buffers_created,
        warm,
        "steady-state ops allocated new buffers"
    );
    assert!(gpu.stats().pool_hits > 0);
}

#[test]
fn dispatches_beyond_65535_workgroups_fold_into_two_dimensions() {
    let d = common::gpu();
    // 65,536 x 256 + 5 elements: more 256-wide workgroups than one grid dimension allows.
    let n = 65_536 * 256 + 5;
    let x = Tensor::full(&[n], 2.0, &d).unwrap();
    let y = x.mul_scalar(1.5).unwrap().to_vec().unwrap();
    assert!(y.iter().all(|&v| v == 3.0), "an element was skipped");
}

#[test]
fn an_absent_adapter_is_an_error_that_lists_what_exists() {
    let err = Device::gpu_with(&GpuOptions {
        adapter: Some("no-such-adapter-xyz".into()),
        ..Default::default()
    })
    .expect_err("an absent adapter must not open")
    .to_string();
    assert!(
        err.contains("no-such-adapter-xyz") && err.contains("available adapters"),
        "{err}"
    );
}

#[test]
fn oversized_buffers_are_refused_with_the_limit() {
    let d = common::gpu();
    let limit = d.as_gpu().unwrap().max_binding_bytes() as usize;
    let err = Tensor::zeros(&[limit / 4 + 1], &d).unwrap_err().to_string();
    assert!(err.contains("at most"), "{err}");
}

#[test]
fn adapters_can_be_chosen_by_backend_name() {
    // The chosen adapter's own backend name must select it again.
    let d = common::gpu();
    let backend = format!("{:?}", d.as_gpu().unwrap().summary().backend).to_lowercase();
    let again = Device::gpu_with(&GpuOptions {
        adapter: Some(backend.clone()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        format!("{:?}", again.as_gpu().unwrap().summary().backend).to_lowercase(),
        backend
    );
}

#[test]
fn every_shader_file_is_registered() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut registered: Vec<String> = SHADERS.iter().map(|(n, _)| n.to_string()).collect();
    registered.sort();
    assert_eq!(files, registered, "shaders/ and gpu::SHADERS disagree");
}

#[test]
fn a_rejected_dispatch_fails_its_own_caller_and_spoils_no_other_work() {
    let errors = rejected_while_others_work(|gpu| {
        let a = gpu.alloc(64, "bad dispatch")?;
        let b = gpu.alloc(64, "bad dispatch")?;
        // `fill` binds one buffer: a second one does not match its layout.
        gpu.dispatch(
            &Kernel::new("elementwise", "fill"),
            bytemuck::cast_slice(&[16u32, 0]),
            &[&a, &b],
            [1, 1, 1],
        )
    });
    for e in errors {
        assert!(e.contains("elementwise:fill"), "{e}");
    }
}

/// Runs `bad` (50 invalid dispatches) on another thread while this one records and reads its
/// own work on the same device; returns the other thread's errors.
fn rejected_while_others_work(
    bad: impl Fn(&std::sync::Arc<unreid::gpu::Gpu>) -> Result<(), unreid::gpu::GpuError>
        + Send
        + 'static,
) -> Vec<String> {
    let d = common::gpu();
    let gpu = d.as_gpu().unwrap().clone();
    let worker = std::thread::spawn(move || {
        (0..50)
            .map(|_| bad(&gpu).map_err(|e| e.to_string()))
            .collect::<Vec<_>>()
    });
    for k in 0..50 {
        let x = Tensor::full(&[300], k as f32, &d).unwrap();
        let y = x.add_scalar(1.0).unwrap().to_vec().unwrap();
        assert!(y.iter().all(|&v| v == k as f32 + 1.0), "iteration {k}");
    }
    d.sync()
        .expect("another thread's rejected dispatch leaked here");
    worker
        .join()
        .unwrap()
        .into_iter()
        .map(|r| r.expect_err("the invalid dispatch was accepted"))
        .collect()
}

#[test]
fn a_buffer_bound_writable_and_again_is_refused_before_recording() {
    // `unary` reads binding 1 and writes binding 2: the same buffer in both is a usage conflict a
    // shared compute pass would only report for the whole submission.
    let errors = rejected_while_others_work(|gpu| {
        let a = gpu.alloc(1024, "aliased")?;
        gpu.dispatch(
            &Kernel::new("elementwise", "unary"),
            bytemuck::cast_slice(&[256u32, 0, 0, 0]),
            &[&a, &a],
            [1, 1, 1],
        )
    });
    for e in errors {
        assert!(
            e.contains("elementwise:unary") && e.contains("writable"),
            "{e}"
        );
    }
}

#[test]
fn a_buffer_of_another_device_is_refused() {
    let other = Device::gpu_with(&GpuOptions::default()).unwrap();
    let foreign = other.as_gpu().unwrap().alloc(1024, "foreign").unwrap();
    let foreign = std::sync::Arc::new(foreign);
    let errors = rejected_while_others_work(move |gpu| {
        gpu.dispatch(
            &Kernel::new("elementwise", "fill"),
            bytemuck::cast_slice(&[16u32, 7]),
            &[&foreign],
            [1, 1, 1],
        )
    });
    for e in errors {
        assert!(e.contains("another device"), "{e}");
    }
}

#[test]
fn profiling_times_every_dispatch_or_says_it_cannot() {
    let d = Device::gpu_with(&GpuOptions::default()).unwrap();
    let gpu = d.as_gpu().unwrap().clone();
    let x = Tensor::full(&[4096], 1.0, &d).unwrap();
    match gpu.timestamp_support() {
        TimestampSupport::InsidePasses => {
            gpu.start_profiling().unwrap();
            // More dispatches than one slice, so several slices are resolved.
            let mut y = x.clone();
            for _ in 0..SUBMIT_SLICE + 7 {
                y = y.exp().unwrap().log().unwrap();
            }
            let times = gpu.stop_profiling().unwrap();
            let unary = times
                .iter()
                .find(|t| t.kernel == "elementwise:unary")
                .unwrap_or_else(|| panic!("no unary kernel in {times:?}"));
            assert_eq!(unary.dispatches, 2 * (SUBMIT_SLICE as u64 + 7));
            assert!(unary.gpu_ms.is_finite() && unary.gpu_ms >= 0.0);
            // Profiling ended: nothing more is counted.
            assert!(gpu.stop_profiling().unwrap().is_empty());
            let v = y.to_vec().unwrap();
            assert!(v.iter().all(|&e| (e - 1.0).abs() < 1e-4));
        }
        _ => {
            let e = gpu.start_profiling().unwrap_err().to_string();
            assert!(e.contains("TIMESTAMP_QUERY_INSIDE_PASSES"), "{e}");
        }
    }
}

/// Dispatches per kernel of one steady ResNet-18 training step (b4 3x32x16, ReidNet with BNNeck
/// and a 751-class bias-free classifier, cross-entropy + batch-hard triplet, Adam), on lavapipe
/// (the subgroup matmul, split-K off: the automatic split depends on the host's cores, and on
/// more than 2 the stem's weight gradient, K = 512 over 5 workgroups, would take 2 chunks and a
/// `splitk_sum`). Where the numbers come from:
/// - 20 convolutions (stem, 16 in the basic blocks, 3 downsampling): `im2col` 20 forward + 20 for
///   the weight gradients; `col2im` 19 input gradients (the image needs none); `matmul_sg`
///   20 forward + 20 weight + 19 input gradients, + 6 for the classifier and the triplet
///   distances (forward and backward).
/// - 21 batch norms (20 + the BNNeck): one `bn_stats_running` (batch and running statistics in one
///   pass), `bn_apply`, `bn_bwd_reduce`, `bn_bwd_apply` each; the ReLU after 9 of them (the stem's
///   and each basic block's first) rides in those kernels (activation epilogue, mask in the
///   backward), no dispatch of its own.
/// - Adam: 62 tensors with a gradient (20 conv weights + 21 BN weights + 20 BN biases, the BNNeck
///   bias being frozen, + the classifier), one `adam4` dispatch each on lavapipe (`MultiTensor::Auto`
///   on a CPU adapter, every size a multiple of 4; a real GPU takes 7 per `adam_multi` dispatch,
///   ceil(62 / 7) = 9).
/// - 8 ReLUs after the residual sums (one per basic block): one `relu_backward` each.
/// - The rest as measured when pinned: layout copies (`strided_copy`), ReLU forward, residual adds
///   and gradient sums (`unary`, `binary_same`), pooling, the losses' reductions, softmax and
///   index ops. (The BN + ReLU fusion took 18 dispatches off: 9 `unary`, 9 `relu_backward`;
///   permuting each im2col convolution's dY once for both its gradients took 19 `strided_copy`.)
///
/// A fusion that removes dispatches lowers these (update the table); a change that adds some, or
/// that makes a step wait or submit more, fails the test below.
const RESNET18_B4_STEP: &[(&str, u64)] = &[
    ("batchnorm:bn_apply", 21),
    ("batchnorm:bn_bwd_apply", 21),
    ("batchnorm:bn_bwd_reduce", 21),
    ("batchnorm:bn_stats_running", 21),
    ("conv2d:col2im", 19),
    ("conv2d:im2col", 40),
    ("elementwise:binary", 3),
    ("elementwise:binary_same", 38),
    ("elementwise:fill", 1),
    ("elementwise:relu_backward", 8),
    ("elementwise:unary", 44),
    ("index:gather", 1),
    ("index:scatter_add", 3),
    ("matmul:pad", 5),
    ("matmul_subgroup:matmul_sg", 65),
    ("optim:adam4", 62),
    ("pool:max_pool", 1),
    ("pool:max_pool_bwd", 1),
    ("reduce:reduce_thread", 12),
    ("reduce:reduce_workgroup", 4),
    ("shape:strided_copy", 51),
    ("softmax:softmax_rows", 2),
];

#[test]
fn a_small_training_step_keeps_its_dispatch_and_submission_counts() {
    use unreid::bench::{profile_step, Mode, ModelCase};
    use unreid::ops::matmul::with_split_k;
    // Its own device, so no other test's work is counted.
    let d = Device::gpu_with(&GpuOptions::default()).unwrap();
    let case = ModelCase::new("resnet18", 4, 32, 16, Mode::Train);
    // Two warm-up steps (the first makes Adam's moments, the second grows the pool for them),
    // then the counted step, then one under timestamp queries for the per-kernel counts.
    let p = with_split_k(1, || profile_step(&d, &case, 2)).unwrap();
    let c = p.counters;
    let pinned: u64 = RESNET18_B4_STEP.iter().map(|(_, n)| n).sum();
    let lavapipe = d.to_string().contains("llvmpipe");
    if lavapipe {
        assert_eq!(c.dispatches, pinned, "dispatches of a step: {c:?}");
    } else {
        // Other adapters may pick other matmul paths (tiled, split-K): the structure still holds.
        assert!(c.dispatches <= pinned + 100, "{c:?}");
    }
    // One submission per full slice of SUBMIT_SLICE dispatches, and one for the loss read back.
    assert_eq!(
        c.submissions,
        c.dispatches / SUBMIT_SLICE as u64 + 1,
        "submissions: {c:?}"
    );
    // The loss read back is the one time the step waits for the device.
    assert_eq!((c.host_waits, c.readbacks), (1, 1), "{c:?}");
    // Steady state: every buffer from the pool and every bind group from the cache (parameters,
    // moments and running statistics keep their buffers; the pool hands the transients out in
    // the same order each step).
    assert_eq!(c.buffers_created, 0, "{c:?}");
    assert_eq!(
        (c.bind_groups_created, c.bind_group_hits),
        (0, c.dispatches),
        "bind groups of a steady step: {c:?}"
    );
    if let (Some(kernels), true) = (&p.kernels, lavapipe) {
        let mut got: Vec<(&str, u64)> = kernels
            .iter()
            .map(|k| (k.kernel.as_str(), k.dispatches))
            .collect();
        got.sort();
        assert_eq!(
            got, RESNET18_B4_STEP,
            "dispatches per kernel of the profiled step"
        );
    }
}
