//! Shared test setup: the GPU device under test (lavapipe in CI), with output poisoning on.

#![allow(dead_code)]

use unreid::Device;

/// The adapter the binary would pick, with every fresh buffer NaN-filled so unwritten outputs fail.
pub fn gpu() -> Device {
    let device = Device::gpu().unwrap_or_else(|e| panic!("the GPU tests need an adapter: {e}"));
    device.as_gpu().unwrap().set_poison(true);
    device
}
