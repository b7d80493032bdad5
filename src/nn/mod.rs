//! Layers with parameters and the re-ID models: Conv2d, BatchNorm (optionally domain-specific),
//! Linear, ResNet-18/34/50, MobileNetV2 and `ReidNet` (backbone + pooling + BNNeck + classifier),
//! with torchvision parameter names; weights in from safetensors or PyTorch checkpoints, out to
//! safetensors (`weights`).
//!
//! A `Param` holds a tensor an optimiser can replace: `get()` returns the current leaf (tracked
//! when trainable), `set()` stores a new value as a fresh leaf. Running statistics are `Param`s of
//! kind `Buffer`. Every module lists its parameters and buffers by their torchvision names.

pub mod extract;
pub mod fit;
mod layers;
pub mod layout;
mod mobilenet;
mod pickle;
pub mod pth;
mod reid;
mod resnet;
pub mod weights;

pub use extract::{
    extract_features, reid_net_from_weights, CheckpointLayout, ExtractError, ExtractOptions,
    ExtractOutput,
};
pub use layers::{BatchNorm, Conv2d, Linear};
pub use mobilenet::MobileNetV2;
pub use reid::{Backbone, Pooling, ReidConfig, ReidNet, ReidOutput};
pub use resnet::{ResNet, ResNetDepth};
pub use weights::{
    load_safetensors, load_weights, read_checkpoint, save_safetensors, Checkpoint,
    ClassifierPolicy, LoadOptions, LoadReport, WeightsError,
};

use std::sync::RwLock;

use crate::{random, Device, Result, Tensor};

/// Whether a named tensor is learned or is state (running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    Parameter,
    Buffer,
}

/// One named tensor of a module.
pub struct Param {
    value: RwLock<Tensor>,
    kind: ParamKind,
    trainable: RwLock<bool>,
}

impl Param {
    /// A learned parameter (tracked).
    pub fn new(value: Tensor) -> Param {
        Param {
            value: RwLock::new(value.detach().with_requires_grad()),
            kind: ParamKind::Parameter,
            trainable: RwLock::new(true),
        }
    }

    /// A buffer (running statistics): never tracked.
    pub fn buffer(value: Tensor) -> Param {
        Param {
            value: RwLock::new(value.detach()),
            kind: ParamKind::Buffer,
            trainable: RwLock::new(false),
        }
    }

    /// The current value: a tracked leaf when trainable.
    pub fn get(&self) -> Tensor {
        self.value.read().unwrap().clone()
    }

    /// The current value (as [`Param::get`]) and whether this Param held its storage alone
    /// before the call (no clone of the value, no tensor sharing its buffer, elsewhere). When it
    /// did, an update may overwrite that storage in place and `set` the result back: the
    /// parameter then keeps its GPU buffer step after step, so the runtime's cached bind groups
    /// keep matching (issue 16). Single-threaded use: a clone taken by another thread between
    /// this call and the update would see the new values.
    pub fn get_for_update(&self) -> (Tensor, bool) {
        let value = self.value.read().unwrap();
        let alone = value.owns_storage_alone();
        (value.clone(), alone)
    }

    /// Stores a new value (an optimiser's update, loaded weights) as a fresh leaf.
    pub fn set(&self, value: Tensor) {
        let v = value.detach();
        *self.value.write().unwrap() = if self.trainable() {
            v.with_requires_grad()
        } else {
            v
        };
    }

    pub fn kind(&self) -> ParamKind {
        self.kind
    }

    pub fn trainable(&self) -> bool {
        *self.trainable.read().unwrap()
    }

    /// Freezes (untracked, skipped by optimisers) or unfreezes a parameter.
    pub fn set_trainable(&self, on: bool) {
        *self.trainable.write().unwrap() = on && self.kind == ParamKind::Parameter;
        let v = self.get();
        self.set(v);
    }

    pub fn shape(&self) -> Vec<usize> {
        self.value.read().unwrap().shape().to_vec()
    }

    /// An independent copy (same values, own storage slot).
    pub fn duplicate(&self) -> Param {
        Param {
            value: RwLock::new(self.get()),
            kind: self.kind,
            trainable: RwLock::new(self.trainable()),
        }
        .refreshed()
    }

    fn refreshed(self) -> Param {
        let v = self.get();
        self.set(v);
        self
    }
}

/// Names of a module's parameters and buffers, torchvision style (`layer4.0.downsample.1.weight`).
pub trait Module {
    /// Calls `f` with each parameter and buffer under `prefix` (empty or ending in '.').
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param));

    /// Calls `f` with every batch-norm layer (to make them domain-specific).
    fn visit_bn_mut(&mut self, f: &mut dyn FnMut(&mut BatchNorm));

    /// Every parameter and buffer with its full name, in a stable order.
    fn named(&self) -> Vec<(String, &Param)> {
        let mut out = Vec::new();
        self.visit("", &mut |name, p| out.push((name, p)));
        out
    }

    /// The trainable parameters' names and current leaves (for an optimiser).
    fn trainable(&self) -> Vec<(String, &Param)> {
        self.named()
            .into_iter()
            .filter(|(_, p)| p.trainable())
            .collect()
    }

    /// Gives every batch-norm layer `domains` sets, each a copy of the current (plain) set.
    fn make_domain_specific(&mut self, domains: usize) {
        self.visit_bn_mut(&mut |bn| bn.make_domain_specific(domains));
    }
}

/// How a forward pass runs: training (batch statistics, running-stat updates, dropout) or
/// evaluation, and which domain each part of the batch belongs to (for domain-specific BN).
#[derive(Clone, Debug, Default)]
pub struct Ctx {
    pub training: bool,
    /// (domain, images) in batch order; empty means the whole batch is domain `default_domain`.
    pub parts: Vec<(usize, usize)>,
    pub default_domain: usize,
    /// Seed for dropout masks in training.
    pub seed: u64,
}

impl Ctx {
    pub fn train() -> Ctx {
        Ctx {
            training: true,
            ..Default::default()
        }
    }
    pub fn eval() -> Ctx {
        Ctx::default()
    }
    /// The whole batch belongs to `domain`.
    pub fn domain(mut self, domain: usize) -> Ctx {
        self.default_domain = domain;
        self.parts.clear();
        self
    }
    /// Consecutive parts of the batch: (domain, images), e.g. [(0, 32), (1, 32)].
    pub fn parts(mut self, parts: &[(usize, usize)]) -> Ctx {
        self.parts = parts.to_vec();
        self
    }
    pub fn seed(mut self, seed: u64) -> Ctx {
        self.seed = seed;
        self
    }
    /// The batch's parts for a batch of `n` images.
    pub(crate) fn parts_for(&self, n: usize) -> Result<Vec<(usize, usize)>> {
        if self.parts.is_empty() {
            return Ok(vec![(self.default_domain, n)]);
        }
        let total: usize = self.parts.iter().map(|p| p.1).sum();
        if total != n {
            return Err(crate::Error::Shape {
                op: "domain-specific batch norm",
                message: format!(
                    "domain parts {:?} cover {total} images but the batch has {n}",
                    self.parts
                ),
            });
        }
        Ok(self.parts.clone())
    }
}

/// Deterministic parameter initialisation: each call draws from its own seed stream.
pub struct Init {
    pub device: Device,
    seed: u64,
    counter: u64,
}

impl Init {
    pub fn new(device: &Device, seed: u64) -> Init {
        Init {
            device: device.clone(),
            seed,
            counter: 0,
        }
    }
    fn next_seed(&mut self) -> u64 {
        self.counter += 1;
        random::bits(self.seed, self.counter)
    }
    pub fn normal(&mut self, shape: &[usize], std: f64) -> Result<Tensor> {
        let s = self.next_seed();
        Tensor::randn(shape, 0.0, std, s, &self.device)
    }
    pub fn uniform(&mut self, shape: &[usize], bound: f64) -> Result<Tensor> {
        let s = self.next_seed();
        Tensor::rand_uniform(shape, -bound, bound, s, &self.device)
    }
    pub fn full(&self, shape: &[usize], v: f32) -> Result<Tensor> {
        Tensor::full(shape, v, &self.device)
    }
}
