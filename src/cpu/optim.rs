//! Reference optimiser updates, written as torch.optim writes them.

use super::Float;

#[derive(Clone, Copy, Debug)]
pub struct AdamHyper {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// 1-based step count.
    pub step: u64,
}

/// One Adam step in place over (param, grad, m, v).
pub fn adam<T: Float>(p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], h: AdamHyper) {
    let c = |x: f64| T::from_f64(x).unwrap();
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2_sqrt = (1.0 - h.beta2.powi(h.step as i32)).sqrt();
    for i in 0..p.len() {
        let gi = g[i] + c(h.weight_decay) * p[i];
        m[i] = c(h.beta1) * m[i] + c(1.0 - h.beta1) * gi;
        v[i] = c(h.beta2) * v[i] + c(1.0 - h.beta2) * gi * gi;
        let denom = v[i].sqrt() / c(bc2_sqrt) + c(h.eps);
        p[i] = p[i] - c(h.lr / bc1) * m[i] / denom;
    }
}

#[derive(Clone, Copy, Debug)]
pub struct SgdHyper {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    /// True on the first step, when torch initialises the buffer to the gradient.
    pub first: bool,
}

/// One SGD step in place over (param, grad, momentum buffer).
pub fn sgd<T: Float>(p: &mut [T], g: &[T], buf: &mut [T], h: SgdHyper) {
    let c = |x: f64| T::from_f64(x).unwrap();
    for i in 0..p.len() {
        let gi = g[i] + c(h.weight_decay) * p[i];
        let step = if h.momentum == 0.0 {
            gi
        } else {
            buf[i] = if h.first {
                gi
            } else {
                c(h.momentum) * buf[i] + c(1.0 - h.dampening) * gi
            };
            if h.nesterov {
                gi + c(h.momentum) * buf[i]
            } else {
                buf[i]
            }
        };
        p[i] = p[i] - c(h.lr) * step;
    }
}

/// `mean <- alpha * mean + (1 - alpha) * student`.
pub fn ema<T: Float>(mean: &[T], student: &[T], alpha: f64) -> Vec<T> {
    let (a, b) = (
        T::from_f64(alpha).unwrap(),
        T::from_f64(1.0 - alpha).unwrap(),
    );
    mean.iter()
        .zip(student)
        .map(|(&m, &s)| a * m + b * s)
        .collect()
}
