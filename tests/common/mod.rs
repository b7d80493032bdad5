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

use unreid::autograd::gradcheck::{assert_close, Input, TestFn};
use unreid::Tensor;

/// Forward only: `f` on the GPU vs the f64 CPU reference (for ops with no gradient, or inputs too
/// large for finite differences).
pub fn compare_forward(name: &str, f: &TestFn, inputs: &[Input], rtol: f64, atol: f64) {
    let run = |device: &Device| -> (Vec<f64>, Vec<usize>) {
        let ts: Vec<Tensor> = inputs
            .iter()
            .map(|i| Tensor::from_f64(&i.values, &i.shape, device).unwrap())
            .collect();
        let out = f(&ts, device).unwrap_or_else(|e| panic!("{name} on {device}: {e}"));
        (out.to_vec_f64().unwrap(), out.shape().to_vec())
    };
    let (want, want_shape) = run(&Device::CpuF64);
    let (got, got_shape) = run(&gpu());
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
    unreid::autograd::gradcheck::check_op(name, f, inputs, &gpu(), 2e-4, 1e-5)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}
