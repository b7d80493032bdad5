//! Layout ops: reshape (a view), and permute / transpose / narrow / concat / broadcast_to, which
//! all run the one strided-copy kernel on the GPU.

use std::sync::Arc;

use crate::autograd::record;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Gpu, GpuBuffer, Kernel};
use crate::ops::{same_device, Params};
use crate::shape::{broadcast_shapes, broadcast_strides, collapse, contiguous_strides};
use crate::tensor::{numel, Data};
use crate::{cpu, Device, Tensor};

/// Applies a generic layout function to a CPU tensor's storage, whatever its element type.
macro_rules! host_any {
    ($t:expr, |$x:ident| $body:expr) => {
        match $t.data() {
            Data::F32($x) => Data::F32(Arc::new($body)),
            Data::F64($x) => Data::F64(Arc::new($body)),
            Data::I32($x) => Data::I32(Arc::new($body)),
            Data::Gpu(_) => unreachable!("host_any on a GPU tensor"),
        }
    };
}

/// Records one strided copy (see shaders/shape.wgsl) of `shape` elements from `src` to `dst`.
#[allow(clippy::too_many_arguments)]
fn gpu_copy(
    g: &Arc<Gpu>,
    src: &GpuBuffer,
    dst: &GpuBuffer,
    shape: &[usize],
    in_strides: &[usize],
    in_offset: usize,
    out_strides: &[usize],
    out_offset: usize,
) -> Result<()> {
    let n = numel(shape);
    if n == 0 {
        return Ok(());
    }
    let (mut shape, mut strides) = collapse(shape, &[in_strides.to_vec(), out_strides.to_vec()]);
    if shape.len() > 8 {
        return shape_err("strided copy", "more than 8 non-mergeable dims");
    }
    // The innermost dim (all dims of size 1 collapse to none: one element) is copied in runs.
    let inner = shape.pop().unwrap_or(1);
    let [inner_in, inner_out] = [0, 1].map(|i| strides[i].pop().unwrap_or(0));
    let row = g.run_length() as usize;
    let chunks = inner.div_ceil(row);
    let runs = n / inner * chunks;
    let params = Params::new()
        .usize(runs)
        .usize(shape.len())
        .usize(in_offset)
        .usize(out_offset)
        .dims8(&shape)
        .dims8(&strides[0])
        .dims8(&strides[1])
        .usize(inner)
        .usize(inner_in)
        .usize(inner_out)
        .usize(chunks);
    g.dispatch(
        &Kernel::new("shape", "strided_copy").with("ROW", row as u32),
        params.bytes(),
        &[src, dst],
        grid_1d(runs as u32, 256),
    )?;
    Ok(())
}

fn new_gpu_buffer(g: &Arc<Gpu>, n: usize, zeroed: bool) -> Result<GpuBuffer> {
    let b = g.alloc((n.max(1) * 4) as u64, "layout op output")?;
    if zeroed {
        g.fill_u32(&b, 0)?;
    }
    Ok(b)
}

impl Tensor {
    /// The same elements under a new shape (no copy).
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return shape_err(
                "reshape",
                format!("cannot view {:?} as {shape:?}", self.shape()),
            );
        }
        let out = self.view_as(shape.to_vec());
        let in_shape = self.shape().to_vec();
        Ok(record(out, "reshape", &[self], move |g, _| {
            Ok(vec![Some(g.reshape(&in_shape)?)])
        }))
    }

    /// Reorders dims: output dim `d` is input dim `perm[d]`.
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let mut seen = vec![false; self.rank()];
        if perm.len() != self.rank()
            || perm
                .iter()
                .any(|&p| p >= self.rank() || std::mem::replace(&mut seen[p], true))
        {
            return shape_err(
                "permute",
                format!(
                    "{perm:?} is not a permutation of the dims of {:?}",
                    self.shape()
                ),
            );
        }
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        let data = match self.device() {
            Device::Gpu(g) => {
                let out = new_gpu_buffer(g, self.numel(), false)?;
                let strides = contiguous_strides(self.shape());
                let in_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
                gpu_copy(
                    g,
                    self.gpu_buffer().unwrap(),
                    &out,
                    &out_shape,
                    &in_strides,
                    0,
                    &contiguous_strides(&out_shape),
                    0,
                )?;
                Data::Gpu(out.into())
            }
            _ => host_any!(self, |x| cpu::shape::permute(x, self.shape(), perm)),
        };
        let out = Tensor::from_parts(out_shape, self.dtype(), self.device().clone(), data);
        let mut inverse = vec![0; perm.len()];
        for (d, &p) in perm.iter().enumerate() {
            inverse[p] = d;
        }
        Ok(record(out, "permute", &[self], move |g, _| {
            Ok(vec![Some(g.permute(&inverse)?)])
        }))
    }

    /// Swaps two dims.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (self.axis("transpose", a)?, self.axis("transpose", b)?);
        let mut perm: Vec<usize> = (0..self.rank()).collect();
        perm.swap(a, b);
        self.permute(&perm)
    }

    /// Elements `start..start + len` along `axis`.
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let a = self.axis("narrow", axis)?;
        let size = self.shape()[a];
        if start + len > size {
            return shape_err(
                "narrow",
                format!(
                    "{start}..{} is outside axis {a} of {:?}",
                    start + len,
                    self.shape()
                ),
            );
        }
        let mut out_shape = self.shape().to_vec();
        out_shape[a] = len;
        let data = match self.device() {
            Device::Gpu(g) => {
                let out = new_gpu_buffer(g, numel(&out_shape), false)?;
                let strides = contiguous_strides(self.shape());
                let offset = start * strides[a];
                gpu_copy(
                    g,
                    self.gpu_buffer().unwrap(),
                    &out,
                    &out_shape,
                    &strides,
                    offset,
                    &contiguous_strides(&out_shape),
                    0,
                )?;
                Data::Gpu(out.into())
            }
            _ => host_any!(self, |x| cpu::shape::narrow(x, self.shape(), a, start, len)),
        };
        let out = Tensor::from_parts(out_shape, self.dtype(), self.device().clone(), data);
        Ok(record(out, "narrow", &[self], move |g, _| {
            Ok(vec![Some(g.pad_axis(a, start, size)?)])
        }))
    }

    /// Places this tensor at `start` along `axis` inside zeros of length `full` (narrow's backward).
    fn pad_axis(&self, axis: usize, start: usize, full: usize) -> Result<Tensor> {
        let mut out_shape = self.shape().to_vec();
        out_shape[axis] = full;
        let data = match self.device() {
            Device::Gpu(g) => {
                let out = new_gpu_buffer(g, numel(&out_shape), true)?;
                let out_strides = contiguous_strides(&out_shape);
                let offset = start * out_strides[axis];
                gpu_copy(
                    g,
                    self.gpu_buffer().unwrap(),
                    &out,
                    self.shape(),
                    &contiguous_strides(self.shape()),
                    0,
                    &out_strides,
                    offset,
                )?;
                Data::Gpu(out.into())
            }
            Device::Cpu | Device::CpuF64 => match self.data() {
                Data::F32(x) => Data::F32(Arc::new(cpu::shape::pad(
                    x,
                    self.shape(),
                    axis,
                    start,
                    full,
                ))),
                Data::F64(x) => Data::F64(Arc::new(cpu::shape::pad(
                    x,
                    self.shape(),
                    axis,
                    start,
                    full,
                ))),
                Data::I32(x) => Data::I32(Arc::new(cpu::shape::pad(
                    x,
                    self.shape(),
                    axis,
                    start,
                    full,
                ))),
                Data::Gpu(_) => unreachable!(),
            },
        };
        let out = Tensor::from_parts(out_shape, self.dtype(), self.device().clone(), data);
        let len = self.shape()[axis];
        Ok(record(out, "pad", &[self], move |g, _| {
            Ok(vec![Some(g.narrow(axis as isize, start, len)?)])
        }))
    }

    /// Joins tensors along `axis`; all other dims must match.
    pub fn concat(parts: &[&Tensor], axis: isize) -> Result<Tensor> {
        let Some(first) = parts.first() else {
            return shape_err("concat", "needs at least one tensor");
        };
        same_device("concat", parts)?;
        let a = first.axis("concat", axis)?;
        for t in parts {
            let ok = t.rank() == first.rank()
                && t.dtype() == first.dtype()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(d, (x, y))| d == a || x == y);
            if !ok {
                return shape_err(
                    "concat",
                    format!(
                        "{:?} and {:?} differ outside axis {a}",
                        first.shape(),
                        t.shape()
                    ),
                );
            }
        }
        let mut out_shape = first.shape().to_vec();
        out_shape[a] = parts.iter().map(|t| t.shape()[a]).sum();
        let data = match first.device() {
            Device::Gpu(g) => {
                let out = new_gpu_buffer(g, numel(&out_shape), false)?;
                let out_strides = contiguous_strides(&out_shape);
                let mut offset = 0;
                for t in parts {
                    gpu_copy(
                        g,
                        t.gpu_buffer().unwrap(),
                        &out,
                        t.shape(),
                        &contiguous_strides(t.shape()),
                        0,
                        &out_strides,
                        offset * out_strides[a],
                    )?;
                    offset += t.shape()[a];
                }
                Data::Gpu(out.into())
            }
            _ => match first.data() {
                Data::F32(_) => Data::F32(Arc::new(concat_host(parts, a, |t| match t.data() {
                    Data::F32(v) => v.as_slice(),
                    _ => unreachable!(),
                }))),
                Data::F64(_) => Data::F64(Arc::new(concat_host(parts, a, |t| match t.data() {
                    Data::F64(v) => v.as_slice(),
                    _ => unreachable!(),
                }))),
                Data::I32(_) => Data::I32(Arc::new(concat_host(parts, a, |t| match t.data() {
                    Data::I32(v) => v.as_slice(),
                    _ => unreachable!(),
                }))),
                Data::Gpu(_) => unreachable!(),
            },
        };
        let out = Tensor::from_parts(out_shape, first.dtype(), first.device().clone(), data);
        let lens: Vec<usize> = parts.iter().map(|t| t.shape()[a]).collect();
        Ok(record(out, "concat", parts, move |g, needs| {
            let mut start = 0;
            let mut grads = Vec::with_capacity(lens.len());
            for (&len, &need) in lens.iter().zip(needs) {
                grads.push(need.then(|| g.narrow(a as isize, start, len)).transpose()?);
                start += len;
            }
            Ok(grads)
        }))
    }

    /// Repeats this tensor along size-1 (or missing leading) dims to fill `shape`.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let target = broadcast_shapes("broadcast_to", self.shape(), shape)?;
        if target != shape {
            return shape_err(
                "broadcast_to",
                format!("{:?} does not broadcast to {shape:?}", self.shape()),
            );
        }
        let data = match self.device() {
            Device::Gpu(g) => {
                let out = new_gpu_buffer(g, numel(shape), false)?;
                let in_strides = broadcast_strides(self.shape(), shape);
                gpu_copy(
                    g,
                    self.gpu_buffer().unwrap(),
                    &out,
                    shape,
                    &in_strides,
                    0,
                    &contiguous_strides(shape),
                    0,
                )?;
                Data::Gpu(out.into())
            }
            _ => host_any!(self, |x| cpu::shape::broadcast_to(x, self.shape(), shape)),
        };
        let out = Tensor::from_parts(shape.to_vec(), self.dtype(), self.device().clone(), data);
        let in_shape = self.shape().to_vec();
        Ok(record(out, "broadcast_to", &[self], move |g, _| {
            Ok(vec![Some(g.sum_to_shape(&in_shape)?)])
        }))
    }
}

fn concat_host<'a, T: Copy + Send + Sync + 'a>(
    parts: &'a [&Tensor],
    axis: usize,
    slice: impl Fn(&'a Tensor) -> &'a [T],
) -> Vec<T> {
    let views: Vec<(&[T], &[usize])> = parts.iter().map(|t| (slice(t), t.shape())).collect();
    cpu::shape::concat(&views, axis)
}
