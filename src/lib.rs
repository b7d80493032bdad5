//! unreid: unsupervised and domain-adaptive person re-identification on any GPU.
//!
//! Tensors live on a wgpu adapter (every kernel is hand-written WGSL in `shaders/`) or on the CPU
//! reference device (`src/cpu/`, rayon, generic over f32/f64); reverse-mode autograd sits on top.

pub mod autograd;
pub mod cli;
pub mod cluster;
pub mod cpu;
pub mod data;
mod device;
mod error;
pub mod eval;
pub mod features;
pub mod gpu;
pub mod io;
pub mod loss;
pub mod memory;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod progress;
pub mod random;
pub mod shape;
mod tensor;
pub mod train;

pub use autograd::{no_grad, NoGradGuard};
pub use device::{Device, DeviceChoice};
pub use error::{Error, Result};
pub use tensor::{DType, Tensor};
