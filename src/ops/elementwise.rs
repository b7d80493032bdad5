//! Elementwise ops: unary maps, broadcasting binary ops, comparisons and `where_select`.

use crate::autograd::record;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::{alloc_f32, host_float, host_float2, host_float3, same_device, Params};
use crate::shape::{broadcast_shapes, broadcast_strides, collapse};
use crate::tensor::{DType, Data};
use crate::{cpu, Device, Tensor};

pub use crate::cpu::elementwise::{Activation, BinaryOp, UnaryOp};

/// The raw unary kernel, without autograd.
fn unary_raw(op: UnaryOp, x: &Tensor, alpha: f32, beta: f32) -> Result<Tensor> {
    x.expect_dtype("elementwise", DType::F32)?;
    let n = x.numel();
    let data = match x.device() {
        Device::Gpu(g) => {
            let out = alloc_f32(g, n, "unary op output")?;
            let params = Params::new().usize(n).f32(alpha).f32(beta).u32(0);
            let kernel = Kernel::new("elementwise", "unary").with("OP", op as u32);
            g.dispatch(
                &kernel,
                params.bytes(),
                &[x.gpu_buffer().unwrap(), &out],
                grid_1d(n as u32, 256),
            )?;
            Data::Gpu(out.into())
        }
        _ => host_float!(x, |v| {
            let a = num_traits::cast(alpha).unwrap();
            let b = num_traits::cast(beta).unwrap();
            cpu::elementwise::unary(op, v, a, b)
        }),
    };
    Ok(Tensor::from_parts(
        x.shape().to_vec(),
        DType::F32,
        x.device().clone(),
        data,
    ))
}

/// Launches a broadcasting kernel over `operands` (their strides into `out_shape`).
fn launch_broadcast(
    entry: &'static str,
    op: u32,
    operands: &[&Tensor],
    out_shape: &[usize],
) -> Result<Data> {
    let Device::Gpu(g) = operands[0].device() else {
        unreachable!()
    };
    let n: usize = out_shape.iter().product();
    let strides: Vec<Vec<usize>> = operands
        .iter()
        .map(|t| broadcast_strides(t.shape(), out_shape))
        .collect();
    let (shape, strides) = collapse(out_shape, &strides);
    if shape.len() > 8 {
        return shape_err(
            "broadcast",
            format!("{out_shape:?} has more than 8 non-mergeable dims"),
        );
    }
    let same = entry == "binary"
        && strides
            .iter()
            .all(|s| s.len() <= 1 && s.first().is_none_or(|&x| x == 1));
    let mut params = Params::new()
        .usize(n)
        .usize(shape.len())
        .u32(0)
        .u32(0)
        .dims8(&shape);
    for i in 0..3 {
        params = params.dims8(strides.get(i).map_or(&[][..], |s| &s[..]));
    }
    let out = alloc_f32(g, n, "broadcast op output")?;
    let mut bindings: Vec<&crate::gpu::GpuBuffer> =
        operands.iter().map(|t| t.gpu_buffer().unwrap()).collect();
    bindings.push(&out);
    let kernel =
        Kernel::new("elementwise", if same { "binary_same" } else { entry }).with("OP", op);
    g.dispatch(&kernel, params.bytes(), &bindings, grid_1d(n as u32, 256))?;
    Ok(Data::Gpu(out.into()))
}

/// The raw binary kernel, without autograd.
fn binary_raw(op: BinaryOp, a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let name = op.name();
    same_device(name, &[a, b])?;
    a.expect_dtype(name, DType::F32)?;
    b.expect_dtype(name, DType::F32)?;
    let out_shape = broadcast_shapes(name, a.shape(), b.shape())?;
    let data = match a.device() {
        Device::Gpu(_) => launch_broadcast("binary", op as u32, &[a, b], &out_shape)?,
        _ => host_float2!(a, b, |x, y| cpu::elementwise::binary(
            op,
            x,
            a.shape(),
            y,
            b.shape(),
            &out_shape
        )),
    };
    Ok(Tensor::from_parts(
        out_shape,
        DType::F32,
        a.device().clone(),
        data,
    ))
}

/// ReLU (ReLU6) backward: `g` where `0 < x` (`< 6`), else 0, in one pass on every device
/// (`elementwise:relu_backward` on the GPU). `g` and `x` have one shape (the op's output's).
fn relu_grad(g: &Tensor, x: &Tensor, act: Activation) -> Result<Tensor> {
    let relu6 = act == Activation::Relu6;
    if let Device::Gpu(gpu) = g.device() {
        let n = g.numel();
        let out = alloc_f32(gpu, n, "relu backward")?;
        gpu.dispatch(
            &Kernel::new("elementwise", "relu_backward").with("OP", relu6 as u32),
            Params::new().usize(n).bytes(),
            &[g.gpu_buffer().unwrap(), x.gpu_buffer().unwrap(), &out],
            grid_1d(n as u32, 256),
        )?;
        return Ok(Tensor::from_gpu(
            g.shape().to_vec(),
            DType::F32,
            g.device(),
            out,
        ));
    }
    let data = host_float2!(g, x, |gv, xv| cpu::elementwise::activation_backward(
        act, gv, xv
    ));
    Ok(Tensor::from_parts(
        g.shape().to_vec(),
        DType::F32,
        g.device().clone(),
        data,
    ))
}

impl Tensor {
    fn unary(&self, op: UnaryOp, alpha: f32, beta: f32) -> Result<Tensor> {
        let out = unary_raw(op, self, alpha, beta)?;
        let (x, y) = (self.clone(), out.detach());
        Ok(record(out, "unary", &[self], move |g, _| {
            let dx = match op {
                UnaryOp::Neg => g.neg()?,
                UnaryOp::Exp => g.mul(&y)?,
                UnaryOp::Log => g.div(&x)?,
                UnaryOp::Sqrt => g.div(&y)?.mul_scalar(0.5)?,
                UnaryOp::Abs => g.mul(&x.sign()?)?,
                UnaryOp::Relu => relu_grad(g, &x, Activation::Relu)?,
                UnaryOp::Relu6 => relu_grad(g, &x, Activation::Relu6)?,
                UnaryOp::Sigmoid => g.mul(&y)?.mul(&y.neg()?.add_scalar(1.0)?)?,
                // Gradient passes where alpha <= x <= beta (inclusive, as torch.clamp).
                UnaryOp::Clamp => g.mul(
                    &x.lt_scalar(alpha)?
                        .add(&x.gt_scalar(beta)?)?
                        .neg()?
                        .add_scalar(1.0)?,
                )?,
                UnaryOp::PowScalar => g.mul(&x.powf(alpha - 1.0)?)?.mul_scalar(alpha)?,
                UnaryOp::AddScalar => g.clone(),
                UnaryOp::MulScalar => g.mul_scalar(alpha)?,
                UnaryOp::Recip => g.mul(&y.square()?)?.neg()?,
                UnaryOp::Square => g.mul(&x)?.mul_scalar(2.0)?,
                // Piecewise-constant maps have zero gradient almost everywhere.
                UnaryOp::Sign | UnaryOp::GtScalar | UnaryOp::LtScalar => g.mul_scalar(0.0)?,
            };
            Ok(vec![Some(dx)])
        }))
    }

    pub fn neg(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Neg, 0.0, 0.0)
    }
    pub fn exp(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Exp, 0.0, 0.0)
    }
    pub fn log(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Log, 0.0, 0.0)
    }
    pub fn sqrt(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sqrt, 0.0, 0.0)
    }
    pub fn abs(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Abs, 0.0, 0.0)
    }
    pub fn relu(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu, 0.0, 0.0)
    }
    pub fn relu6(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Relu6, 0.0, 0.0)
    }
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sigmoid, 0.0, 0.0)
    }
    /// Limits values to [min, max].
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        self.unary(UnaryOp::Clamp, min, max)
    }
    /// `x^exponent` (negative bases allowed for integer exponents).
    pub fn powf(&self, exponent: f32) -> Result<Tensor> {
        self.unary(UnaryOp::PowScalar, exponent, 0.0)
    }
    pub fn add_scalar(&self, c: f32) -> Result<Tensor> {
        self.unary(UnaryOp::AddScalar, c, 0.0)
    }
    pub fn mul_scalar(&self, c: f32) -> Result<Tensor> {
        self.unary(UnaryOp::MulScalar, c, 0.0)
    }
    pub fn sign(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Sign, 0.0, 0.0)
    }
    pub fn recip(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Recip, 0.0, 0.0)
    }
    pub fn square(&self) -> Result<Tensor> {
        self.unary(UnaryOp::Square, 0.0, 0.0)
    }
    /// 1.0 where `x > c`, else 0.0 (not differentiable).
    pub fn gt_scalar(&self, c: f32) -> Result<Tensor> {
        unary_raw(UnaryOp::GtScalar, self, c, 0.0)
    }
    /// 1.0 where `x < c`, else 0.0 (not differentiable).
    pub fn lt_scalar(&self, c: f32) -> Result<Tensor> {
        unary_raw(UnaryOp::LtScalar, self, c, 0.0)
    }

    fn binary(&self, op: BinaryOp, other: &Tensor) -> Result<Tensor> {
        let out = binary_raw(op, self, other)?;
        let (a, b, y) = (self.clone(), other.clone(), out.detach());
        Ok(record(out, op.name(), &[self, other], move |g, needs| {
            let (ga, gb) = match op {
                BinaryOp::Add => (Some(g.clone()), Some(g.clone())),
                BinaryOp::Sub => (Some(g.clone()), Some(g.neg()?)),
                BinaryOp::Mul => (
                    needs[0].then(|| g.mul(&b)).transpose()?,
                    needs[1].then(|| g.mul(&a)).transpose()?,
                ),
                BinaryOp::Div => (
                    needs[0].then(|| g.div(&b)).transpose()?,
                    needs[1].then(|| g.mul(&y)?.div(&b)?.neg()).transpose()?,
                ),
                BinaryOp::Pow => (
                    needs[0]
                        .then(|| {
                            g.mul(&b)?
                                .mul(&binary_raw(BinaryOp::Pow, &a, &b.add_scalar(-1.0)?)?)
                        })
                        .transpose()?,
                    needs[1].then(|| g.mul(&y)?.mul(&a.log()?)).transpose()?,
                ),
                // Ties split the gradient evenly, as torch.maximum/minimum do.
                BinaryOp::Maximum | BinaryOp::Minimum => {
                    let win = if op == BinaryOp::Maximum {
                        BinaryOp::Gt
                    } else {
                        BinaryOp::Lt
                    };
                    let tie = binary_raw(BinaryOp::Eq, &a, &b)?.mul_scalar(0.5)?;
                    let wa = binary_raw(win, &a, &b)?.add(&tie)?;
                    let wb = binary_raw(win, &b, &a)?.add(&tie)?;
                    (Some(g.mul(&wa)?), Some(g.mul(&wb)?))
                }
                _ => (None, None),
            };
            Ok(vec![
                ga.map(|t| t.sum_to_shape(a.shape())).transpose()?,
                gb.map(|t| t.sum_to_shape(b.shape())).transpose()?,
            ])
        }))
    }

    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, other)
    }
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, other)
    }
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, other)
    }
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Div, other)
    }
    /// Elementwise `self^other`.
    pub fn pow(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Pow, other)
    }
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Maximum, other)
    }
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Minimum, other)
    }

    // Comparisons give 1.0 / 0.0 masks and carry no gradient.
    pub fn eq(&self, other: &Tensor) -> Result<Tensor> {
        binary_raw(BinaryOp::Eq, self, other)
    }
    pub fn ne(&self, other: &Tensor) -> Result<Tensor> {
        binary_raw(BinaryOp::Ne, self, other)
    }
    pub fn lt(&self, other: &Tensor) -> Result<Tensor> {
        binary_raw(BinaryOp::Lt, self, other)
    }
    pub fn le(&self, other: &Tensor) -> Result<Tensor> {
        binary_raw(BinaryOp::Le, self, other)
    }
    pub fn gt(&self, other: &Tensor) -> Result<Tensor> {
        binary_raw(BinaryOp::Gt, self, other)
    }
    pub fn ge(&self, other: &Tensor) -> Result<Tensor> {
        binary_raw(BinaryOp::Ge, self, other)
    }

    /// `cond != 0 ? a : b`, broadcasting all three; differentiable in `a` and `b`.
    pub fn where_select(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        same_device("where_select", &[cond, a, b])?;
        for t in [cond, a, b] {
            t.expect_dtype("where_select", DType::F32)?;
        }
        let ab = broadcast_shapes("where_select", a.shape(), b.shape())?;
        let out_shape = broadcast_shapes("where_select", cond.shape(), &ab)?;
        let data = match a.device() {
            Device::Gpu(_) => launch_broadcast("where_select", 0, &[cond, a, b], &out_shape)?,
            _ => host_float3!(cond, a, b, |c, x, y| cpu::elementwise::where_select(
                (c, cond.shape()),
                (x, a.shape()),
                (y, b.shape()),
                &out_shape
            )),
        };
        let out = Tensor::from_parts(out_shape, DType::F32, a.device().clone(), data);
        let (c, sa, sb) = (cond.detach(), a.shape().to_vec(), b.shape().to_vec());
        Ok(record(out, "where_select", &[a, b], move |g, needs| {
            let zero = Tensor::zeros(&[], g.device())?;
            Ok(vec![
                needs[0]
                    .then(|| Tensor::where_select(&c, g, &zero)?.sum_to_shape(&sa))
                    .transpose()?,
                needs[1]
                    .then(|| Tensor::where_select(&c, &zero, g)?.sum_to_shape(&sb))
                    .transpose()?,
            ])
        }))
    }
}
