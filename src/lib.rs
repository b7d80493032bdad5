//! unreid: unsupervised and domain-adaptive person re-identification on any GPU.
//!
//! Tensors live on a wgpu adapter (every kernel is hand-written WGSL in `shaders/`) or on the CPU
//! reference device (`src/cpu/`, rayon, generic over f32/f64); reverse-mode autograd sits on top.
pub mod cli;
pub mod cluster;
pub mod eval;
pub mod features;
