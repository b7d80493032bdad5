//! The adapter here opened with its limits capped to WebGPU's baseline (`GpuOptions::limits_cap`
//! = `wgpu::Limits::default()`: 8 storage buffers per shader stage, 16 KiB workgroup storage, 256
//! invocations per workgroup, 128 MiB bindings), as browsers and many mobile adapters give. wgpu
//! validates every pipeline against the limits the device was requested with, so whatever
//! kernel an op picks that such an adapter could not run fails here. The kernels over the
//! baseline are refused (the cap is real), and whole training steps of ResNet-18 and MobileNetV2
//! (every kernel of a step, the fallbacks for batch-norm backward and multi-tensor Adam among
//! them) run and give the losses the adapter's own limits give. The per-kernel checks against
//! the CPU reference are in tests/layers.rs and tests/optim.rs (`common::baseline_gpu`); the
//! static count of every entry point in tests/shaders.rs.

mod common;

use unreid::bench::{Mode, ModelCase, TrainStep};
use unreid::gpu::Kernel;
use unreid::Device;

/// The kernels that bind more than 8 storage buffers do not compile on the capped device (so the
/// fallbacks are what runs there), while their narrow forms do.
#[test]
fn kernels_over_the_baseline_are_refused_on_a_capped_device() {
    let device = common::baseline_gpu();
    let gpu = device.as_gpu().unwrap();
    let params = [0u8; 32];
    for (shader, entry) in [("batchnorm", "bn_bwd_apply"), ("optim", "adam_multi")] {
        let err = gpu
            .dispatch(&Kernel::new(shader, entry), &params, &[], [1, 1, 1])
            .expect_err("a kernel over the storage-buffer limit");
        let text = err.to_string();
        assert!(
            text.to_lowercase().contains("storage"),
            "{shader}:{entry}: {text}"
        );
    }
    // The packed form binds 8: it compiles, and then only the missing buffers are refused.
    let err = gpu
        .dispatch(
            &Kernel::new("batchnorm", "bn_bwd_apply_packed"),
            &params,
            &[],
            [1, 1, 1],
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("binds 8 storage buffers, 0 given"), "{err}");
}

/// Losses of `steps` training steps of `arch` (batch 2, 3x32x16 images, the bench's yardstick
/// step: cross-entropy + batch-hard triplet, Adam) on `device`; each step's loss is read before
/// its update, so later losses depend on every gradient and update of the earlier steps.
fn losses(device: &Device, arch: &str, steps: usize) -> Vec<f32> {
    let case = ModelCase::new(arch, 2, 32, 16, Mode::Train);
    let mut step = TrainStep::new(device, &case).unwrap_or_else(|e| panic!("{arch}: {e}"));
    (0..steps)
        .map(|s| {
            step.run_unsynced(s)
                .unwrap_or_else(|e| panic!("{arch} step {s} on {device}: {e}"))
        })
        .collect()
}

/// ResNet-18 (basic blocks, BN + ReLU fused) and MobileNetV2 (depthwise convolutions, BN + ReLU6
/// fused) train on the capped device: two steps each (the second's loss after the first's
/// backward and Adam update), with the losses of the same steps on the adapter's own limits (the
/// fallbacks compute the same values: equal to float rounding).
#[test]
fn training_steps_run_within_the_webgpu_baseline() {
    let (capped, own) = (common::baseline_gpu(), common::gpu());
    for arch in ["resnet18", "mobilenet_v2"] {
        let got = losses(&capped, arch, 2);
        let want = losses(&own, arch, 2);
        for (s, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g.is_finite(), "{arch} step {s}: loss {g}");
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1.0),
                "{arch} step {s}: {g} capped vs {w}"
            );
        }
    }
}
