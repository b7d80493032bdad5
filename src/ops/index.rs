//! index_select, gather, index_add and scatter_add along one axis, each the other's backward.

use crate::autograd::record;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::{alloc_f32, host_float, host_float2, same_device, Params};
use crate::shape::split_at_axis;
use crate::tensor::{DType, Data};
use crate::{cpu, Device, Tensor};

/// Runs an index kernel over `n` outputs with buffers in declaration order; every index kernel
/// takes the same [outer, dim, inner, count] parameter block.
fn launch(
    entry: &'static str,
    n: usize,
    sizes: [usize; 4],
    inputs: &[&Tensor],
    out_shape: Vec<usize>,
) -> Result<Tensor> {
    let Device::Gpu(g) = inputs[0].device() else {
        unreachable!()
    };
    let params = sizes.iter().fold(Params::new(), |p, &v| p.usize(v));
    let out = alloc_f32(g, n, entry)?;
    let mut bufs: Vec<_> = inputs.iter().map(|t| t.gpu_buffer().unwrap()).collect();
    bufs.push(&out);
    g.dispatch(
        &Kernel::new("index", entry),
        params.bytes(),
        &bufs,
        grid_1d(n as u32, 256),
    )?;
    Ok(Tensor::from_gpu(
        out_shape,
        DType::F32,
        inputs[0].device(),
        out,
    ))
}

fn host_out(like: &Tensor, shape: Vec<usize>, data: Data) -> Tensor {
    Tensor::from_parts(shape, DType::F32, like.device().clone(), data)
}

/// Checks that `idx` has `x`'s shape except along `axis` (the gather/scatter contract).
fn check_gather_shapes(op: &'static str, x: &Tensor, axis: usize, idx: &Tensor) -> Result<()> {
    let ok = idx.rank() == x.rank()
        && (0..x.rank()).all(|d| d == axis || idx.shape()[d] == x.shape()[d]);
    if !ok {
        return shape_err(
            op,
            format!(
                "index shape {:?} must match {:?} outside axis {axis}",
                idx.shape(),
                x.shape()
            ),
        );
    }
    Ok(())
}

impl Tensor {
    /// Rows `idx[j]` along `axis`: out has `idx.len()` entries there. `idx` is a 1-D I32 tensor.
    pub fn index_select(&self, axis: isize, idx: &Tensor) -> Result<Tensor> {
        let a = self.axis("index_select", axis)?;
        same_device("index_select", &[self, idx])?;
        idx.expect_dtype("index_select", DType::I32)?;
        self.expect_dtype("index_select", DType::F32)?;
        if idx.rank() != 1 {
            return shape_err(
                "index_select",
                format!("index must be 1-D, got {:?}", idx.shape()),
            );
        }
        let (outer, dim, inner) = split_at_axis(self.shape(), a);
        let count = idx.numel();
        let mut out_shape = self.shape().to_vec();
        out_shape[a] = count;
        let out = match self.device() {
            Device::Gpu(_) => launch(
                "index_select",
                outer * count * inner,
                [outer, dim, inner, count],
                &[self, idx],
                out_shape,
            )?,
            _ => {
                let ix = idx.host_i32().unwrap();
                host_out(
                    self,
                    out_shape,
                    host_float!(self, |x| cpu::index::index_select(x, outer, dim, inner, ix)),
                )
            }
        };
        let (idx, in_shape) = (idx.clone(), self.shape().to_vec());
        Ok(record(out, "index_select", &[self], move |g, _| {
            Ok(vec![Some(
                Tensor::zeros(&in_shape, g.device())?.index_add(a as isize, &idx, g)?,
            )])
        }))
    }

    /// `self` plus `src` rows added at rows `idx[j]` along `axis` (repeated indices accumulate).
    pub fn index_add(&self, axis: isize, idx: &Tensor, src: &Tensor) -> Result<Tensor> {
        let a = self.axis("index_add", axis)?;
        same_device("index_add", &[self, idx, src])?;
        idx.expect_dtype("index_add", DType::I32)?;
        let (outer, dim, inner) = split_at_axis(self.shape(), a);
        let count = idx.numel();
        let mut want = self.shape().to_vec();
        want[a] = count;
        if idx.rank() != 1 || src.shape() != want.as_slice() {
            return shape_err(
                "index_add",
                format!(
                    "src {:?} must be {want:?} for a 1-D index of {count}",
                    src.shape()
                ),
            );
        }
        let out = match self.device() {
            Device::Gpu(_) => launch(
                "index_add",
                self.numel(),
                [outer, dim, inner, count],
                &[self, idx, src],
                self.shape().to_vec(),
            )?,
            _ => {
                let ix = idx.host_i32().unwrap();
                let data = host_float2!(self, src, |b, s| cpu::index::index_add(
                    b, outer, dim, inner, ix, s
                ));
                host_out(self, self.shape().to_vec(), data)
            }
        };
        let idx = idx.clone();
        Ok(record(out, "index_add", &[self, src], move |g, needs| {
            Ok(vec![
                Some(g.clone()),
                needs[1]
                    .then(|| g.index_select(a as isize, &idx))
                    .transpose()?,
            ])
        }))
    }

    /// torch.gather: `out[.., j, ..] = self[.., idx[.., j, ..], ..]` along `axis`.
    pub fn gather(&self, axis: isize, idx: &Tensor) -> Result<Tensor> {
        let a = self.axis("gather", axis)?;
        same_device("gather", &[self, idx])?;
        idx.expect_dtype("gather", DType::I32)?;
        check_gather_shapes("gather", self, a, idx)?;
        let (outer, dim, inner) = split_at_axis(self.shape(), a);
        let count = idx.shape()[a];
        let out = match self.device() {
            Device::Gpu(_) => launch(
                "gather",
                idx.numel(),
                [outer, dim, inner, count],
                &[self, idx],
                idx.shape().to_vec(),
            )?,
            _ => {
                let ix = idx.host_i32().unwrap();
                host_out(
                    self,
                    idx.shape().to_vec(),
                    host_float!(self, |x| cpu::index::gather(
                        x, outer, dim, inner, ix, count
                    )),
                )
            }
        };
        let (idx, in_shape) = (idx.clone(), self.shape().to_vec());
        Ok(record(out, "gather", &[self], move |g, _| {
            Ok(vec![Some(
                Tensor::zeros(&in_shape, g.device())?.scatter_add(a as isize, &idx, g)?,
            )])
        }))
    }

    /// torch.scatter_add: `self` plus `src[.., j, ..]` added at `idx[.., j, ..]` along `axis`.
    pub fn scatter_add(&self, axis: isize, idx: &Tensor, src: &Tensor) -> Result<Tensor> {
        let a = self.axis("scatter_add", axis)?;
        same_device("scatter_add", &[self, idx, src])?;
        idx.expect_dtype("scatter_add", DType::I32)?;
        check_gather_shapes("scatter_add", self, a, idx)?;
        if src.shape() != idx.shape() {
            return shape_err(
                "scatter_add",
                format!("src {:?} must match index {:?}", src.shape(), idx.shape()),
            );
        }
        let (outer, dim, inner) = split_at_axis(self.shape(), a);
        let count = idx.shape()[a];
        let out = match self.device() {
            Device::Gpu(_) => launch(
                "scatter_add",
                self.numel(),
                [outer, dim, inner, count],
                &[self, idx, src],
                self.shape().to_vec(),
            )?,
            _ => {
                let ix = idx.host_i32().unwrap();
                let data = host_float2!(self, src, |b, s| cpu::index::scatter_add(
                    b, outer, dim, inner, ix, s, count
                ));
                host_out(self, self.shape().to_vec(), data)
            }
        };
        let idx = idx.clone();
        Ok(record(out, "scatter_add", &[self, src], move |g, needs| {
            Ok(vec![
                Some(g.clone()),
                needs[1].then(|| g.gather(a as isize, &idx)).transpose()?,
            ])
        }))
    }
}
