//! Shared test setup: the GPU device under test (lavapipe in CI), with output poisoning on.

#![allow(dead_code)]

pub mod matmul;

use unreid::Device;

/// The adapter the binary would pick, with every fresh buffer NaN-filled so unwritten outputs fail.
pub fn gpu() -> Device {
    let device = Device::gpu().unwrap_or_else(|e| panic!("the GPU tests need an adapter: {e}"));
    device.as_gpu().unwrap().set_poison(true);
    device
}

/// The same adapter opened with its limits capped to WebGPU's baseline (`wgpu::Limits::default()`:
/// 8 storage buffers per shader stage, 16 KiB workgroup storage, 256 invocations per workgroup),
/// once per test binary, poisoning on: wgpu validates every pipeline against those limits, so a
/// kernel too wide for a browser or mobile adapter fails here.
pub fn baseline_gpu() -> Device {
    static SHARED: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let options = unreid::gpu::GpuOptions {
                limits_cap: Some(wgpu::Limits::default()),
                ..Default::default()
            };
            let device = Device::gpu_with(&options)
                .unwrap_or_else(|e| panic!("the GPU tests need an adapter: {e}"));
            let gpu = device.as_gpu().unwrap();
            assert_eq!(gpu.limits().max_storage_buffers_per_shader_stage, 8);
            gpu.set_poison(true);
            device
        })
        .clone()
}

/// The same adapter with the kernel shapes real GPUs get (`KernelShapes::Gpu`: 256-wide
/// reduction workgroups, one element per strided-copy invocation, the tiled matmul, multi-tensor
/// Adam, ...), once per test binary,
/// poisoning on: on lavapipe (CI) the ops otherwise choose the CPU-adapter shapes, and this is
/// what keeps the GPU shapes tested there.
pub fn gpu_shaped() -> Device {
    static SHARED: std::sync::OnceLock<Device> = std::sync::OnceLock::new();
    SHARED
        .get_or_init(|| {
            let options = unreid::gpu::GpuOptions {
                kernel_shapes: unreid::gpu::KernelShapes::Gpu,
                ..Default::default()
            };
            let device = Device::gpu_with(&options)
                .unwrap_or_else(|e| panic!("the GPU tests need an adapter: {e}"));
            let gpu = device.as_gpu().unwrap();
            assert!(!gpu.cpu_shapes());
            gpu.set_poison(true);
            device
        })
        .clone()
}

use unreid::autograd::gradcheck::{assert_close, Input, TestFn};
use unreid::Tensor;

/// Forward only: `f` on the GPU vs the f64 CPU reference (for ops with no gradient, or inputs too
/// large for finite differences).
pub fn compare_forward(name: &str, f: &TestFn, inputs: &[Input], rtol: f64, atol: f64) {
    compare_forward_on(&gpu(), name, f, inputs, rtol, atol);
}

/// [`compare_forward`] on `device` (e.g. [`gpu_shaped`]).
pub fn compare_forward_on(
    device: &Device,
    name: &str,
    f: &TestFn,
    inputs: &[Input],
    rtol: f64,
    atol: f64,
) {
    let run = |device: &Device| -> (Vec<f64>, Vec<usize>) {
        let ts: Vec<Tensor> = inputs
            .iter()
            .map(|i| Tensor::from_f64(&i.values, &i.shape, device).unwrap())
            .collect();
        let out = f(&ts, device).unwrap_or_else(|e| panic!("{name} on {device}: {e}"));
        (out.to_vec_f64().unwrap(), out.shape().to_vec())
    };
    let (want, want_shape) = run(&Device::CpuF64);
    let (got, got_shape) = run(device);
    assert_eq!(got_shape, want_shape, "{name}: output shape");
    assert_close(
        &format!("{name}: GPU vs CPU reference"),
        &got,
        &want,
        rtol,
        atol,
    );
}

/// The full differentiable-op check on the GPU under test (f32 tolerances).
pub fn check(name: &str, f: &TestFn, inputs: &[Input]) {
    check_on(&gpu(), name, f, inputs);
}

/// [`check`] on `device` (e.g. [`baseline_gpu`]).
pub fn check_on(device: &Device, name: &str, f: &TestFn, inputs: &[Input]) {
    unreid::autograd::gradcheck::check_op(name, f, inputs, device, 2e-4, 1e-5)
        .unwrap_or_else(|e| panic!("{name} on {device}: {e}"));
}

/// What one compute entry point needs of the adapter, from naga's analysis of the module (after
/// its pipeline-overridable constants are set: `constants`, the rest at their defaults), for the
/// checks against WebGPU's baseline limits.
#[derive(Debug)]
pub struct Needs {
    /// `var<storage>` bindings the entry point uses (what `max_storage_buffers_per_shader_stage`
    /// counts; the runtime binds exactly these).
    pub storage_buffers: u32,
    /// Bytes of the `var<workgroup>` arrays it uses (`max_compute_workgroup_storage_size`).
    pub workgroup_bytes: u32,
    /// Invocations per workgroup (`max_compute_invocations_per_workgroup`).
    pub invocations: u32,
    /// The workgroup's size (`max_compute_workgroup_size_x`, `_y`, `_z`).
    pub workgroup_size: [u32; 3],
}

pub fn needs(shader: &str, entry: &str, constants: &[(&str, f64)]) -> Needs {
    let source = unreid::gpu::SHADERS
        .iter()
        .find(|(name, _)| *name == shader)
        .unwrap_or_else(|| panic!("no shader {shader}"))
        .1;
    let module = naga::front::wgsl::parse_str(source).unwrap();
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .unwrap();
    let constants = constants.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, entry)),
        &constants,
    )
    .unwrap_or_else(|e| panic!("{shader}:{entry} {constants:?}: {e}"));
    let index = module
        .entry_points
        .iter()
        .position(|ep| ep.name == entry)
        .unwrap_or_else(|| panic!("no entry point {shader}:{entry}"));
    let uses = info.get_entry_point(index);
    let (mut storage_buffers, mut workgroup_bytes) = (0, 0);
    for (handle, var) in module.global_variables.iter() {
        if uses[handle].is_empty() {
            continue;
        }
        match var.space {
            naga::AddressSpace::Storage { .. } => storage_buffers += 1,
            naga::AddressSpace::WorkGroup => {
                workgroup_bytes += module.types[var.ty].inner.size(module.to_ctx())
            }
            _ => {}
        }
    }
    Needs {
        storage_buffers,
        workgroup_bytes,
        invocations: module.entry_points[index].workgroup_size.iter().product(),
        workgroup_size: module.entry_points[index].workgroup_size,
    }
}
