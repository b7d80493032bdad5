//! ISE: Implicit Sample Extension for unsupervised re-ID (Zhang et al., CVPR 2022;
//! zhangxinyu-xyz/ISE-ReID `examples/ise_train_usl.py`, `clustercontrast/trainers_support.py`,
//! `clustercontrast/losses/lp_loss.py`), shared/ALGORITHMS.md section 6.
//!
//! Cluster Contrast ([`ClusterContrastCore`]: per-epoch re-extraction, Jaccard-DBSCAN, a fresh
//! cluster memory) plus support samples: for every normalised batch feature `f_i` of cluster `y_i`,
//! `s_i = normalise(f_i + 0.5 lambda_t (c_n - c_y))` with `c_n` the nearest other centroid and
//! `lambda_t = 0.5 lambda_base ln(1 + (e - 1) t / T)` (t the global step, T = epochs x iters).
//! The supports keep their anchor's label, join the contrastive loss (`L_cc([f; s], [y; y])`) and
//! the memory update after the step, and the label-preserving loss (`e = exp(f . s / 0.6)`,
//! hardest positive vs each other identity's hardest negative) is added with weight `lp_weight`.
//! Defaults: the Market-1501 script (hard update m 0.2, eps 0.4, 70 epochs x 400 iterations, step
//! at 30, lp weight 0.1, average pooling); MSMT17's script uses the momentum update ("ori", m 0.1),
//! eps 0.7, 50 epochs, step at 20, lp weight 0.01 (configs/ise_usl_msmt.toml).
//!
//! One support per sample (the reference's `--topk 1`, the only value its scripts use).

use serde::{Deserialize, Serialize};

use super::cluster_contrast::{
    usl_schedule, ClusterContrastCore, ClusterContrastMethod, MemorySettings, StepOutput, StepRule,
    UpdateRule,
};
use super::{EpochPlan, RunConfig, Session, TrainBatch, TrainError};
use crate::cluster::ClusterConfig;
use crate::loss::{ise_lambda, label_preserving, support_samples};
use crate::memory::ClusterMemory;
use crate::Tensor;

/// The `[ise]` section (defaults: `ISE_train_market1501.sh`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IseConfig {
    /// Temperature tau of the cluster-contrast loss (`--temp`).
    pub temperature: f64,
    /// Memory momentum m (`--momentum`: 0.2 Market, 0.1 MSMT17).
    pub momentum: f64,
    /// `hard` (`--sample-type hard`, Market) or `momentum` (`--sample-type ori`, MSMT17).
    pub update: UpdateRule,
    /// Jaccard (k1 30, k2 6), DBSCAN eps 0.4 (Market; 0.7 MSMT17), min_samples 4.
    pub cluster: ClusterConfig,
    /// lambda_base of the support schedule (`--support_base_lambda`).
    pub lambda_base: f64,
    /// Whether the supports join the cluster-contrast loss and the memory update (`--use_support`).
    pub supports_in_contrast: bool,
    /// Weight of the cluster-contrast loss (`--loss_weight`).
    pub contrast_weight: f64,
    /// Weight of the label-preserving loss (`--lp_loss_weight`: 0.1 Market, 0.01 MSMT17).
    pub lp_weight: f64,
    /// Temperature of the label-preserving loss (`--temp_lp_loss`).
    pub lp_temperature: f64,
    /// Cluster camera-centred features (not in ISE's code; see
    /// `cluster_contrast::MemorySettings::camera_centering`).
    pub camera_centering: bool,
}

impl Default for IseConfig {
    fn default() -> Self {
        IseConfig {
            temperature: 0.05,
            momentum: 0.2,
            update: UpdateRule::Hard,
            cluster: ClusterConfig {
                eps: 0.4,
                ..ClusterConfig::default()
            },
            lambda_base: 1.0,
            supports_in_contrast: true,
            contrast_weight: 1.0,
            lp_weight: 0.1,
            lp_temperature: 0.6,
            camera_centering: false,
        }
    }
}

impl IseConfig {
    pub fn settings(&self) -> MemorySettings {
        MemorySettings {
            temperature: self.temperature,
            momentum: self.momentum,
            update: self.update,
            cluster: self.cluster.clone(),
            camera_centering: self.camera_centering,
        }
    }

    fn validate(&self) -> Result<(), TrainError> {
        for (key, v) in [
            ("ise.lambda_base", self.lambda_base),
            ("ise.contrast_weight", self.contrast_weight),
            ("ise.lp_weight", self.lp_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(TrainError::Config(format!("{key} = {v} must be >= 0")));
            }
        }
        if !(self.lp_temperature.is_finite() && self.lp_temperature > 0.0) {
            return Err(TrainError::Config(format!(
                "ise.lp_temperature = {} must be positive",
                self.lp_temperature
            )));
        }
        Ok(())
    }
}

/// ISE's published Market-1501 run: 70 epochs x 400 iterations, step at 30, batch 256 = 16 x 16,
/// BN groups of 64, average pooling (the script sets no `--pooling-type`).
pub fn defaults() -> Result<RunConfig, TrainError> {
    RunConfig::with_section(
        "ise",
        Default::default(),
        usl_schedule(70, 400, 30),
        &IseConfig::default(),
    )
}

/// One ISE step's losses and what updates the memory afterwards.
pub struct IseStep {
    /// `contrast_weight * L_cc` over `[f; s]` (or `f` alone without `supports_in_contrast`).
    pub contrast: Tensor,
    /// `lp_weight * L_lp(f, s)`.
    pub label_preserving: Tensor,
    /// The support samples [B, D] (row i from feature i).
    pub supports: Tensor,
    /// The rows that update the memory after the step and their labels: `[f; s]` with
    /// `[y; y]` (or `f`, `y`).
    pub update_features: Tensor,
    pub update_labels: Vec<i32>,
}

/// The ISE losses of normalised batch features `f` ([B, D], labels `y` = their clusters) against
/// `memory` at `lambda` (`ise_lambda` of the global step).
pub fn ise_step(
    memory: &ClusterMemory,
    f: &Tensor,
    labels: &[i32],
    lambda: f64,
    cfg: &IseConfig,
) -> Result<IseStep, TrainError> {
    let s = support_samples(f, &memory.centroids, labels, lambda as f32)?;
    let (all, all_labels) = if cfg.supports_in_contrast {
        let mut l = labels.to_vec();
        l.extend_from_slice(labels);
        (Tensor::concat(&[f, &s], 0)?, l)
    } else {
        (f.clone(), labels.to_vec())
    };
    let contrast = memory
        .loss(&all, &all_labels)?
        .mul_scalar(cfg.contrast_weight as f32)?;
    let lp = label_preserving(f, &s, labels, cfg.lp_temperature as f32)?
        .mul_scalar(cfg.lp_weight as f32)?;
    Ok(IseStep {
        contrast,
        label_preserving: lp,
        supports: s,
        update_features: all,
        update_labels: all_labels,
    })
}

/// ISE's step rule over the Cluster Contrast core: supports, lambda schedule, LP loss.
pub struct Supports {
    cfg: IseConfig,
    /// T of the lambda schedule: epochs x iters.
    total_steps: u64,
}

impl Supports {
    fn lambda(&self, step: u64) -> f64 {
        ise_lambda(self.cfg.lambda_base, step, self.total_steps)
    }
}

/// `--method ise`.
pub type IseMethod = ClusterContrastMethod<Supports>;

/// Builds `--method ise` from the session's `[ise]` section.
pub fn build(session: &Session) -> Result<IseMethod, TrainError> {
    let cfg: IseConfig = session.config.method_config()?;
    cfg.validate()?;
    let core = ClusterContrastCore::build(session, Supports::NAME, cfg.settings())?;
    let t = &session.config.train;
    let total_steps = (t.epochs * t.iters) as u64;
    Ok(ClusterContrastMethod::new(
        core,
        Supports { cfg, total_steps },
    ))
}

impl StepRule for Supports {
    const NAME: &'static str = "ise";

    fn on_relabel(&self, session: &Session, epoch: usize, plan: &mut EpochPlan) {
        let iters = session.config.train.iters as u64;
        let first = self.lambda(epoch as u64 * iters);
        let last = self.lambda(((epoch as u64 + 1) * iters).saturating_sub(1));
        session.say(format!(
            "ise epoch {epoch}: support lambda {first:.4} -> {last:.4} (base {}, T = {} steps)",
            self.cfg.lambda_base, self.total_steps
        ));
        plan.record.insert("lambda".into(), first.into());
    }

    fn step(
        &self,
        memory: &ClusterMemory,
        f: &Tensor,
        batch: &TrainBatch,
    ) -> Result<StepOutput, TrainError> {
        let s = ise_step(memory, f, &batch.labels, self.lambda(batch.step), &self.cfg)?;
        Ok(StepOutput {
            terms: vec![
                ("contrast".into(), s.contrast),
                ("label_preserving".into(), s.label_preserving),
            ],
            update_features: s.update_features,
            update_labels: s.update_labels,
        })
    }
}
