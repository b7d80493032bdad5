//! `ReidNet`: backbone + pooling (average | GeM) + BNNeck (BatchNorm1d, bias frozen at 0) +
//! optional dropout + optional bias-free classifier.
//!
//! Names: the backbone's torchvision names unchanged (so ImageNet weights load as they are),
//! `gem.p`, `feat_bn.*` and `classifier.weight`.

use super::{BatchNorm, Ctx, Init, Linear, MobileNetV2, Module, Param, ResNet, ResNetDepth};
use crate::{Device, Result, Tensor};

pub enum Backbone {
    ResNet(ResNet),
    MobileNetV2(MobileNetV2),
}

impl Backbone {
    /// `resnet18`, `resnet34`, `resnet50` or `mobilenet_v2`.
    pub fn new(init: &mut Init, arch: &str, last_stride: usize) -> Result<Backbone> {
        let depth = match arch {
            "resnet18" => ResNetDepth::R18,
            "resnet34" => ResNetDepth::R34,
            "resnet50" => ResNetDepth::R50,
            "mobilenet_v2" => return Ok(Backbone::MobileNetV2(MobileNetV2::new(init, None)?)),
            other => {
                return Err(crate::Error::Shape {
                    op: "backbone",
                    message: format!(
                    "unknown architecture {other:?} (resnet18, resnet34, resnet50, mobilenet_v2)"
                ),
                })
            }
        };
        Ok(Backbone::ResNet(ResNet::new(init, depth, last_stride)?))
    }

    pub fn out_channels(&self) -> usize {
        match self {
            Backbone::ResNet(r) => r.out_channels,
            Backbone::MobileNetV2(m) => m.out_channels,
        }
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        match self {
            Backbone::ResNet(r) => r.forward(x, ctx),
            Backbone::MobileNetV2(m) => m.forward(x, ctx),
        }
    }

    fn module(&self) -> &dyn Module {
        match self {
            Backbone::ResNet(r) => r,
            Backbone::MobileNetV2(m) => m,
        }
    }
    fn module_mut(&mut self) -> &mut dyn Module {
        match self {
            Backbone::ResNet(r) => r,
            Backbone::MobileNetV2(m) => m,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Avg,
    /// Generalised mean with learnable p (initialised to 3).
    Gem,
}

/// How to build a `ReidNet`.
#[derive(Clone, Debug)]
pub struct ReidConfig {
    /// `resnet18`, `resnet34`, `resnet50` or `mobilenet_v2`.
    pub arch: String,
    /// Stride of ResNet's layer4 (1 for re-ID).
    pub last_stride: usize,
    pub pooling: Pooling,
    /// A BNNeck (BatchNorm1d, bias frozen at 0) after pooling.
    pub neck: bool,
    /// Dropout before the classifier in training.
    pub dropout: f64,
    /// A bias-free classifier over this many classes.
    pub classes: Option<usize>,
    pub seed: u64,
}

impl Default for ReidConfig {
    /// ResNet-50, last stride 1, average pooling, BNNeck, no dropout, no classifier.
    fn default() -> Self {
        ReidConfig {
            arch: "resnet50".into(),
            last_stride: 1,
            pooling: Pooling::Avg,
            neck: true,
            dropout: 0.0,
            classes: None,
            seed: 0,
        }
    }
}

impl ReidConfig {
    pub fn arch(arch: &str) -> ReidConfig {
        ReidConfig {
            arch: arch.into(),
            ..Default::default()
        }
    }
}

pub struct ReidNet {
    /// How the model was built (`classes` follows `set_classifier`).
    config: ReidConfig,
    pub backbone: Backbone,
    pub pooling: Pooling,
    pub gem_p: Option<Param>,
    pub neck: Option<BatchNorm>,
    pub dropout: f64,
    pub classifier: Option<Linear>,
}

/// What a forward pass returns: pooled backbone features, BN-neck features (= pooled without a
/// neck) and classifier logits (when there is a classifier).
pub struct ReidOutput {
    pub pooled: Tensor,
    pub bn: Tensor,
    pub logits: Option<Tensor>,
}

impl ReidNet {
    /// A model on `device` with seeded initialisation.
    pub fn new(device: &Device, cfg: &ReidConfig) -> Result<ReidNet> {
        let ReidConfig {
            arch,
            last_stride,
            pooling,
            neck,
            dropout,
            classes,
            seed,
        } = cfg.clone();
        let config = cfg.clone();
        let arch = arch.as_str();
        let mut init = Init::new(device, seed);
        let backbone = Backbone::new(&mut init, arch, last_stride)?;
        let d = backbone.out_channels();
        let gem_p = match pooling {
            Pooling::Gem => Some(Param::new(init.full(&[1], 3.0)?)),
            Pooling::Avg => None,
        };
        let neck = if neck {
            let bn = BatchNorm::new(&init, d)?;
            bn.freeze_bias();
            Some(bn)
        } else {
            None
        };
        let classifier = classes
            .map(|k| Linear::new_normal(&mut init, d, k, 0.001))
            .transpose()?;
        Ok(ReidNet {
            config,
            backbone,
            pooling,
            gem_p,
            neck,
            dropout,
            classifier,
        })
    }

    pub fn feature_dim(&self) -> usize {
        self.backbone.out_channels()
    }

    /// The settings the model was built with; `classes` is the classifier's current size.
    pub fn config(&self) -> &ReidConfig {
        &self.config
    }

    /// Number of domain-specific BN sets (1 for a plain model).
    pub fn domains(&self) -> usize {
        let names: Vec<String> = self.named().into_iter().map(|(n, _)| n).collect();
        super::CheckpointLayout::of_names(&names).domains
    }

    /// An independent copy with its own storage: same architecture, BN domain sets, classifier
    /// and values (MMT's mean nets; a second net started from the same weights).
    pub fn duplicate(&self) -> Result<ReidNet> {
        let device = self.classifier_or_first_device();
        let mut copy = ReidNet::new(&device, &self.config)?;
        let domains = self.domains();
        if domains > 1 {
            copy.make_domain_specific(domains);
        }
        copy.copy_from(self)?;
        Ok(copy)
    }

    fn classifier_or_first_device(&self) -> Device {
        self.named()
            .first()
            .map(|(_, p)| p.get().device().clone())
            .unwrap_or(Device::Cpu)
    }

    /// Copies every parameter and buffer of `other` into this model by name; the two must have
    /// the same names and shapes (an error names the first difference).
    pub fn copy_from(&self, other: &ReidNet) -> Result<()> {
        let theirs: std::collections::BTreeMap<String, &Param> =
            other.named().into_iter().collect();
        let mine = self.named();
        if mine.len() != theirs.len() {
            return Err(crate::Error::Shape {
                op: "ReidNet::copy_from",
                message: format!(
                    "{} tensors here, {} in the source",
                    mine.len(),
                    theirs.len()
                ),
            });
        }
        for (name, p) in mine {
            let src = theirs.get(&name).ok_or_else(|| crate::Error::Shape {
                op: "ReidNet::copy_from",
                message: format!("the source model has no tensor named {name}"),
            })?;
            if src.shape() != p.shape() {
                return Err(crate::Error::Shape {
                    op: "ReidNet::copy_from",
                    message: format!("{name}: {:?} vs {:?}", src.shape(), p.shape()),
                });
            }
            // Tensors are immutable values: sharing the storage is a copy.
            p.set(src.get().detach());
        }
        Ok(())
    }

    /// Replaces the classifier by a bias-free one with the given rows ([classes, D]); MMT writes
    /// the normalised cluster centroids here every epoch. The old classifier's parameters (and any
    /// optimiser state kept under their names) are gone; an optimiser starts them fresh.
    pub fn set_classifier(&mut self, weight: Tensor) -> Result<()> {
        let d = self.feature_dim();
        if weight.rank() != 2 || weight.shape()[1] != d {
            return Err(crate::Error::Shape {
                op: "ReidNet::set_classifier",
                message: format!("weight {:?} needs shape [classes, {d}]", weight.shape()),
            });
        }
        self.config.classes = Some(weight.shape()[0]);
        self.classifier = Some(Linear {
            weight: Param::new(weight),
            bias: None,
        });
        Ok(())
    }

    /// A fresh classifier over `classes` identities, N(0, 0.001) as MMT/SpCL initialise it.
    pub fn reset_classifier(&mut self, classes: usize, seed: u64) -> Result<()> {
        let device = self.classifier_or_first_device();
        let w = Tensor::randn(&[classes, self.feature_dim()], 0.0, 0.001, seed, &device)?;
        self.set_classifier(w)
    }

    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<ReidOutput> {
        let map = self.backbone.forward(x, ctx)?;
        let pooled = match &self.gem_p {
            Some(p) => map.gem_pool(&p.get(), 1e-6)?,
            None => map.global_avg_pool()?,
        };
        let bn = match &self.neck {
            Some(n) => n.forward(&pooled, ctx)?,
            None => pooled.clone(),
        };
        let logits = match &self.classifier {
            Some(c) => {
                let h = if ctx.training && self.dropout > 0.0 {
                    bn.dropout(self.dropout, ctx.seed)?
                } else {
                    bn.clone()
                };
                Some(c.forward(&h)?)
            }
            None => None,
        };
        Ok(ReidOutput { pooled, bn, logits })
    }

    /// Retrieval features: L2-normalised BN-neck output (pooled features without a neck), in
    /// evaluation mode for `domain`; [B, D].
    pub fn extract(&self, x: &Tensor, domain: usize) -> Result<Tensor> {
        crate::no_grad(|| self.extract_neck(x, domain)?.l2_normalize(1))
    }

    /// The raw BN-neck output (pooled features without a neck), not normalised, in evaluation
    /// mode for `domain`, without a graph; [B, D]. The classifier applied to it gives the
    /// eval-mode logits (no dropout in evaluation).
    pub fn extract_neck(&self, x: &Tensor, domain: usize) -> Result<Tensor> {
        crate::no_grad(|| Ok(self.forward(x, &Ctx::eval().domain(domain))?.bn))
    }
}

impl Module for ReidNet {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        self.backbone.module().visit(prefix, f);
        if let Some(p) = &self.gem_p {
            f(format!("{prefix}gem.p"), p);
        }
        if let Some(n) = &self.neck {
            n.visit(&format!("{prefix}feat_bn."), f);
        }
        if let Some(c) = &self.classifier {
            c.visit(&format!("{prefix}classifier."), f);
        }
    }
    fn visit_bn_mut(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        self.backbone.module_mut().visit_bn_mut(f);
        if let Some(n) = &mut self.neck {
            f(n);
        }
    }
}
