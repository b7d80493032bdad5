//! Reference elementwise maps and broadcasting binary ops.

use rayon::prelude::*;

use super::shape::Strided;
use super::Float;

/// Unary maps; the discriminant is also the `OP` constant in shaders/elementwise.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Neg = 0,
    Exp = 1,
    Log = 2,
    Sqrt = 3,
    Abs = 4,
    Relu = 5,
    Relu6 = 6,
    Sigmoid = 7,
    Clamp = 8,
    PowScalar = 9,
    AddScalar = 10,
    MulScalar = 11,
    Sign = 12,
    Recip = 13,
    Square = 14,
    GtScalar = 15,
    LtScalar = 16,
}

/// Binary ops; the discriminant is also the `OP` constant in shaders/elementwise.wgsl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add = 0,
    Sub = 1,
    Mul = 2,
    Div = 3,
    Pow = 4,
    Maximum = 5,
    Minimum = 6,
    Eq = 7,
    Ne = 8,
    Lt = 9,
    Le = 10,
    Gt = 11,
    Ge = 12,
}

impl BinaryOp {
    /// The op's name in error messages.
    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Pow => "pow",
            BinaryOp::Maximum => "maximum",
            BinaryOp::Minimum => "minimum",
            BinaryOp::Eq => "eq",
            BinaryOp::Ne => "ne",
            BinaryOp::Lt => "lt",
            BinaryOp::Le => "le",
            BinaryOp::Gt => "gt",
            BinaryOp::Ge => "ge",
        }
    }
}

fn sigmoid<T: Float>(x: T) -> T {
    let one = T::one();
    if x >= T::zero() {
        one / (one + (-x).exp())
    } else {
        let e = x.exp();
        e / (one + e)
    }
}

fn signed_pow<T: Float>(x: T, a: T) -> T {
    // IEEE pow semantics: negative bases only with integer exponents.
    x.powf(a)
}

pub fn unary_scalar<T: Float>(op: UnaryOp, x: T, alpha: T, beta: T) -> T {
    let zero = T::zero();
    let one = T::one();
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Abs => x.abs(),
        UnaryOp::Relu => x.max(zero),
        UnaryOp::Relu6 => x.max(zero).min(T::from_f64(6.0).unwrap()),
        UnaryOp::Sigmoid => sigmoid(x),
        UnaryOp::Clamp => x.max(alpha).min(beta),
        UnaryOp::PowScalar => signed_pow(x, alpha),
        UnaryOp::AddScalar => x + alpha,
        UnaryOp::MulScalar => x * alpha,
        UnaryOp::Sign => {
            if x > zero {
                one
            } else if x < zero {
                -one
            } else {
                zero
            }
        }
        UnaryOp::Recip => one / x,
        UnaryOp::Square => x * x,
        UnaryOp::GtScalar => bool_to(x > alpha),
        UnaryOp::LtScalar => bool_to(x < alpha),
    }
}

fn bool_to<T: Float>(b: bool) -> T {
    if b {
        T::one()
    } else {
        T::zero()
    }
}

/// Values per rayon task of the elementwise maps (long enough to vectorise).
const CHUNK: usize = 4096;

/// `f` over `x`, in chunks.
fn map1<T: Float>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); x.len()];
    out.par_chunks_mut(CHUNK)
        .zip(x.par_chunks(CHUNK))
        .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = f(x)));
    out
}

/// `f` over `a` and `b` (same length), in chunks.
fn map2<T: Float>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::zero(); a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(o, (a, b))| {
            for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                *o = f(a, b);
            }
        });
    out
}

pub fn unary<T: Float>(op: UnaryOp, x: &[T], alpha: T, beta: T) -> Vec<T> {
    // The common maps get a loop with the op fixed at compile time (it vectorises).
    match op {
        UnaryOp::Relu => map1(x, |v| unary_scalar(UnaryOp::Relu, v, alpha, beta)),
        UnaryOp::Relu6 => map1(x, |v| unary_scalar(UnaryOp::Relu6, v, alpha, beta)),
        UnaryOp::MulScalar => map1(x, |v| unary_scalar(UnaryOp::MulScalar, v, alpha, beta)),
        UnaryOp::AddScalar => map1(x, |v| unary_scalar(UnaryOp::AddScalar, v, alpha, beta)),
        _ => map1(x, |v| unary_scalar(op, v, alpha, beta)),
    }
}

/// An activation applied in the epilogue of another op (batch norm's, `Tensor::batch_norm_*`):
/// the identity, ReLU `max(v, 0)` or ReLU6 `min(max(v, 0), 6)` (torch.nn.ReLU / ReLU6). The
/// discriminant is the `ACT` constant in shaders/batchnorm.wgsl.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// No activation: the op's plain output.
    #[default]
    None = 0,
    /// `max(v, 0)`.
    Relu = 1,
    /// `min(max(v, 0), 6)`.
    Relu6 = 2,
}

impl Activation {
    /// The activation of one value: the same arithmetic as [`UnaryOp::Relu`] / [`UnaryOp::Relu6`]
    /// (so a fused op is bit-identical to the op followed by `relu()` / `relu6()`).
    #[inline]
    pub fn apply<T: Float>(self, v: T) -> T {
        match self {
            Activation::None => v,
            Activation::Relu => unary_scalar(UnaryOp::Relu, v, T::zero(), T::zero()),
            Activation::Relu6 => unary_scalar(UnaryOp::Relu6, v, T::zero(), T::zero()),
        }
    }

    /// Whether the gradient passes at `v`, the activation's input or its output (the same set):
    /// ReLU `0 < v`, ReLU6 `0 < v < 6` (zero at the kinks 0 and 6, as torch's ReLU backward from
    /// its output and ReLU6's hardtanh backward from its input); always for `None`.
    #[inline]
    pub fn passes<T: Float>(self, v: T) -> bool {
        match self {
            Activation::None => true,
            Activation::Relu => v > T::zero(),
            Activation::Relu6 => v > T::zero() && v < T::from_f64(6.0).unwrap(),
        }
    }

    /// The gradient `g` through the activation at `v` (its input or output): `g` where
    /// [`Activation::passes`], else 0.
    #[inline]
    pub fn grad<T: Float>(self, g: T, v: T) -> T {
        if self.passes(v) {
            g
        } else {
            T::zero()
        }
    }
}

/// An activation's gradient in one pass (no mask tensor): `g` where `act` passes at `v` (the
/// activation's input or its output, same shape as `g`), else 0.
pub fn activation_backward<T: Float>(act: Activation, g: &[T], v: &[T]) -> Vec<T> {
    // The activation fixed at compile time in each loop (it vectorises).
    match act {
        Activation::None => g.to_vec(),
        Activation::Relu => map2(g, v, |g, v| Activation::Relu.grad(g, v)),
        Activation::Relu6 => map2(g, v, |g, v| Activation::Relu6.grad(g, v)),
    }
}

pub fn binary_scalar<T: Float>(op: BinaryOp, a: T, b: T) -> T {
    match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Pow => signed_pow(a, b),
        BinaryOp::Maximum => a.max(b),
        BinaryOp::Minimum => a.min(b),
        BinaryOp::Eq => bool_to(a == b),
        BinaryOp::Ne => bool_to(a != b),
        BinaryOp::Lt => bool_to(a < b),
        BinaryOp::Le => bool_to(a <= b),
        BinaryOp::Gt => bool_to(a > b),
        BinaryOp::Ge => bool_to(a >= b),
    }
}

pub fn binary<T: Float>(
    op: BinaryOp,
    a: &[T],
    a_shape: &[usize],
    b: &[T],
    b_shape: &[usize],
    out_shape: &[usize],
) -> Vec<T> {
    if a_shape == out_shape && b_shape == out_shape {
        return match op {
            BinaryOp::Add => map2(a, b, |x, y| binary_scalar(BinaryOp::Add, x, y)),
            BinaryOp::Sub => map2(a, b, |x, y| binary_scalar(BinaryOp::Sub, x, y)),
            BinaryOp::Mul => map2(a, b, |x, y| binary_scalar(BinaryOp::Mul, x, y)),
            _ => map2(a, b, |x, y| binary_scalar(op, x, y)),
        };
    }
    let n: usize = out_shape.iter().product();
    let bc = Strided::broadcast(out_shape, [a_shape, b_shape]);
    (0..n)
        .into_par_iter()
        .map(|i| {
            let [oa, ob] = bc.offsets(i);
            binary_scalar(op, a[oa], b[ob])
        })
        .collect()
}

/// `cond != 0 ? a : b`, all three broadcast to `out_shape`.
pub fn where_select<T: Float>(
    cond: (&[T], &[usize]),
    a: (&[T], &[usize]),
    b: (&[T], &[usize]),
    out_shape: &[usize],
) -> Vec<T> {
    let n: usize = out_shape.iter().product();
    let bc = Strided::broadcast(out_shape, [cond.1, a.1, b.1]);
    (0..n)
        .into_par_iter()
        .map(|i| {
            let [oc, oa, ob] = bc.offsets(i);
            if cond.0[oc] != T::zero() {
                a.0[oa]
            } else {
                b.0[ob]
            }
        })
        .collect()
}
