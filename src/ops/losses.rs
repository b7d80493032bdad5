//! Ops the losses need beyond the generic ones (see shaders/losses.wgsl).

use crate::autograd::record;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::{alloc_f32, host_float, same_device, Params};
use crate::tensor::{DType, Data};
use crate::{cpu, Device, Tensor};

impl Tensor {
    /// Per-class mean over the last axis of a [B, N] tensor: out [B, C] with C = offsets.len() - 1.
    /// `offsets`/`members` are the CSR of rows per class, `class_of_row` its inverse and
    /// `inv_count_of_row` 1/|class| per row (see `loss::ClassRows`, which builds all four).
    pub fn segment_mean(
        &self,
        offsets: &Tensor,
        members: &Tensor,
        class_of_row: &Tensor,
        inv_count_of_row: &Tensor,
    ) -> Result<Tensor> {
        same_device(
            "segment_mean",
            &[self, offsets, members, class_of_row, inv_count_of_row],
        )?;
        if self.rank() != 2
            || members.numel() != self.shape()[1]
            || class_of_row.numel() != self.shape()[1]
        {
            return shape_err(
                "segment_mean",
                format!("x {:?} needs one class per column", self.shape()),
            );
        }
        let (batch, rows, classes) = (self.shape()[0], self.shape()[1], offsets.numel() - 1);
        let data = match self.device() {
            Device::Gpu(g) => {
                let out = alloc_f32(g, batch * classes, "segment_mean")?;
                let params = Params::new().usize(batch).usize(rows).usize(classes).u32(0);
                let bufs = [
                    self.gpu_buffer().unwrap(),
                    offsets.gpu_buffer().unwrap(),
                    members.gpu_buffer().unwrap(),
                    &out,
                ];
                g.dispatch(
                    &Kernel::new("losses", "segment_mean"),
                    params.bytes(),
                    &bufs,
                    grid_1d((batch * classes) as u32, 256),
                )?;
                Data::Gpu(out.into())
            }
            _ => {
                let class_of = class_of_row.host_i32().unwrap();
                host_float!(self, |x| cpu::losses::segment_mean(
                    x, batch, rows, class_of, classes
                ))
            }
        };
        let out = Tensor::from_parts(
            vec![batch, classes],
            DType::F32,
            self.device().clone(),
            data,
        );
        let (class_of, inv) = (class_of_row.clone(), inv_count_of_row.clone());
        Ok(record(out, "segment_mean", &[self], move |g, _| {
            // Each row receives its class's gradient divided by the class size.
            Ok(vec![Some(g.index_select(1, &class_of)?.mul(&inv)?)])
        }))
    }

    /// `x / max(||x||, 1e-12)` along `axis` (torch.nn.functional.normalize).
    pub fn l2_normalize(&self, axis: isize) -> Result<Tensor> {
        // Clamping the squared norm (not the norm) keeps the gradient finite for a zero vector.
        let norm = self
            .square()?
            .sum(axis, true)?
            .clamp(1e-24, f32::MAX)?
            .sqrt()?;
        self.div(&norm)
    }
}
