//! The GPU runtime: batching, pooling, big dispatch grids, and errors instead of panics.

mod common;
use unreid::gpu::{GpuOptions, SHADERS};
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
    let submissions = after.submissions - before.submissions;
    assert!(submissions <= 3, "1000 ops took {submissions} submissions");
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
    use unreid::gpu::Kernel;
    // The shared device, as every test of a binary uses it.
    let d = common::gpu();
    let gpu = d.as_gpu().unwrap().clone();
    let bad = std::thread::spawn(move || {
        let a = gpu.alloc(64, "bad dispatch").unwrap();
        let b = gpu.alloc(64, "bad dispatch").unwrap();
        // `fill` binds one buffer: a second one does not match its layout.
        (0..50)
            .map(|_| {
                gpu.dispatch(
                    &Kernel::new("elementwise", "fill"),
                    bytemuck::cast_slice(&[16u32, 0]),
                    &[&a, &b],
                    [1, 1, 1],
                )
                .map_err(|e| e.to_string())
            })
            .collect::<Vec<_>>()
    });
    // Meanwhile this thread records and reads its own work on the same device.
    for k in 0..50 {
        let x = Tensor::full(&[300], k as f32, &d).unwrap();
        let y = x.add_scalar(1.0).unwrap().to_vec().unwrap();
        assert!(y.iter().all(|&v| v == k as f32 + 1.0), "iteration {k}");
    }
    d.sync()
        .expect("another thread's rejected dispatch leaked here");
    for r in bad.join().unwrap() {
        let e = r.expect_err("the invalid dispatch was accepted");
        assert!(e.contains("elementwise:fill"), "{e}");
    }
}
