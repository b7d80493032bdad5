//! Optimisers, the EMA mean teacher, learning-rate schedules and gradient clipping.
//!
//! Optimisers address parameters by name (`Optimizer::step` takes `(name, &Param)` pairs and
//! stores each update back into its `Param`); their state is kept by name and saved and restored
//! by name, so several models and changing parameter lists never mix states up.

mod schedule;

pub use schedule::{LrSchedule, Warmup};

use crate::ops::optim::{
    adam_update_donated, adam_update_multi, ema_update_donated, sgd_update_donated, AdamTensor,
};
use std::collections::BTreeMap;

use crate::nn::{Module, Param, ParamKind};
use crate::ops::optim::{AdamHyper, SgdHyper};
use crate::{Device, Error, Result, Tensor};

/// A parameter an optimiser updates, addressed by its unique name (`net1.layer4.0.conv1.weight`).
pub type NamedParam<'a> = (String, &'a Param);

/// What every optimiser does: update named parameters in place from their gradients, with its
/// state (moments, step counts) kept by parameter name, so the parameter list may change between
/// steps (MMT re-creates classifiers each epoch) without any state landing on the wrong tensor.
pub trait Optimizer {
    /// One update of every parameter that has a gradient (after `backward()`); each is stored
    /// back with `Param::set` as a fresh leaf (which also clears its gradient). A parameter
    /// without a gradient (frozen, or unused this step) is left as it is and its state does not
    /// advance, as in torch.optim. A parameter whose shape changed since its state was made
    /// (a resized classifier) starts over with fresh state.
    fn step(&mut self, params: &[NamedParam<'_>]) -> Result<()>;
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    /// Forgets every moment and step count (MMT resets the optimiser after each re-clustering).
    fn reset_state(&mut self);
    /// Drops the state of one parameter (its next step starts fresh).
    fn forget(&mut self, name: &str);
    /// The state as named tensors (`{kind}.{param}`), for checkpoints.
    fn state_tensors(&self) -> Vec<(String, Tensor)>;
    /// Restores state written by `state_tensors`; unknown entries are an error naming them.
    fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()>;
}

fn check_unique(params: &[NamedParam<'_>]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for (name, _) in params {
        if !seen.insert(name.as_str()) {
            return Err(Error::Autograd(format!(
                "optimiser: parameter name {name:?} appears twice (give each module a unique prefix)"
            )));
        }
    }
    Ok(())
}

/// Splits a state key `{kind}.{param}` (kind has no dot).
fn split_state_key(key: &str) -> Result<(&str, &str)> {
    key.split_once('.')
        .ok_or_else(|| Error::Autograd(format!("optimiser state entry {key:?} has no kind prefix")))
}

fn step_count(t: &Tensor, key: &str) -> Result<u64> {
    let v = t.to_vec()?;
    match v.as_slice() {
        [c] if *c >= 0.0 && c.fract() == 0.0 => Ok(*c as u64),
        _ => Err(Error::Autograd(format!(
            "optimiser state {key:?} must be one non-negative whole number, got {v:?}"
        ))),
    }
}

/// Per-parameter Adam state.
struct AdamState {
    steps: u64,
    m: Tensor,
    v: Tensor,
}

/// How [`Adam`] batches its tensors into dispatches on a GPU device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultiTensor {
    /// Multi-tensor dispatches, except with CPU-adapter kernel shapes (`Gpu::cpu_shapes`: on
    /// lavapipe, say), whose SIMD lanes run every slot of `adam_multi`'s per-workgroup switch
    /// (measured: a ResNet-18 b8 step's Adam 686-719 ms in 9 multi-tensor dispatches, 186-204
    /// ms in 62 per-tensor ones).
    Auto,
    /// Always multi-tensor (where the adapter can bind its buffers).
    Always,
    /// One dispatch per tensor.
    Never,
}

/// torch.optim.Adam with L2 weight decay added to the gradient (not AdamW).
pub struct Adam {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Whether a step updates its tensors in a few dispatches (`ops::optim::adam_update_multi`)
    /// or one per tensor; the same results either way.
    pub multi_tensor: MultiTensor,
    state: BTreeMap<String, AdamState>,
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
            multi_tensor: MultiTensor::Auto,
            state: BTreeMap::new(),
        }
    }

    /// Steps taken by the named parameter (0 when it has no state).
    pub fn steps_of(&self, name: &str) -> u64 {
        self.state.get(name).map_or(0, |s| s.steps)
    }
}

impl Optimizer for Adam {
    fn step(&mut self, params: &[NamedParam<'_>]) -> Result<()> {
        check_unique(params)?;
        // Every parameter with a gradient, with its state (taken out, keyed by name).
        struct Update<'p> {
            name: &'p str,
            param: &'p Param,
            p: Tensor,
            alone: bool,
            g: Tensor,
            state: AdamState,
        }
        let mut updates = Vec::new();
        for (name, param) in params {
            let (p, alone) = param.get_for_update();
            let Some(g) = p.grad() else {
                continue;
            };
            let state = match self.state.remove(name) {
                Some(s) if s.m.shape() == p.shape() => s,
                _ => AdamState {
                    steps: 0,
                    m: Tensor::zeros(p.shape(), p.device())?,
                    v: Tensor::zeros(p.shape(), p.device())?,
                },
            };
            updates.push(Update {
                name,
                param,
                p: p.detach(),
                alone,
                g,
                state,
            });
        }
        let hyper = AdamHyper {
            lr: self.lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            step: 0,
        };
        let results = {
            let tensors: Vec<AdamTensor<'_>> = updates
                .iter()
                .map(|u| AdamTensor {
                    p: &u.p,
                    g: &u.g,
                    m: &u.state.m,
                    v: &u.state.v,
                    step: u.state.steps + 1,
                    // In place when nothing else shares the parameter's or the moments' storage.
                    donated: u.alone
                        && u.state.m.owns_storage_alone()
                        && u.state.v.owns_storage_alone(),
                })
                .collect();
            let multi = match self.multi_tensor {
                MultiTensor::Always => true,
                MultiTensor::Never => false,
                MultiTensor::Auto => !matches!(
                    tensors.first().map(|t| t.p.device()),
                    Some(Device::Gpu(g)) if g.cpu_shapes()
                ),
            };
            if multi {
                adam_update_multi(&tensors, hyper)?
            } else {
                tensors
                    .iter()
                    .map(|t| {
                        let h = AdamHyper {
                            step: t.step,
                            ..hyper
                        };
                        adam_update_donated(t.p, t.g, t.m, t.v, h, t.donated)
                    })
                    .collect::<Result<Vec<_>>>()?
            }
        };
        for (u, (new_p, m, v)) in updates.into_iter().zip(results) {
            let steps = u.state.steps + 1;
            drop((u.p, u.g, u.state));
            u.param.set(new_p);
            self.state
                .insert(u.name.to_string(), AdamState { steps, m, v });
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn reset_state(&mut self) {
        self.state.clear();
    }

    fn forget(&mut self, name: &str) {
        self.state.remove(name);
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::new();
        for (name, s) in &self.state {
            out.push((format!("m.{name}"), s.m.clone()));
            out.push((format!("v.{name}"), s.v.clone()));
            // f32 counts are exact up to 2^24 steps.
            let steps = Tensor::full(&[1], s.steps as f32, s.m.device());
            if let Ok(steps) = steps {
                out.push((format!("step.{name}"), steps));
            }
        }
        out
    }

    fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        // Per parameter: (m, v, step count), each found once.
        type Parts = (Option<Tensor>, Option<Tensor>, Option<u64>);
        let mut parts: BTreeMap<&str, Parts> = BTreeMap::new();
        for (key, t) in tensors {
            let (kind, name) = split_state_key(key)?;
            let e = parts.entry(name).or_default();
            match kind {
                "m" => e.0 = Some(t.clone()),
                "v" => e.1 = Some(t.clone()),
                "step" => e.2 = Some(step_count(t, key)?),
                _ => {
                    return Err(Error::Autograd(format!(
                        "Adam state has an unknown entry {key:?}"
                    )))
                }
            }
        }
        let mut state = BTreeMap::new();
        for (name, entry) in parts {
            let (Some(m), Some(v), Some(steps)) = entry else {
                return Err(Error::Autograd(format!(
                    "Adam state of {name:?} lacks one of m, v, step"
                )));
            };
            state.insert(name.to_string(), AdamState { steps, m, v });
        }
        self.state = state;
        Ok(())
    }
}

/// torch.optim.SGD with momentum, dampening, Nesterov and L2 weight decay.
pub struct Sgd {
    pub lr: f64,
    pub momentum: f64,
    pub dampening: f64,
    pub weight_decay: f64,
    pub nesterov: bool,
    buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    pub fn new(lr: f64, momentum: f64, weight_decay: f64, nesterov: bool) -> Sgd {
        Sgd {
            lr,
            momentum,
            dampening: 0.0,
            weight_decay,
            nesterov,
            buffers: BTreeMap::new(),
        }
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, params: &[NamedParam<'_>]) -> Result<()> {
        check_unique(params)?;
        for (name, param) in params {
            let (p, p_alone) = param.get_for_update();
            let Some(g) = p.grad() else {
                continue;
            };
            let (first, old) = match self.buffers.remove(name) {
                Some(b) if b.shape() == p.shape() => (false, b),
                _ => (true, Tensor::zeros(p.shape(), p.device())?),
            };
            let hyper = SgdHyper {
                lr: self.lr,
                momentum: self.momentum,
                dampening: self.dampening,
                weight_decay: self.weight_decay,
                nesterov: self.nesterov,
                first,
            };
            let donated = p_alone && old.owns_storage_alone();
            let (new_p, new_buf) = sgd_update_donated(&p.detach(), &g, &old, hyper, donated)?;
            drop(p);
            param.set(new_p);
            self.buffers.insert(name.clone(), new_buf);
        }
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }

    fn reset_state(&mut self) {
        self.buffers.clear();
    }

    fn forget(&mut self, name: &str) {
        self.buffers.remove(name);
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.buffers
            .iter()
            .map(|(name, b)| (format!("momentum.{name}"), b.clone()))
            .collect()
    }

    fn load_state(&mut self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        let mut buffers = BTreeMap::new();
        for (key, t) in tensors {
            match split_state_key(key)? {
                ("momentum", name) => {
                    buffers.insert(name.to_string(), t.clone());
                }
                _ => {
                    return Err(Error::Autograd(format!(
                        "SGD state has an unknown entry {key:?}"
                    )))
                }
            }
        }
        self.buffers = buffers;
        Ok(())
    }
}

/// The mean teacher of MMT: `E <- a_t E + (1 - a_t) theta`, `a_t = min(1 - 1/(t+1), alpha)`
/// (MMT's `_update_ema_variables`, shared/ALGORITHMS.md section 3).
pub struct MeanTeacher {
    pub alpha: f64,
}

impl MeanTeacher {
    /// The smoothing used at global step `t` (0-based).
    pub fn alpha_at(&self, t: u64) -> f64 {
        (1.0 - 1.0 / (t as f64 + 1.0)).min(self.alpha)
    }

    /// Updates every parameter of `mean` from the parameter of the same name in `student`, one
    /// fused kernel per tensor. Buffers (BN running statistics) are left alone: the mean net runs
    /// in train mode and its statistics follow its own forward passes, as in MMT. The two modules
    /// must have the same parameter names and shapes (an error names the first difference).
    pub fn update(&self, mean: &dyn Module, student: &dyn Module, t: u64) -> Result<()> {
        let a = self.alpha_at(t);
        let students: BTreeMap<String, &Param> = student
            .named()
            .into_iter()
            .filter(|(_, p)| p.kind() == ParamKind::Parameter)
            .collect();
        let means: Vec<(String, &Param)> = mean
            .named()
            .into_iter()
            .filter(|(_, p)| p.kind() == ParamKind::Parameter)
            .collect();
        if means.len() != students.len() {
            return Err(Error::Autograd(format!(
                "mean teacher: the mean net has {} parameters, the student {}",
                means.len(),
                students.len()
            )));
        }
        for (name, e) in &means {
            let s = students.get(name).ok_or_else(|| {
                Error::Autograd(format!(
                    "mean teacher: the student has no parameter named {name:?}"
                ))
            })?;
            if e.shape() != s.shape() {
                return Err(Error::Autograd(format!(
                    "mean teacher: {name} is {:?} in the mean net but {:?} in the student",
                    e.shape(),
                    s.shape()
                )));
            }
            let (mean, alone) = e.get_for_update();
            let updated = ema_update_donated(&mean.detach(), &s.get().detach(), a, alone)?;
            drop(mean);
            e.set(updated);
        }
        Ok(())
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
