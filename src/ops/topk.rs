//! Per-row top-k selection along the last axis (the kNN building block). Not differentiable.

use std::sync::Arc;

use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::alloc_f32;
use crate::tensor::{DType, Data, HostFloat};
use crate::{cpu, Device, Tensor};

/// Largest k the GPU kernel keeps per invocation (its private list length).
pub const TOPK_MAX: usize = 64;

impl Tensor {
    /// The `k` smallest (`largest = false`) or largest values along the last axis, sorted, with
    /// their indices (I32); ties go to the lower index. Returns (values, indices), each [.., k].
    pub fn topk(&self, k: usize, largest: bool) -> Result<(Tensor, Tensor)> {
        self.expect_dtype("topk", DType::F32)?;
        let Some(&len) = self.shape().last() else {
            return shape_err("topk", "needs at least one axis");
        };
        if k == 0 || k > len || k > TOPK_MAX {
            return shape_err(
                "topk",
                format!(
                    "k = {k} must be in 1..={} for rows of {len}",
                    TOPK_MAX.min(len)
                ),
            );
        }
        let rows = self.numel() / len;
        let mut out_shape = self.shape().to_vec();
        *out_shape.last_mut().unwrap() = k;
        let (values, indices) = match self.device() {
            Device::Gpu(g) => {
                let v = alloc_f32(g, rows * k, "topk values")?;
                let i = alloc_f32(g, rows * k, "topk indices")?;
                let params = crate::ops::Params::new()
                    .usize(rows)
                    .usize(len)
                    .usize(k)
                    .u32(0);
                let kernel = Kernel::new("topk", "topk_rows").with("LARGEST", largest as u32);
                g.dispatch(
                    &kernel,
                    params.bytes(),
                    &[self.gpu_buffer().unwrap(), &v, &i],
                    grid_1d(rows as u32, 1),
                )?;
                (Data::Gpu(v.into()), Data::Gpu(i.into()))
            }
            _ => match self.host_float().unwrap() {
                HostFloat::F32(x) => {
                    let (v, i) = cpu::topk::topk(x, len, k, largest);
                    (Data::F32(Arc::new(v)), Data::I32(Arc::new(i)))
                }
                HostFloat::F64(x) => {
                    let (v, i) = cpu::topk::topk(x, len, k, largest);
                    (Data::F64(Arc::new(v)), Data::I32(Arc::new(i)))
                }
            },
        };
        Ok((
            Tensor::from_parts(out_shape.clone(), DType::F32, self.device().clone(), values),
            Tensor::from_parts(out_shape, DType::I32, self.device().clone(), indices),
        ))
    }
}
