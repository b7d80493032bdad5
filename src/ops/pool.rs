//! Pooling: max pool (argmax indices saved for backward), average pool, global average pool and
//! GeM (generalised mean, learnable exponent p), with their backward rules.

use crate::autograd::record;
pub use crate::cpu::pool::PoolGeom;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::{alloc_f32, host_float, Params};
use crate::tensor::{DType, Data, HostFloat};
use crate::{cpu, Device, Tensor};

fn geometry(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<PoolGeom> {
    x.expect_dtype("pool2d", DType::F32)?;
    if x.rank() != 4 {
        return shape_err("pool2d", format!("needs [N, C, H, W], got {:?}", x.shape()));
    }
    let [n, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    if kernel == 0
        || stride == 0
        || 2 * padding > kernel
        || h + 2 * padding < kernel
        || w + 2 * padding < kernel
    {
        return shape_err(
            "pool2d",
            format!(
                "kernel {kernel}, stride {stride}, padding {padding} do not fit input {:?}",
                x.shape()
            ),
        );
    }
    Ok(PoolGeom {
        planes: n * c,
        h,
        w,
        kernel: (kernel, kernel),
        stride: (stride, stride),
        padding: (padding, padding),
        ho: (h + 2 * padding - kernel) / stride + 1,
        wo: (w + 2 * padding - kernel) / stride + 1,
    })
}

fn params(g: &PoolGeom) -> Params {
    Params::new()
        .usize(g.planes)
        .usize(g.h)
        .usize(g.w)
        .usize(g.kernel.0)
        .usize(g.kernel.1)
        .usize(g.stride.0)
        .usize(g.stride.1)
        .usize(g.padding.0)
        .usize(g.padding.1)
        .usize(g.ho)
        .usize(g.wo)
        .u32(0)
}

fn out_shape(x: &Tensor, g: &PoolGeom) -> Vec<usize> {
    vec![x.shape()[0], x.shape()[1], g.ho, g.wo]
}

/// Dispatches a pool kernel writing fresh outputs of `sizes` elements.
fn launch(
    entry: &'static str,
    g: &PoolGeom,
    inputs: &[&Tensor],
    sizes: &[usize],
    n: usize,
) -> Result<Vec<crate::gpu::GpuBuffer>> {
    let gpu = inputs[0].device().as_gpu().unwrap();
    let outs = sizes
        .iter()
        .map(|&s| alloc_f32(gpu, s, entry))
        .collect::<Result<Vec<_>>>()?;
    let mut bufs: Vec<_> = inputs.iter().map(|t| t.gpu_buffer().unwrap()).collect();
    bufs.extend(outs.iter());
    gpu.dispatch(
        &Kernel::new("pool", entry),
        params(g).bytes(),
        &bufs,
        grid_1d(n as u32, 256),
    )?;
    Ok(outs)
}

impl Tensor {
    /// Max pooling with a square window (floor mode; padding never wins).
    pub fn max_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        let g = geometry(self, kernel, stride, padding)?;
        let shape = out_shape(self, &g);
        let n = g.planes * g.ho * g.wo;
        let dev = self.device();
        let (out, idx) = match dev {
            Device::Gpu(_) => {
                let mut b = launch("max_pool", &g, &[self], &[n, n], n)?;
                let idx = Tensor::from_gpu(shape.clone(), DType::I32, dev, b.pop().unwrap());
                (
                    Tensor::from_gpu(shape.clone(), DType::F32, dev, b.pop().unwrap()),
                    idx,
                )
            }
            _ => {
                let (data, idx) = match self.host_float().unwrap() {
                    // Only the CPU device holds f32 host data: its fast path.
                    HostFloat::F32(v) => {
                        let (o, i) = cpu::fast::pool::max_pool(v, &g);
                        (Data::F32(o.into()), i)
                    }
                    HostFloat::F64(v) => {
                        let (o, i) = cpu::pool::max_pool(v, &g);
                        (Data::F64(o.into()), i)
                    }
                };
                (
                    Tensor::from_parts(shape.clone(), DType::F32, dev.clone(), data),
                    Tensor::from_parts(
                        shape.clone(),
                        DType::I32,
                        dev.clone(),
                        Data::I32(idx.into()),
                    ),
                )
            }
        };
        let in_shape = self.shape().to_vec();
        Ok(record(out, "max_pool2d", &[self], move |grad, _| {
            let dx = match grad.device() {
                Device::Gpu(_) => {
                    let n = g.planes * g.h * g.w;
                    let b = launch("max_pool_bwd", &g, &[grad, &idx], &[n], n)?.remove(0);
                    Tensor::from_gpu(in_shape, DType::F32, grad.device(), b)
                }
                _ => {
                    let i = idx.host_i32().unwrap();
                    let data = host_float!(grad, |v| cpu::pool::max_pool_backward(v, i, &g));
                    Tensor::from_parts(in_shape, DType::F32, grad.device().clone(), data)
                }
            };
            Ok(vec![Some(dx)])
        }))
    }

    /// Average pooling with a square window (padding counts in the divisor, as PyTorch's default).
    pub fn avg_pool2d(&self, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
        let g = geometry(self, kernel, stride, padding)?;
        let shape = out_shape(self, &g);
        let dev = self.device();
        let out = match dev {
            Device::Gpu(_) => {
                let n = g.planes * g.ho * g.wo;
                Tensor::from_gpu(
                    shape,
                    DType::F32,
                    dev,
                    launch("avg_pool", &g, &[self], &[n], n)?.remove(0),
                )
            }
            _ => {
                let data = host_float!(self, |v| cpu::pool::avg_pool(v, &g));
                Tensor::from_parts(shape, DType::F32, dev.clone(), data)
            }
        };
        let in_shape = self.shape().to_vec();
        Ok(record(out, "avg_pool2d", &[self], move |grad, _| {
            let dx = match grad.device() {
                Device::Gpu(_) => {
                    let n = g.planes * g.h * g.w;
                    Tensor::from_gpu(
                        in_shape,
                        DType::F32,
                        grad.device(),
                        launch("avg_pool_bwd", &g, &[grad], &[n], n)?.remove(0),
                    )
                }
                _ => {
                    let data = host_float!(grad, |v| cpu::pool::avg_pool_backward(v, &g));
                    Tensor::from_parts(in_shape, DType::F32, grad.device().clone(), data)
                }
            };
            Ok(vec![Some(dx)])
        }))
    }

    /// Mean over the spatial dims: [N, C, H, W] -> [N, C].
    pub fn global_avg_pool(&self) -> Result<Tensor> {
        if self.rank() != 4 {
            return shape_err(
                "global_avg_pool",
                format!("needs [N, C, H, W], got {:?}", self.shape()),
            );
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        self.reshape(&[n, c, self.shape()[2] * self.shape()[3]])?
            .mean(2, false)
    }

    /// Generalised-mean pooling `(mean(clamp(x, eps)^p))^(1/p)` over H, W: [N, C, H, W] -> [N, C];
    /// `p` is a one-element tensor (learnable).
    pub fn gem_pool(&self, p: &Tensor, eps: f32) -> Result<Tensor> {
        if self.rank() != 4 || p.numel() != 1 {
            return shape_err(
                "gem_pool",
                format!(
                    "needs [N, C, H, W] and a one-element p, got {:?} and {:?}",
                    self.shape(),
                    p.shape()
                ),
            );
        }
        let (n, c) = (self.shape()[0], self.shape()[1]);
        let p4 = p.reshape(&[1, 1, 1])?;
        let pooled = self
            .clamp(eps, f32::MAX)?
            .reshape(&[n, c, self.shape()[2] * self.shape()[3]])?
            .pow(&p4)?
            .mean(2, false)?;
        pooled.pow(&p.reshape(&[1, 1])?.recip()?)
    }
}
