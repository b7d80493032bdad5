//! Optimisers, the EMA mean teacher, learning-rate schedules and gradient clipping.
//!
//! Optimisers are functional: `step` takes the current parameter leaves (after `backward()`) and
//! returns the updated leaves, in the same order; the caller stores them back into its model.
//! A tensor without a gradient (frozen, or unused this step) comes back unchanged, and its state
//! does not advance, as in torch.optim.

mod schedule;

pub use schedule::{LrSchedule, Warmup};

use crate::ops::optim::{adam_update, ema_update, sgd_update};
use crate::ops::optim::{AdamHyper, SgdHyper};
use crate::{Error, Result, Tensor};

fn check_len(have: usize, given: usize) -> Result<()> {
    if have != 0 && have != given {
        return Err(Error::Autograd(format!(
            "optimiser was built for {have} parameters but step() got {given}; keep the parameter list fixed"
        )));
    }
    Ok(())
}

/// torch.optim.Adam with L2 weight decay added to the gradient (not AdamW).
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Per parameter: (steps taken, m, v).
    state: Vec<Option<(u64, Tensor, Tensor)>>,
}

impl Adam {
    /// Betas (0.9, 0.999), eps 1e-8: torch's defaults.
    pub fn new(lr: f64, weight_decay: f64) -> Adam {
        Adam {
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            state: Vec::new(),
        }
    }

    /// Forgets moments and step counts (MMT resets the optimiser after each re-clustering).
    pub fn reset_state(&mut self) {
        self.state.clear();
    }

    pub fn step(&mut self, params: &[Tensor]) -> Result<Vec<Tensor>> {
        check_len(self.state.len(), params.len())?;
        self.state.resize_with(params.len(), || None);
        let mut out = Vec::with_capacity(params.len());
        for (p, state) in params.iter().zip(self.state.iter_mut()) {
            let Some(g) = p.grad() else {
                out.push(p.clone());
                continue;
            };
            let (steps, m, v) = match state.take() {
                Some(s) => s,
                None => (
                    0,
                    Tensor::zeros(p.shape(), p.device())?,
                    Tensor::zeros(p.shape(), p.device())?,
                ),
            };
            let hyper = AdamHyper {
                lr: self.lr,
                beta1: self.beta1,
                beta2: self.beta2,
                eps: self.eps,
                weight_decay: self.weight_decay,
                step: steps + 1,
            };
            let (new_p, m, v) = adam_update(&p.detach(), &g, &m, &v, hyper)?;
            *state = Some((steps + 1, m, v));
            out.push(new_p.with_requires_grad());
        }
        Ok(out)
    }
}

/// torch.optim.SGD with momentum, dampening, Nesterov and L2 weight decay.
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    buffers: Vec<Option<Tensor>>,
}

impl Sgd {
    pub fn new(lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> Sgd {
        Sgd {
            lr,
            momentum,
            dampening: 0.0,
            weight_decay,
            nesterov,
            buffers: Vec::new(),
        }
    }

    pub fn reset_state(&mut self) {
        self.buffers.clear();
    }

    pub fn step(&mut self, params: &[Tensor]) -> Result<Vec<Tensor>> {
        check_len(self.buffers.len(), params.len())?;
        self.buffers.resize_with(params.len(), || None);
        let mut out = Vec::with_capacity(params.len());
        for (p, buf) in params.iter().zip(self.buffers.iter_mut()) {
            let Some(g) = p.grad() else {
                out.push(p.clone());
                continue;
            };
            let first = buf.is_none();
            let old = match buf.take() {
                Some(b) => b,
                None => Tensor::zeros(p.shape(), p.device())?,
            };
            let hyper = SgdHyper {
                lr: self.lr,
                momentum: self.momentum,
                dampening: self.dampening,
                weight_decay: self.weight_decay,
                nesterov: self.nesterov,
                first,
            };
            let (new_p, new_buf) = sgd_update(&p.detach(), &g, &old, hyper)?;
            *buf = Some(new_buf);
            out.push(new_p.with_requires_grad());
        }
        Ok(out)
    }
}

/// The mean teacher of MMT: `E <- a_t E + (1 - a_t) theta`, `a_t = min(1 - 1/(t+1), alpha)`.
pub struct MeanTeacher {
    pub alpha: f64,
}

impl MeanTeacher {
    /// The smoothing used at global step `t` (0-based).
    pub fn alpha_at(&self, t: u64) -> f64 {
        (1.0 - 1.0 / (t as f64 + 1.0)).min(self.alpha)
    }

    /// Updated mean-net parameters (untracked), one fused kernel per tensor.
    pub fn update(&self, mean: &[Tensor], student: &[Tensor], t: u64) -> Result<Vec<Tensor>> {
        check_len(mean.len(), student.len())?;
        let a = self.alpha_at(t);
        mean.iter()
            .zip(student)
            .map(|(e, s)| ema_update(&e.detach(), &s.detach(), a))
            .collect()
    }
}

/// Scales gradients so their joint L2 norm is at most `max_norm` (torch.nn.utils.clip_grad_norm_):
/// coefficient `min(1, max_norm / (norm + 1e-6))`. Returns the clipped gradients and the norm
/// before clipping, both left on the device (no sync).
pub fn clip_grad_norm(grads: &[Tensor], max_norm: f32) -> Result<(Vec<Tensor>, Tensor)> {
    let Some(first) = grads.first() else {
        return Err(Error::Autograd(
            "clip_grad_norm needs at least one gradient".into(),
        ));
    };
    let mut total = Tensor::zeros(&[], first.device())?;
    for g in grads {
        total = total.add(&g.square()?.sum_all()?)?;
    }
    let norm = total.sqrt()?;
    let coef = norm
        .add_scalar(1e-6)?
        .recip()?
        .mul_scalar(max_norm)?
        .clamp(0.0, 1.0)?;
    let clipped = grads.iter().map(|g| g.mul(&coef)).collect::<Result<_>>()?;
    Ok((clipped, norm))
}
