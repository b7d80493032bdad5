//! Batched matmul with either operand transposed, and its backward rule.

use crate::autograd::record;
use crate::cpu::matmul::MatmulDims;
use crate::error::{shape_err, Result};
use crate::gpu::Kernel;
use crate::ops::{alloc_f32, host_float2, same_device, Params};
use crate::tensor::{DType, Data};
use crate::{cpu, Device, Tensor};

/// Output rows and columns one workgroup of `matmul_reg` covers.
const TILE: usize = 32;

fn dims(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<(MatmulDims, Vec<usize>)> {
    if a.rank() < 2 || b.rank() < 2 {
        return shape_err(
            "matmul",
            format!("needs matrices, got {:?} and {:?}", a.shape(), b.shape()),
        );
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (a_rows, a_cols) = (a.shape()[ra - 2], a.shape()[ra - 1]);
    let (b_rows, b_cols) = (b.shape()[rb - 2], b.shape()[rb - 1]);
    let (m, k) = if trans_a {
        (a_cols, a_rows)
    } else {
        (a_rows, a_cols)
    };
    let (k2, n) = if trans_b {
        (b_cols, b_rows)
    } else {
        (b_rows, b_cols)
    };
    let (a_batch, b_batch) = (&a.shape()[..ra - 2], &b.shape()[..rb - 2]);
    if k != k2 {
        return shape_err(
            "matmul",
            format!(
                "inner sizes differ: {:?}{} x {:?}{}",
                a.shape(),
                if trans_a { "^T" } else { "" },
                b.shape(),
                if trans_b { "^T" } else { "" }
            ),
        );
    }
    let batch_shape = match (a_batch.is_empty(), b_batch.is_empty()) {
        (_, true) => a_batch.to_vec(),
        (true, false) => b_batch.to_vec(),
        _ if a_batch == b_batch => a_batch.to_vec(),
        _ => {
            return shape_err(
                "matmul",
                format!("batch dims {a_batch:?} and {b_batch:?} differ"),
            )
        }
    };
    let mut out_shape = batch_shape.clone();
    out_shape.extend([m, n]);
    let d = MatmulDims {
        batch: batch_shape.iter().product(),
        m,
        k,
        n,
        trans_a,
        trans_b,
        a_batched: !a_batch.is_empty(),
        b_batched: !b_batch.is_empty(),
    };
    Ok((d, out_shape))
}

fn matmul_raw(a: &Tensor, b: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
    same_device("matmul", &[a, b])?;
    a.expect_dtype("matmul", DType::F32)?;
    b.expect_dtype("matmul", DType::F32)?;
    let (d, out_shape) = dims(a, b, trans_a, trans_b)?;
    let data = match a.device() {
        Device::Gpu(g) => {
            let out = alloc_f32(g, d.batch * d.m * d.n, "matmul output")?;
            let params = Params::new()
                .usize(d.m)
                .usize(d.n)
                .usize(d.k)
                .usize(d.batch)
                .usize(if d.a_batched { d.m * d.k } else { 0 })
                .usize(if d.b_batched { d.k * d.n } else { 0 })
                .usize(d.m * d.n)
                .u32(0);
            let kernel = Kernel::new("matmul", "matmul_reg")
                .with("TRANS_A", trans_a as u32)
                .with("TRANS_B", trans_b as u32);
            let groups = [
                d.n.div_ceil(TILE) as u32,
                d.m.div_ceil(TILE) as u32,
                d.batch as u32,
            ];
            g.dispatch(
                &kernel,
                params.bytes(),
                &[a.gpu_buffer().unwrap(), b.gpu_buffer().unwrap(), &out],
                groups,
            )?;
            Data::Gpu(out.into())
        }
        _ => host_float2!(a, b, |x, y| cpu::matmul::matmul(x, y, d)),
    };
    Ok(Tensor::from_parts(
        out_shape,
        DType::F32,
        a.device().clone(),
        data,
    ))
}

impl Tensor {
    /// Matrix product over the last two dims, batched over the leading ones (equal, or one side 2-D).
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        self.matmul_t(other, false, false)
    }

    /// `op(self) * op(other)` where op transposes the last two dims when asked (no copy is made).
    pub fn matmul_t(&self, other: &Tensor, trans_a: bool, trans_b: bool) -> Result<Tensor> {
        let out = matmul_raw(self, other, trans_a, trans_b)?;
        let (a, b) = (self.clone(), other.clone());
        Ok(record(out, "matmul", &[self, other], move |g, needs| {
            // With C = op(A) op(B): d op(A) = dC op(B)^T and d op(B) = op(A)^T dC.
            let ga = needs[0]
                .then(|| {
                    if trans_a {
                        b.matmul_t(g, trans_b, true)
                    } else {
                        g.matmul_t(&b, false, !trans_b)
                    }
                })
                .transpose()?;
            let gb = needs[1]
                .then(|| {
                    if trans_b {
                        g.matmul_t(&a, true, trans_a)
                    } else {
                        a.matmul_t(g, !trans_a, false)
                    }
                })
                .transpose()?;
            Ok(vec![
                ga.map(|t| t.sum_to_shape(a.shape())).transpose()?,
                gb.map(|t| t.sum_to_shape(b.shape())).transpose()?,
            ])
        }))
    }
}
