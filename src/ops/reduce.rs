//! Reductions over one axis (sum, mean, max, min, argmax, argmin) and their backward rules.

use crate::autograd::record;
pub use crate::cpu::reduce::ReduceOp;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::{alloc_f32, host_float, Params};
use crate::shape::split_at_axis;
use crate::tensor::{DType, Data};
use crate::{cpu, Device, Tensor};

/// Kernel OP codes in shaders/reduce.wgsl.
const SUM: u32 = 0;
const MAX: u32 = 1;
const MIN: u32 = 2;
const ARGMAX: u32 = 3;
const ARGMIN: u32 = 4;

/// Axes shorter than this are reduced by one invocation per output; longer ones by a workgroup.
const SERIAL_AXIS_MAX: usize = 64;

fn reduced_shape(shape: &[usize], axis: usize, keepdim: bool) -> Vec<usize> {
    let mut s = shape.to_vec();
    if keepdim {
        s[axis] = 1;
    } else {
        s.remove(axis);
    }
    s
}

/// The raw reduction (no autograd). Returns values (F32) or indices (I32 for arg ops).
fn reduce_raw(x: &Tensor, code: u32, axis: usize, keepdim: bool) -> Result<Tensor> {
    x.expect_dtype("reduce", DType::F32)?;
    let (outer, len, inner) = split_at_axis(x.shape(), axis);
    if len == 0 {
        return shape_err(
            "reduce",
            format!("cannot reduce an empty axis of shape {:?}", x.shape()),
        );
    }
    let out_shape = reduced_shape(x.shape(), axis, keepdim);
    let outputs = outer * inner;
    let arg = code == ARGMAX || code == ARGMIN;
    let dtype = if arg { DType::I32 } else { DType::F32 };
    let data = match x.device() {
        Device::Gpu(g) => {
            let out = alloc_f32(g, outputs, "reduction output")?;
            let params = Params::new().usize(outer).usize(len).usize(inner).f32(1.0);
            let kernel_bufs = [x.gpu_buffer().unwrap(), &out];
            if len <= SERIAL_AXIS_MAX {
                let kernel = Kernel::new("reduce", "reduce_thread").with("OP", code);
                g.dispatch(
                    &kernel,
                    params.bytes(),
                    &kernel_bufs,
                    grid_1d(outputs as u32, 256),
                )?;
            } else {
                let kernel = Kernel::new("reduce", "reduce_workgroup").with("OP", code);
                g.dispatch(
                    &kernel,
                    params.bytes(),
                    &kernel_bufs,
                    grid_1d(outputs as u32, 1),
                )?;
            }
            Data::Gpu(out.into())
        }
        _ if arg => {
            let largest = code == ARGMAX;
            let idx = match x.host_float().unwrap() {
                crate::tensor::HostFloat::F32(v) => {
                    cpu::reduce::arg_reduce(largest, v, outer, len, inner)
                }
                crate::tensor::HostFloat::F64(v) => {
                    cpu::reduce::arg_reduce(largest, v, outer, len, inner)
                }
            };
            Data::I32(idx.into())
        }
        _ => {
            let op = match code {
                SUM => ReduceOp::Sum,
                MAX => ReduceOp::Max,
                _ => ReduceOp::Min,
            };
            host_float!(x, |v| cpu::reduce::reduce(op, v, outer, len, inner, 1.0))
        }
    };
    Ok(Tensor::from_parts(
        out_shape,
        dtype,
        x.device().clone(),
        data,
    ))
}

impl Tensor {
    /// Sum over `axis` (negative counts from the end).
    pub fn sum(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let a = self.axis("sum", axis)?;
        let out = reduce_raw(
            &self.as_rank1(),
            SUM,
            a.min(self.rank().max(1) - 1),
            keepdim,
        )?;
        let out = if self.rank() == 0 {
            out.view_as(vec![])
        } else {
            out
        };
        let in_shape = self.shape().to_vec();
        let keep_shape = reduced_shape(&in_shape, a.min(in_shape.len().saturating_sub(1)), true);
        Ok(record(out, "sum", &[self], move |g, _| {
            let g = if in_shape.is_empty() {
                g.clone()
            } else {
                g.reshape(&keep_shape)?
            };
            Ok(vec![Some(g.broadcast_to(&in_shape)?)])
        }))
    }

    /// Mean over `axis`.
    pub fn mean(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let n = self.dim(axis)?;
        self.sum(axis, keepdim)?.mul_scalar(1.0 / n as f32)
    }

    /// Sum of every element, as a scalar (shape []).
    pub fn sum_all(&self) -> Result<Tensor> {
        self.reshape(&[self.numel()])?.sum(0, false)
    }

    /// Mean of every element, as a scalar (shape []).
    pub fn mean_all(&self) -> Result<Tensor> {
        self.sum_all()?.mul_scalar(1.0 / self.numel().max(1) as f32)
    }

    /// Largest value along `axis`; the gradient goes to the position `argmax` picks.
    pub fn max(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.extremum(axis, keepdim, MAX, ARGMAX)
    }

    /// Smallest value along `axis`; the gradient goes to the position `argmin` picks.
    pub fn min(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        self.extremum(axis, keepdim, MIN, ARGMIN)
    }

    fn extremum(&self, axis: isize, keepdim: bool, code: u32, arg_code: u32) -> Result<Tensor> {
        let a = self.axis("max/min", axis)?;
        let out = reduce_raw(self, code, a, keepdim)?;
        let x = self.clone();
        Ok(record(out, "max/min", &[self], move |g, _| {
            let idx = reduce_raw(&x, arg_code, a, true)?;
            let keep = reduced_shape(x.shape(), a, true);
            let g = g.reshape(&keep)?;
            let zeros = Tensor::zeros(x.shape(), g.device())?;
            Ok(vec![Some(zeros.scatter_add(a as isize, &idx, &g)?)])
        }))
    }

    /// Index of the largest value along `axis` (I32; ties take the lowest index).
    pub fn argmax(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let a = self.axis("argmax", axis)?;
        reduce_raw(self, ARGMAX, a, keepdim)
    }

    /// Index of the smallest value along `axis` (I32; ties take the lowest index).
    pub fn argmin(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let a = self.axis("argmin", axis)?;
        reduce_raw(self, ARGMIN, a, keepdim)
    }

    /// Sums a broadcast result back down to `shape` (the backward of broadcasting).
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let lead = self.rank() - shape.len();
        let mut t = self.clone();
        for d in (0..self.rank()).rev() {
            let target = if d < lead { 1 } else { shape[d - lead] };
            if target == 1 && self.shape()[d] != 1 {
                t = t.sum(d as isize, true)?;
            }
        }
        t.reshape(shape)
    }

    /// Rank-0 tensors reduce as a one-element vector.
    fn as_rank1(&self) -> Tensor {
        if self.rank() == 0 {
            self.view_as(vec![1])
        } else {
            self.clone()
        }
    }
}
