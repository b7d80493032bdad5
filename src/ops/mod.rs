//! Ops: one file per family. Each op checks its operands, runs its WGSL kernel (GPU) or its
//! `cpu::` reference (CPU devices), and records its backward rule, written with the same ops.

pub mod batchnorm;
pub mod conv2d;
pub mod elementwise;
pub mod functional;
pub mod index;
pub mod losses;
pub mod matmul;
pub mod memory;
pub mod optim;
pub mod pool;
pub mod reduce;
pub mod shape;
pub mod softmax;
pub mod topk;

use crate::error::{Error, Result};
use crate::gpu::{Gpu, GpuBuffer};
use crate::Tensor;
use std::sync::Arc;

/// Runs `$body` on the host data of a CPU float tensor in whichever precision it holds, wrapping
/// the returned `Vec` back into tensor storage of the same precision.
macro_rules! host_float {
    ($t:expr, |$x:ident| $body:expr) => {
        match $t.host_float().expect("a CPU float tensor") {
            $crate::tensor::HostFloat::F32($x) => {
                $crate::tensor::Data::F32(std::sync::Arc::new($body))
            }
            $crate::tensor::HostFloat::F64($x) => {
                $crate::tensor::Data::F64(std::sync::Arc::new($body))
            }
        }
    };
}

/// Like `host_float!` for ops on two or three float tensors of the same CPU device.
macro_rules! host_float2 {
    ($a:expr, $b:expr, |$x:ident, $y:ident| $body:expr) => {{
        use $crate::tensor::HostFloat as H;
        match (
            $a.host_float().expect("a CPU float tensor"),
            $b.host_float().expect("a CPU float tensor"),
        ) {
            (H::F32($x), H::F32($y)) => $crate::tensor::Data::F32(std::sync::Arc::new($body)),
            (H::F64($x), H::F64($y)) => $crate::tensor::Data::F64(std::sync::Arc::new($body)),
            _ => unreachable!("operands on one device share a precision"),
        }
    }};
}

macro_rules! host_float3 {
    ($a:expr, $b:expr, $c:expr, |$x:ident, $y:ident, $z:ident| $body:expr) => {{
        use $crate::tensor::HostFloat as H;
        match (
            $a.host_float().expect("a CPU float tensor"),
            $b.host_float().expect("a CPU float tensor"),
            $c.host_float().expect("a CPU float tensor"),
        ) {
            (H::F32($x), H::F32($y), H::F32($z)) => {
                $crate::tensor::Data::F32(std::sync::Arc::new($body))
            }
            (H::F64($x), H::F64($y), H::F64($z)) => {
                $crate::tensor::Data::F64(std::sync::Arc::new($body))
            }
            _ => unreachable!("operands on one device share a precision"),
        }
    }};
}

pub(crate) use {host_float, host_float2, host_float3};

/// Checks that all operands share one device.
pub(crate) fn same_device(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    let first = tensors[0].device();
    for t in &tensors[1..] {
        if !t.device().same_as(first) {
            return Err(Error::DeviceMismatch {
                op,
                a: first.to_string(),
                b: t.device().to_string(),
            });
        }
    }
    Ok(())
}

/// Words in the largest parameter block a dispatch may pass (`gpu::MAX_PARAM_BYTES`).
const PARAM_WORDS: usize = crate::gpu::MAX_PARAM_BYTES / 4;

/// Little-endian 32-bit words for a kernel's uniform parameter block, built in place (every
/// dispatch builds one, so it allocates nothing). Panics past `gpu::MAX_PARAM_BYTES`, which
/// `Gpu::dispatch` would refuse anyway: the blocks are fixed by the shaders, not by input.
pub(crate) struct Params {
    words: [u32; PARAM_WORDS],
    len: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params::new()
    }
}

impl Params {
    pub(crate) fn new() -> Self {
        Params {
            words: [0; PARAM_WORDS],
            len: 0,
        }
    }
    pub(crate) fn u32(mut self, v: u32) -> Self {
        assert!(
            self.len < PARAM_WORDS,
            "kernel params exceed one arena slot"
        );
        self.words[self.len] = v;
        self.len += 1;
        self
    }
    pub(crate) fn usize(self, v: usize) -> Self {
        self.u32(u32::try_from(v).expect("kernel sizes fit in u32 (checked against buffer limits)"))
    }
    pub(crate) fn f32(self, v: f32) -> Self {
        self.u32(v.to_bits())
    }
    /// An `array<vec4<u32>, 2>`: up to 8 dims, zero-padded.
    pub(crate) fn dims8(mut self, dims: &[usize]) -> Self {
        assert!(dims.len() <= 8);
        for i in 0..8 {
            self = self.u32(dims.get(i).map_or(0, |&d| d as u32));
        }
        self
    }
    pub(crate) fn bytes(&self) -> &[u8] {
        bytemuck::cast_slice(&self.words[..self.len])
    }
}

/// The tensor an in-place kernel may overwrite for state tensor `t` (GPU only): `t` itself
/// (detached, same buffer) when the caller donated it (no other tensor shares its storage),
/// else a fresh copy of it, recorded in stream order, so `t` keeps its values.
pub(crate) fn writable_state(t: &Tensor, donated: bool, op: &str) -> Result<Tensor> {
    if donated {
        return Ok(t.detach());
    }
    let gpu = t
        .device()
        .as_gpu()
        .expect("writable_state is for GPU tensors");
    let out = alloc_f32(gpu, t.numel(), op)?;
    let src = t.gpu_buffer().expect("a GPU tensor has a buffer");
    gpu.copy(src, &out, (t.numel() * 4) as u64)?;
    Ok(Tensor::from_gpu(
        t.shape().to_vec(),
        t.dtype(),
        t.device(),
        out,
    ))
}

/// Whether a kernel that binds `n` storage buffers can run on `gpu`: its
/// `max_storage_buffers_per_shader_stage` (WebGPU's baseline, and so browsers and many mobile
/// adapters, allow 8; desktop Vulkan, Metal and DX12 usually many more). Ops whose fused kernel
/// binds more than 8 ask this and otherwise take a path whose kernels bind at most 8, with the
/// same results (multi-tensor Adam, batch-norm backward); tests/shaders.rs lists those kernels.
pub(crate) fn binds_storage_buffers(gpu: &Gpu, n: usize) -> bool {
    gpu.limits().max_storage_buffers_per_shader_stage as usize >= n
}

/// A float output buffer of `n` elements.
pub(crate) fn alloc_f32(gpu: &Arc<Gpu>, n: usize, op: &str) -> Result<GpuBuffer> {
    Ok(gpu.alloc((n.max(1) * 4) as u64, op)?)
}

/// Host slices of a CPU float tensor in one precision, and the storage for a result in it: lets
/// an op with many float operands write its CPU path once, generic over f32/f64.
pub(crate) trait HostElem: crate::cpu::Float {
    fn slice(t: &Tensor) -> &[Self];
    fn wrap(v: Vec<Self>) -> crate::tensor::Data;
}

impl HostElem for f32 {
    fn slice(t: &Tensor) -> &[f32] {
        match t.host_float() {
            Some(crate::tensor::HostFloat::F32(v)) => v,
            _ => panic!("an f32 CPU tensor"),
        }
    }
    fn wrap(v: Vec<f32>) -> crate::tensor::Data {
        crate::tensor::Data::F32(Arc::new(v))
    }
}

impl HostElem for f64 {
    fn slice(t: &Tensor) -> &[f64] {
        match t.host_float() {
            Some(crate::tensor::HostFloat::F64(v)) => v,
            _ => panic!("an f64 CPU tensor"),
        }
    }
    fn wrap(v: Vec<f64>) -> crate::tensor::Data {
        crate::tensor::Data::F64(Arc::new(v))
    }
}
