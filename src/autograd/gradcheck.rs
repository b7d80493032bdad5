//! Numeric gradient checks and device comparisons, used by the test suites.
//!
//! An op under test is a function of float tensors (any integer operands are captured by the
//! closure, built per device). It is reduced to a scalar loss `sum(f(x) * w)` with fixed random
//! weights `w`, so every output element carries a distinct gradient.

use crate::{no_grad, random, Device, Result, Tensor};

/// A function under test: float inputs (on `device`) to one output tensor.
pub type TestFn<'a> = dyn Fn(&[Tensor], &Device) -> Result<Tensor> + 'a;

/// Host values and shape of one input.
#[derive(Clone, Debug)]
pub struct Input {
    pub values: Vec<f64>,
    pub shape: Vec<usize>,
}

impl Input {
    /// Values rounded to f32, so the f32 devices and the f64 reference see identical inputs.
    pub fn new(values: Vec<f64>, shape: &[usize]) -> Input {
        Input {
            values: values.into_iter().map(|v| v as f32 as f64).collect(),
            shape: shape.to_vec(),
        }
    }

    /// Seeded standard-normal values.
    pub fn randn(shape: &[usize], seed: u64) -> Input {
        let n: usize = shape.iter().product();
        Input::new(
            (0..n as u64).map(|i| random::normal(seed, i)).collect(),
            shape,
        )
    }

    /// Seeded uniform values in [low, high).
    pub fn uniform(shape: &[usize], low: f64, high: f64, seed: u64) -> Input {
        let n: usize = shape.iter().product();
        let values = (0..n as u64).map(|i| low + (high - low) * random::uniform(seed, i));
        Input::new(values.collect(), shape)
    }
}

/// Output values and input gradients of `sum(f(x) * w)` on one device.
pub struct Evaluation {
    pub output: Vec<f64>,
    pub output_shape: Vec<usize>,
    pub grads: Vec<Vec<f64>>,
}

fn loss_weights(n: usize) -> Vec<f64> {
    (0..n as u64)
        .map(|i| 0.5 + random::uniform(0x5eed, i))
        .collect()
}

/// Forward and backward of `f` on `device`.
pub fn evaluate(f: &TestFn, inputs: &[Input], device: &Device) -> Result<Evaluation> {
    let leaves: Vec<Tensor> = inputs
        .iter()
        .map(|i| Ok(Tensor::from_f64(&i.values, &i.shape, device)?.with_requires_grad()))
        .collect::<Result<_>>()?;
    let out = f(&leaves, device)?;
    let w = Tensor::from_f64(&loss_weights(out.numel()), out.shape(), device)?;
    out.mul(&w)?.sum_all()?.backward()?;
    let grads = leaves
        .iter()
        .map(|l| match l.grad() {
            Some(g) => g.to_vec_f64(),
            None => Ok(vec![0.0; l.numel()]),
        })
        .collect::<Result<_>>()?;
    Ok(Evaluation {
        output: out.to_vec_f64()?,
        output_shape: out.shape().to_vec(),
        grads,
    })
}

/// Central finite differences of `sum(f(x) * w)` in f64 on the CPU reference device.
pub fn numeric_grads(f: &TestFn, inputs: &[Input], eps: f64) -> Result<Vec<Vec<f64>>> {
    let device = Device::CpuF64;
    let loss = |xs: &[Input]| -> Result<f64> {
        no_grad(|| {
            let ts: Vec<Tensor> = xs
                .iter()
                .map(|i| Tensor::from_f64(&i.values, &i.shape, &device))
                .collect::<Result<_>>()?;
            let out = f(&ts, &device)?;
            let v = out.to_vec_f64()?;
            Ok(v.iter()
                .zip(loss_weights(v.len()))
                .map(|(a, b)| a * b)
                .sum())
        })
    };
    let mut grads = Vec::new();
    for (which, input) in inputs.iter().enumerate() {
        let mut g = vec![0.0; input.values.len()];
        for (e, ge) in g.iter_mut().enumerate() {
            let mut xs = inputs.to_vec();
            xs[which].values[e] = input.values[e] + eps;
            let plus = loss(&xs)?;
            xs[which].values[e] = input.values[e] - eps;
            let minus = loss(&xs)?;
            *ge = (plus - minus) / (2.0 * eps);
        }
        grads.push(g);
    }
    Ok(grads)
}

/// Panics with the worst element unless `|got - want| <= atol + rtol * |want|` everywhere.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], rtol: f64, atol: f64) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs reference {}",
        got.len(),
        want.len()
    );
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let excess = (g - w).abs() - (atol + rtol * w.abs());
        let within = excess <= 0.0; // false for NaN too
        if !within && worst.is_none_or(|(_, e)| excess > e || excess.is_nan()) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        panic!(
            "{what}: element {i} is {} but the reference says {} (rtol {rtol}, atol {atol}; {} elements)",
            got[i],
            want[i],
            got.len()
        );
    }
}

/// The full check for one differentiable op:
/// 1. the f64 CPU reference's backward matches central finite differences;
/// 2. on `device` (the GPU under test), the output and every gradient match the f64 reference.
pub fn check_op(
    name: &str,
    f: &TestFn,
    inputs: &[Input],
    device: &Device,
    rtol: f64,
    atol: f64,
) -> Result<()> {
    let reference = evaluate(f, inputs, &Device::CpuF64)?;
    // eps 1e-4: truncation error ~eps^2 stays near 1e-8, while f64 round-off in a loss summed over
    // hundreds of terms (~1e-12 absolute) would dominate below 1e-6.
    let numeric = numeric_grads(f, inputs, 1e-4)?;
    for (i, (analytic, numeric)) in reference.grads.iter().zip(&numeric).enumerate() {
        assert_close(
            &format!("{name}: f64 reference backward vs finite differences, input {i}"),
            analytic,
            numeric,
            1e-5,
            1e-6,
        );
    }
    let got = evaluate(f, inputs, device)?;
    assert_eq!(
        got.output_shape, reference.output_shape,
        "{name}: output shape on {device}"
    );
    assert_close(
        &format!("{name}: forward on {device}"),
        &got.output,
        &reference.output,
        rtol,
        atol,
    );
    for (i, (g, r)) in got.grads.iter().zip(&reference.grads).enumerate() {
        assert_close(
            &format!("{name}: gradient of input {i} on {device}"),
            g,
            r,
            rtol,
            atol,
        );
    }
    Ok(())
}
