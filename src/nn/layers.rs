//! Conv2d, BatchNorm (plain or domain-specific) and Linear.

use super::{Ctx, Init, Module, Param};
use crate::ops::batchnorm::{Activation, RunningStats};
use crate::ops::conv2d::Conv2dSpec;
use crate::{Result, Tensor};

/// A 2-D convolution layer (`weight`, optional `bias`).
pub struct Conv2d {
    pub weight: Param,
    pub bias: Option<Param>,
    pub spec: Conv2dSpec,
}

impl Conv2d {
    /// Kaiming-normal (fan-out, ReLU) initialised weights, as torchvision's ResNet; no bias.
    pub fn new(
        init: &mut Init,
        cin: usize,
        cout: usize,
        k: usize,
        spec: Conv2dSpec,
    ) -> Result<Conv2d> {
        let fan_out = cout / spec.groups * k * k;
        let w = init.normal(
            &[cout, cin / spec.groups, k, k],
            (2.0 / fan_out as f64).sqrt(),
        )?;
        Ok(Conv2d {
            weight: Param::new(w),
            bias: None,
            spec,
        })
    }

    /// What this layer needs of one GPU storage binding on an input of shape `x` [N, C, H, W]
    /// (`ops::conv2d::binding_needs`). Errors: `x` does not fit the weight.
    pub fn binding_needs(&self, x: &[usize]) -> Result<crate::ops::conv2d::BindingNeeds> {
        crate::ops::conv2d::binding_needs(x, &self.weight.shape(), &self.spec)
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = self.bias.as_ref().map(Param::get);
        x.conv2d(&self.weight.get(), b.as_ref(), self.spec)
    }
}

impl Module for Conv2d {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        f(format!("{prefix}weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(format!("{prefix}bias"), b);
        }
    }
    fn visit_bn_mut(&mut self, _: &mut dyn FnMut(&mut BatchNorm)) {}
}

/// One domain's affine parameters and running statistics.
pub struct BnSet {
    pub weight: Param,
    pub bias: Param,
    pub running_mean: Param,
    pub running_var: Param,
}

impl BnSet {
    fn duplicate(&self) -> BnSet {
        BnSet {
            weight: self.weight.duplicate(),
            bias: self.bias.duplicate(),
            running_mean: self.running_mean.duplicate(),
            running_var: self.running_var.duplicate(),
        }
    }
}

/// Batch norm over [N, C, H, W] or [N, C], with one or more domain-specific sets (DSBN).
///
/// Training normalises each part of the batch with its own batch statistics and updates only
/// its domain's running mean and unbiased running variance (momentum 0.1, as PyTorch).
/// Names: `weight`, `bias`, `running_mean`, `running_var` with one set; with D > 1 sets,
/// `dsbn.{d}.weight` etc.
pub struct BatchNorm {
    pub sets: Vec<BnSet>,
    pub eps: f64,
    pub momentum: f64,
}

impl BatchNorm {
    /// weight 1, bias 0, running mean 0, running var 1.
    pub fn new(init: &Init, channels: usize) -> Result<BatchNorm> {
        Ok(BatchNorm {
            sets: vec![BnSet {
                weight: Param::new(init.full(&[channels], 1.0)?),
                bias: Param::new(init.full(&[channels], 0.0)?),
                running_mean: Param::buffer(init.full(&[channels], 0.0)?),
                running_var: Param::buffer(init.full(&[channels], 1.0)?),
            }],
            eps: 1e-5,
            momentum: 0.1,
        })
    }

    pub fn channels(&self) -> usize {
        self.sets[0].weight.shape()[0]
    }

    /// Freezes every set's bias (the BNNeck keeps its bias at zero).
    pub fn freeze_bias(&self) {
        for s in &self.sets {
            s.bias.set_trainable(false);
        }
    }

    /// `domains` sets, each a copy of the first (SpCL's conversion of a plain model to DSBN).
    pub fn make_domain_specific(&mut self, domains: usize) {
        let first = &self.sets[0];
        let copies: Vec<BnSet> = (1..domains.max(1)).map(|_| first.duplicate()).collect();
        self.sets.truncate(1);
        self.sets.extend(copies);
    }

    fn set(&self, domain: usize) -> Result<&BnSet> {
        self.sets.get(domain).ok_or_else(|| crate::Error::Shape {
            op: "batch norm",
            message: format!(
                "domain {domain} asked of a layer with {} domain sets",
                self.sets.len()
            ),
        })
    }

    /// The normalised x [N, C, H, W] or [N, C], shaped like x (training: batch statistics per
    /// part of the batch, running statistics updated; evaluation: running statistics).
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        self.forward_act(x, ctx, Activation::None)
    }

    /// [`BatchNorm::forward`] followed by `act` in the same pass (torch.nn.BatchNorm2d then
    /// torch.nn.ReLU / ReLU6: `act(bn(x))`, see `Tensor::batch_norm_train_running` /
    /// `Tensor::batch_norm_eval`): one pass over the activation forward and backward instead of
    /// two; bit-identical to `forward(x)?.relu()` on the CPU device. Shaped like x.
    pub fn forward_act(&self, x: &Tensor, ctx: &Ctx, act: Activation) -> Result<Tensor> {
        let n = x.shape().first().copied().unwrap_or(0);
        let parts = ctx.parts_for(n)?;
        let mut outs = Vec::with_capacity(parts.len());
        let mut start = 0;
        for &(domain, count) in &parts {
            let s = self.set(domain)?;
            let xp = if parts.len() == 1 {
                x.clone()
            } else {
                x.narrow(0, start, count)?
            };
            start += count;
            let y = if ctx.training {
                // The running statistics are updated by the statistics kernel, in place when
                // this layer holds them alone (they then keep their GPU buffers).
                let (rmean, mean_alone) = s.running_mean.get_for_update();
                let (rvar, var_alone) = s.running_var.get_for_update();
                let out = xp.batch_norm_train_running(
                    &s.weight.get(),
                    &s.bias.get(),
                    self.eps,
                    act,
                    RunningStats {
                        mean: &rmean,
                        var: &rvar,
                        momentum: self.momentum,
                        donated: mean_alone && var_alone,
                    },
                )?;
                drop((rmean, rvar));
                s.running_mean.set(out.running_mean);
                s.running_var.set(out.running_var);
                out.y
            } else {
                xp.batch_norm_eval(
                    &s.weight.get(),
                    &s.bias.get(),
                    &s.running_mean.get(),
                    &s.running_var.get(),
                    self.eps,
                    act,
                )?
            };
            outs.push(y);
        }
        if outs.len() == 1 {
            Ok(outs.pop().unwrap())
        } else {
            Tensor::concat(&outs.iter().collect::<Vec<_>>(), 0)
        }
    }
}

impl Module for BatchNorm {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        for (d, s) in self.sets.iter().enumerate() {
            let p = if self.sets.len() == 1 {
                prefix.to_string()
            } else {
                format!("{prefix}dsbn.{d}.")
            };
            f(format!("{p}weight"), &s.weight);
            f(format!("{p}bias"), &s.bias);
            f(format!("{p}running_mean"), &s.running_mean);
            f(format!("{p}running_var"), &s.running_var);
        }
    }
    fn visit_bn_mut(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        f(self)
    }
}

/// A fully connected layer: `x W^T + b`.
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
}

impl Linear {
    /// PyTorch's default init: U(-1/sqrt(in), 1/sqrt(in)) for weight and bias.
    pub fn new(init: &mut Init, cin: usize, cout: usize, bias: bool) -> Result<Linear> {
        let bound = 1.0 / (cin.max(1) as f64).sqrt();
        Ok(Linear {
            weight: Param::new(init.uniform(&[cout, cin], bound)?),
            bias: if bias {
                Some(Param::new(init.uniform(&[cout], bound)?))
            } else {
                None
            },
        })
    }

    /// Weights N(0, std), no bias (the re-ID classifier, as MMT/SpCL initialise it).
    pub fn new_normal(init: &mut Init, cin: usize, cout: usize, std: f64) -> Result<Linear> {
        Ok(Linear {
            weight: Param::new(init.normal(&[cout, cin], std)?),
            bias: None,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let b = self.bias.as_ref().map(Param::get);
        x.linear(&self.weight.get(), b.as_ref())
    }
}

impl Module for Linear {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        f(format!("{prefix}weight"), &self.weight);
        if let Some(b) = &self.bias {
            f(format!("{prefix}bias"), b);
        }
    }
    fn visit_bn_mut(&mut self, _: &mut dyn FnMut(&mut BatchNorm)) {}
}
