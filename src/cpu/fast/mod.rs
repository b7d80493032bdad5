//! The CPU device's fast path (f32): what `Device::Cpu` runs for the hot ops of a training step.
//!
//! Each function here computes exactly what its namesake in `cpu::` (the plain, obviously-correct
//! reference that `Device::CpuF64` runs and the GPU is tested against) computes, up to f32
//! rounding; tests/cpu_fast.rs checks each against the reference on random inputs and odd
//! shapes, gradients included.

pub mod batchnorm;
pub mod conv2d;
mod depthwise;
pub mod optim;
pub mod pool;
