//! Supervised pre-training on the labelled source (shared/ALGORITHMS.md section 2, MMT's
//! `source_pretrain.py`): label-smoothed cross-entropy (eps 0.1) on the BN-neck logits plus the
//! batch-hard softmax-triplet on the pooled features, PK batches, Adam 3.5e-4 with a 10-epoch
//! warm-up and steps at 40 and 70, 80 epochs x 100 iterations. Evaluated on the target, this is
//! the "direct transfer" baseline every adaptation method is compared with.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::methods::{initial_model, prefixed};
use super::{EpochPlan, Method, RunConfig, Session, Stream, TrainBatch, TrainError};
use crate::loss::{batch_hard, cross_entropy, euclidean_distance, margin_triplet, softmax_triplet};
use crate::nn::{Param, ReidNet};
use crate::Tensor;

/// The `[source]` section.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourceConfig {
    /// Label smoothing of the cross-entropy.
    pub label_smoothing: f64,
    /// Weight of the triplet term.
    pub triplet_weight: f64,
    /// A margin triplet with this margin instead of the softmax-triplet (None: softmax-triplet).
    pub margin: Option<f64>,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            label_smoothing: 0.1,
            triplet_weight: 1.0,
            margin: None,
        }
    }
}

/// The published defaults: ResNet-50 last stride 1, 80 x 100, batch 64 (16 x 4), BN groups of 16.
pub fn defaults() -> Result<RunConfig, TrainError> {
    RunConfig::with_section(
        "source",
        Default::default(),
        Default::default(),
        &SourceConfig::default(),
    )
}

pub struct SourceMethod {
    cfg: SourceConfig,
    net: ReidNet,
    items: Arc<Vec<crate::data::ReidItem>>,
    classes: usize,
}

impl SourceMethod {
    pub fn build(session: &Session) -> Result<SourceMethod, TrainError> {
        let cfg: SourceConfig = session.config.method_config()?;
        let source = session.source.as_ref().ok_or_else(|| {
            TrainError::Config(
                "method source needs a labelled source dataset (--source DIR)".into(),
            )
        })?;
        let classes = source.num_train_pids;
        if classes < 2 {
            return Err(TrainError::Config(format!(
                "the source train split {} has {classes} identities; training needs at least 2",
                source.root.display()
            )));
        }
        let net = initial_model(
            session,
            Some(classes),
            session.config.train.seed,
            session.config.model.init.as_deref(),
        )?;
        Ok(SourceMethod {
            cfg,
            net,
            items: Arc::new(source.train.clone()),
            classes,
        })
    }
}

impl Method for SourceMethod {
    fn name(&self) -> &'static str {
        "source"
    }

    fn relabel(&mut self, session: &Session, _epoch: usize) -> Result<EpochPlan, TrainError> {
        let t = &session.config.train;
        let mut plan = EpochPlan::default();
        plan.streams.push(Stream {
            name: "source".into(),
            items: Arc::clone(&self.items),
            domain: 0,
            batch_size: t.batch_size,
            num_instances: t.num_instances,
            two_views: false,
        });
        plan.record.insert("classes".into(), self.classes.into());
        Ok(plan)
    }

    fn losses(
        &mut self,
        _session: &Session,
        batch: &TrainBatch,
    ) -> Result<Vec<(String, Tensor)>, TrainError> {
        let out = self.net.forward(&batch.images, &batch.ctx)?;
        let logits = out
            .logits
            .as_ref()
            .ok_or_else(|| TrainError::Method("source: the model has no classifier".into()))?;
        let ce = cross_entropy(logits, &batch.labels, self.cfg.label_smoothing as f32)?;
        let mined = batch_hard(
            &euclidean_distance(&out.pooled, &out.pooled)?,
            &batch.labels,
        )?;
        let tri = match self.cfg.margin {
            Some(m) => margin_triplet(&mined, m as f32)?,
            None => softmax_triplet(&mined)?,
        };
        Ok(vec![
            ("ce".into(), ce),
            (
                "triplet".into(),
                tri.mul_scalar(self.cfg.triplet_weight as f32)?,
            ),
        ])
    }

    fn trainable(&self) -> Vec<(String, &Param)> {
        prefixed("", &self.net)
    }

    fn models(&self) -> Vec<(String, &ReidNet)> {
        vec![("net".into(), &self.net)]
    }

    fn eval_models(&self) -> Vec<(String, &ReidNet, usize)> {
        vec![("net".into(), &self.net, 0)]
    }
}
