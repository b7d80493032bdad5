//! The CPU reference of every op in `ops/`, same file names, plain rayon code generic over f32/f64.
//!
//! These functions share no code with the WGSL kernels: they are the independent ground truth the
//! tests compare the GPU against, and in f64 the ground truth of the numeric gradient checks.

pub mod batchnorm;
pub mod conv2d;
pub mod elementwise;
pub mod fast;
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

/// The float types the references run in.
pub trait Float:
    num_traits::Float + num_traits::FromPrimitive + Send + Sync + std::fmt::Debug + 'static
{
}
impl Float for f32 {}
impl Float for f64 {}
