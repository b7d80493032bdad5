//! Batched matmul with either operand transposed, and its backward rule.

use crate::autograd::record;
use crate::cpu::matmul::MatmulDims;
use crate::error::{shape_err, Result};
use crate::gpu::{Gpu, Kernel};
use crate::ops::{alloc_f32, host_float2, same_device, Params};
use crate::tensor::{DType, Data};
use crate::{cpu, Device, Tensor};

/// Which matmul kernel runs on a GPU device.
///
/// `Auto` picks by adapter type: on CPU adapters (lavapipe) `Reg`, on real GPUs `Tiled`. The
/// environment variable `UNREID_MATMUL=reg|tiled` overrides the pick for the whole process, and
/// [`with_matmul_kernel`] for one thread (the tests use it to run both kernels on lavapipe).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatmulKernel {
    Auto,
    /// Register blocks, no workgroup memory or barriers (CPU adapters): `matmul_sg`
    /// (shaders/matmul_subgroup.wgsl) where the adapter has subgroups of >= 8 lanes and the shape
    /// suits its vec4 loads, else `matmul_reg`.
    Reg,
    /// Workgroup-memory tiles with barriers (`matmul_tiled`), for discrete and integrated GPUs.
    Tiled,
}

thread_local! {
    static FORCED: std::cell::Cell<MatmulKernel> = const { std::cell::Cell::new(MatmulKernel::Auto) };
}

/// Runs `f` with every matmul on this thread (forward and backward) using `kernel`.
pub fn with_matmul_kernel<R>(kernel: MatmulKernel, f: impl FnOnce() -> R) -> R {
    let before = FORCED.with(|k| k.replace(kernel));
    struct Restore(MatmulKernel);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.with(|k| k.set(self.0));
        }
    }
    let _restore = Restore(before);
    f()
}

fn kernel_family(gpu: &Gpu) -> MatmulKernel {
    match FORCED.with(|k| k.get()) {
        MatmulKernel::Auto => {}
        forced => return forced,
    }
    match std::env::var("UNREID_MATMUL").ok().as_deref() {
        Some("reg") => MatmulKernel::Reg,
        Some("tiled") => MatmulKernel::Tiled,
        _ if gpu.summary().is_cpu() => MatmulKernel::Reg,
        _ => MatmulKernel::Tiled,
    }
}

/// Rows of C per `matmul_sg` workgroup / 8 (its ROW_GROUPS). 6 measured best at 1024 on lavapipe
/// (4: -10%, 8: -5%, 2: -35%); each row group is 8 vec4 accumulators per lane.
const SG_ROW_GROUPS: usize = 6;
/// `matmul_reg` covers a 32x32 tile of C per workgroup.
const REG_TILE: usize = 32;
/// `matmul_tiled` tile (rows, columns, depth) and rows per invocation; see shaders/matmul.wgsl.
const TILED: (usize, usize, usize, usize) = (64, 64, 16, 4);

/// The kernel entry point, its pipeline constants and workgroup grid for one product.
fn plan(gpu: &Gpu, d: &MatmulDims) -> (Kernel, [u32; 3]) {
    let batch = d.batch as u32;
    let trans = |k: Kernel| {
        k.with("TRANS_A", d.trans_a as u32)
            .with("TRANS_B", d.trans_b as u32)
    };
    match kernel_family(gpu) {
        MatmulKernel::Tiled => {
            let (tm, tn, tk, rows) = TILED;
            let kernel = trans(Kernel::new("matmul", "matmul_tiled"))
                .with("TILE_M", tm as u32)
                .with("TILE_N", tn as u32)
                .with("TILE_K", tk as u32)
                .with("ROWS", rows as u32);
            let groups = [d.n.div_ceil(tn) as u32, d.m.div_ceil(tm) as u32, batch];
            (kernel, groups)
        }
        _ if sg_fits(gpu, d) => {
            let kernel = trans(Kernel::new("matmul_subgroup", "matmul_sg"))
                .with("ROW_GROUPS", SG_ROW_GROUPS as u32);
            let groups = [
                d.n.div_ceil(32) as u32,
                d.m.div_ceil(8 * SG_ROW_GROUPS) as u32,
                batch,
            ];
            (kernel, groups)
        }
        _ => {
            let kernel = trans(Kernel::new("matmul", "matmul_reg"));
            let groups = [
                d.n.div_ceil(REG_TILE) as u32,
                d.m.div_ceil(REG_TILE) as u32,
                batch,
            ];
            (kernel, groups)
        }
    }
}

/// Whether `matmul_sg` can run this product: subgroups of >= 8 lanes, and every vec4 it loads is
/// whole and aligned (K % 4 == 0; N % 4 == 0 unless B is transposed; M % 4 == 0 if A is).
fn sg_fits(gpu: &Gpu, d: &MatmulDims) -> bool {
    gpu.subgroup_min_size().is_some_and(|s| s >= 8)
        && d.k > 0
        && d.k % 4 == 0
        && (d.trans_b || d.n % 4 == 0)
        && (!d.trans_a || d.m % 4 == 0)
}

/// The entry point a product of these sizes runs on `gpu` under the current kernel choice.
pub fn matmul_entry(gpu: &Gpu, d: &MatmulDims) -> &'static str {
    plan(gpu, d).0.entry
}

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
            let (kernel, groups) = plan(g, &d);
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
