//! Softmax and log-softmax over the last axis, with their backward rules.

use crate::autograd::record;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::{alloc_f32, host_float, Params};
use crate::tensor::{DType, Data};
use crate::{cpu, Device, Tensor};

fn softmax_raw(x: &Tensor, log: bool) -> Result<Tensor> {
    x.expect_dtype("softmax", DType::F32)?;
    if x.rank() == 0 {
        return shape_err("softmax", "needs at least one axis");
    }
    let len = *x.shape().last().unwrap();
    let rows = x.numel().checked_div(len).unwrap_or(0);
    let data = match x.device() {
        Device::Gpu(g) => {
            let out = alloc_f32(g, x.numel(), "softmax output")?;
            let params = Params::new().usize(rows).usize(len);
            let kernel = Kernel::new("softmax", "softmax_rows").with("LOG", log as u32);
            g.dispatch(
                &kernel,
                params.bytes(),
                &[x.gpu_buffer().unwrap(), &out],
                grid_1d(rows as u32, 1),
            )?;
            Data::Gpu(out.into())
        }
        _ => host_float!(x, |v| cpu::softmax::softmax(v, len, log)),
    };
    Ok(Tensor::from_parts(
        x.shape().to_vec(),
        DType::F32,
        x.device().clone(),
        data,
    ))
}

impl Tensor {
    /// Softmax over the last axis.
    pub fn softmax(&self) -> Result<Tensor> {
        let out = softmax_raw(self, false)?;
        let y = out.detach();
        Ok(record(out, "softmax", &[self], move |g, _| {
            // dx = y * (g - sum(g * y))
            let dot = g.mul(&y)?.sum(-1, true)?;
            Ok(vec![Some(y.mul(&g.sub(&dot)?)?)])
        }))
    }

    /// Log-softmax over the last axis.
    pub fn log_softmax(&self) -> Result<Tensor> {
        let out = softmax_raw(self, true)?;
        let y = out.detach();
        Ok(record(out, "log_softmax", &[self], move |g, _| {
            // dx = g - softmax * sum(g)
            let total = g.sum(-1, true)?;
            Ok(vec![Some(g.sub(&y.exp()?.mul(&total)?)?)])
        }))
    }
}
