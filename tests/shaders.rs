//! Every WGSL file in shaders/ parses and validates with naga, and every entry point fits WebGPU's
//! baseline limits or has a fallback the ops take on such adapters: no GPU needed.

mod common;

use common::{needs, Needs};
use std::path::Path;

#[test]
fn every_shader_validates_with_naga() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|x| x != "wgsl") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
        naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::SUBGROUP | naga::valid::Capabilities::SUBGROUP_BARRIER,
        )
        .validate(&module)
        .unwrap_or_else(|e| panic!("{}: {}", path.display(), e.emit_to_string(&source)));
        assert!(
            !module.entry_points.is_empty(),
            "{} has no entry point",
            path.display()
        );
        checked += 1;
    }
    assert!(
        checked >= 6,
        "only {checked} shaders found in {}",
        dir.display()
    );
}

/// Entry points that bind more storage buffers than WebGPU's baseline allows (8 per shader
/// stage: browsers, many mobile and some Metal / DX12 tiers), each with the path the ops take on
/// such adapters instead (chosen by the device's `max_storage_buffers_per_shader_stage`,
/// `ops::binds_storage_buffers`) and the test that runs that path on a device capped to the
/// baseline (`GpuOptions::limits_cap`), where wgpu would refuse the wide kernel.
const WIDE_KERNELS: &[(&str, &str, &str)] = &[
    (
        "batchnorm",
        "bn_bwd_apply",
        "bn_bwd_apply_packed (8): tests/layers.rs batch_norm_with_fused_activation_on_the_webgpu_baseline",
    ),
    (
        "optim",
        "adam_multi",
        "one `adam` (4) per tensor: tests/optim.rs multi_tensor_adam_matches_the_per_tensor_path_and_the_reference",
    ),
];

/// Every entry point of every shader, at its constants' defaults, against WebGPU's baseline
/// limits (`wgpu::Limits::default()`): at most 16 KiB of workgroup storage, 256 invocations per
/// workgroup and 256 x 256 x 64 as its size, and at most 8 storage buffers unless listed in [`WIDE_KERNELS`] (the list is exact:
/// a listed kernel that fits fails too). The matmul kernels' other tile shapes are checked
/// in tests/split_k.rs; tests/webgpu_limits.rs runs training steps on a capped device.
#[test]
fn every_entry_point_fits_the_webgpu_baseline_or_has_a_fallback() {
    let limits = wgpu::Limits::default();
    let mut wide = Vec::new();
    let mut entries = 0;
    for (shader, source) in unreid::gpu::SHADERS {
        let module = naga::front::wgsl::parse_str(source).unwrap();
        for ep in &module.entry_points {
            let n: Needs = needs(shader, &ep.name, &[]);
            let what = format!("{shader}:{} {n:?}", ep.name);
            assert!(
                n.workgroup_bytes <= limits.max_compute_workgroup_storage_size,
                "{what}"
            );
            assert!(
                n.invocations <= limits.max_compute_invocations_per_workgroup,
                "{what}"
            );
            let max_size = [
                limits.max_compute_workgroup_size_x,
                limits.max_compute_workgroup_size_y,
                limits.max_compute_workgroup_size_z,
            ];
            assert!(
                n.workgroup_size.iter().zip(max_size).all(|(s, m)| *s <= m),
                "{what}"
            );
            if n.storage_buffers > limits.max_storage_buffers_per_shader_stage {
                eprintln!("over the baseline: {what}");
                wide.push((shader.to_string(), ep.name.clone()));
            }
            entries += 1;
        }
    }
    let listed: Vec<(String, String)> = WIDE_KERNELS
        .iter()
        .map(|(s, e, _)| (s.to_string(), e.to_string()))
        .collect();
    assert_eq!(wide, listed, "entry points over 8 storage buffers");
    assert!(entries > 40, "only {entries} entry points");
    // The counting itself: bn_bwd_apply binds x, g, y, mean, var, gamma, sum_g, sum_gx and dx;
    // matmul_tiled's two staging tiles are 2 x 2048 floats, exactly the baseline's 16 KiB.
    assert_eq!(needs("batchnorm", "bn_bwd_apply", &[]).storage_buffers, 9);
    assert_eq!(
        needs("batchnorm", "bn_bwd_apply_packed", &[]).storage_buffers,
        8
    );
    assert_eq!(needs("matmul", "matmul_tiled", &[]).workgroup_bytes, 16384);
    assert_eq!(needs("matmul", "matmul_tiled", &[]).invocations, 256);
}
