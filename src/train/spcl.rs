//! SpCL: self-paced contrastive learning with a hybrid memory (Ge et al., NeurIPS 2020;
//! shared/ALGORITHMS.md sections 4, 8 and 12; yxgeee/SpCL `spcl_train_uda.py` / `spcl_train_usl.py`).
//!
//! UDA (a source is configured): the hybrid memory holds one row per source class (the normalised
//! mean of the initial model's source features) and one row per target train image; the network
//! has domain-specific BN (domain 0 source, 1 target) and every step draws a source and a target
//! PK batch of `train.batch_size` images each. USL (no source): target instance rows only, plain
//! BN. Every epoch re-clusters the memory's target rows (no re-extraction): Jaccard (k1 30, k2 6),
//! DBSCAN at eps 0.6 / tight 0.58 / loose 0.62, self-paced reliability with the independence
//! threshold fixed at the first epoch that has a cluster; un-clustered and rejected samples are
//! their own singleton classes. Loss: the unified contrastive loss (tau 0.05) of the L2-normalised
//! BN-neck features over the memory's classes; after the step each sample moves its memory row
//! (`m <- 0.2 m + 0.8 f`, renormalised).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

use super::methods::{initial_model, prefixed};
use super::{
    EpochPlan, Method, RunConfig, Session, Stream, TrainBatch, TrainError, STAGE_CLUSTER,
    STAGE_EXTRACT,
};
use crate::cluster::{label_quality, pseudo_labels, ClusterConfig, Features, PseudoLabels};
use crate::data::ReidItem;
use crate::memory::{class_centroids, HybridMemory};
use crate::nn::{extract_features, ExtractOptions, Module, Param, ReidNet};
use crate::Tensor;

/// The `[spcl]` section (defaults: SpCL's published values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpclConfig {
    /// Temperature tau of the unified contrastive loss.
    pub temperature: f64,
    /// Memory momentum: `m <- momentum * m + (1 - momentum) * f`.
    pub momentum: f64,
    /// Re-clustering of the memory's target rows; `eps_gap` gives the tight / loose runs of the
    /// self-paced criterion (eps 0.6, gap 0.02).
    pub cluster: ClusterConfig,
}

impl Default for SpclConfig {
    fn default() -> Self {
        SpclConfig {
            temperature: 0.05,
            momentum: 0.2,
            cluster: ClusterConfig {
                eps_gap: Some(0.02),
                ..ClusterConfig::default()
            },
        }
    }
}

/// The published schedule: 50 epochs x 400 iterations, batch 64 (16 ids x 4) per domain, BN groups
/// of 16 per domain (4 GPUs), Adam 3.5e-4 / 5e-4, step x0.1 at epoch 20, no warm-up, average
/// pooling, evaluation every 10 epochs. (Market -> MSMT: `train.iters = 800`.)
pub fn defaults() -> Result<RunConfig, TrainError> {
    let train = super::ScheduleConfig {
        epochs: 50,
        iters: 400,
        milestones: vec![20],
        warmup_epochs: 0,
        eval_every: 10,
        ..Default::default()
    };
    RunConfig::with_section("spcl", Default::default(), train, &SpclConfig::default())
}

/// Dense class ids in the order of the sorted distinct labels (the self-paced labels leave gaps
/// where clusters were rejected).
fn dense_labels(labels: &[i64]) -> (Vec<i32>, usize) {
    let mut ids: Vec<i64> = labels.to_vec();
    ids.sort_unstable();
    ids.dedup();
    let dense = labels
        .iter()
        .map(|l| ids.binary_search(l).expect("every label is among the ids") as i32)
        .collect();
    (dense, ids.len())
}

/// The numbers one SpCL relabelling reports.
#[derive(Clone, Debug, PartialEq)]
pub struct SpclLabels {
    /// Per target train image: its class among the target classes (0..`classes`), singletons
    /// included.
    pub labels: Vec<i32>,
    pub classes: usize,
    /// Classes with at least two members (clusters that passed the criterion).
    pub clusters: usize,
    /// Singleton classes: DBSCAN outliers and samples the criterion rejected.
    pub unclustered: usize,
    /// Samples that kept a (multi-member) cluster label.
    pub kept: usize,
}

/// SpCL's target classes from one self-paced pseudo-labelling: the reliability-filtered labels made
/// dense; clusters / un-clustered counted as the reference's statistics line does.
pub fn spcl_labels(pseudo: &PseudoLabels) -> Result<SpclLabels, TrainError> {
    let sp = pseudo.self_paced.as_ref().ok_or_else(|| {
        TrainError::Config(
            "spcl.cluster.eps_gap must be set: the self-paced criterion needs the tight and loose runs"
                .into(),
        )
    })?;
    let (labels, classes) = dense_labels(&sp.labels);
    let mut size = vec![0usize; classes];
    labels.iter().for_each(|&l| size[l as usize] += 1);
    Ok(SpclLabels {
        clusters: size.iter().filter(|&&s| s > 1).count(),
        unclustered: size.iter().filter(|&&s| s == 1).count(),
        kept: labels.iter().filter(|&&l| size[l as usize] > 1).count(),
        labels,
        classes,
    })
}

pub struct SpclMethod {
    cfg: SpclConfig,
    net: ReidNet,
    /// Source train items (UDA); None in USL.
    source: Option<Arc<Vec<ReidItem>>>,
    source_classes: usize,
    target: Arc<Vec<ReidItem>>,
    /// Built at the first relabel (or restored by `load_state`).
    memory: Option<HybridMemory>,
    /// Fixed at the first epoch with a cluster, then kept (resume restores it).
    indep_threshold: Option<f32>,
    /// The last step's detached features and memory rows, for the update after the step.
    pending: Option<(Tensor, Vec<usize>)>,
}

impl SpclMethod {
    pub fn build(session: &Session) -> Result<SpclMethod, TrainError> {
        let cfg: SpclConfig = session.config.method_config()?;
        if cfg.cluster.eps_gap.is_none() {
            return Err(TrainError::Config(
                "spcl.cluster.eps_gap must be set (0.02): the self-paced criterion needs the tight and loose runs".into(),
            ));
        }
        if !(cfg.temperature.is_finite() && cfg.temperature > 0.0) {
            return Err(TrainError::Config(format!(
                "spcl.temperature {} must be positive",
                cfg.temperature
            )));
        }
        if !(0.0..=1.0).contains(&cfg.momentum) {
            return Err(TrainError::Config(format!(
                "spcl.momentum {} must lie in [0, 1]",
                cfg.momentum
            )));
        }
        let t = &session.config.train;
        let target = session.target.as_ref().ok_or_else(|| {
            TrainError::Config("method spcl needs a target dataset (--target DIR)".into())
        })?;
        if target.train.len() < t.batch_size {
            return Err(TrainError::Config(format!(
                "the target train split {} has {} images, fewer than train.batch_size = {}",
                target.root.display(),
                target.train.len(),
                t.batch_size
            )));
        }
        cfg.cluster.validate(target.train.len())?;
        let source = match &session.source {
            Some(s) => {
                if s.num_train_pids < 2 || s.train.len() < t.batch_size {
                    return Err(TrainError::Config(format!(
                        "the source train split {} has {} images of {} identities; SpCL UDA needs at least train.batch_size = {} images of 2 identities",
                        s.root.display(),
                        s.train.len(),
                        s.num_train_pids,
                        t.batch_size
                    )));
                }
                Some(s)
            }
            None => None,
        };
        let mut net = initial_model(session, None, t.seed, session.config.model.init.as_deref())?;
        if source.is_some() {
            net.make_domain_specific(2);
        }
        session.say(format!(
            "spcl: {} (hybrid memory: {}{} target instances)",
            if source.is_some() {
                "UDA, domain-specific BN (source 0, target 1)"
            } else {
                "USL"
            },
            source.map_or(String::new(), |s| format!(
                "{} source class centroids + ",
                s.num_train_pids
            )),
            target.train.len()
        ));
        Ok(SpclMethod {
            source_classes: source.map_or(0, |s| s.num_train_pids),
            source: source.map(|s| Arc::new(s.train.clone())),
            target: Arc::new(target.train.clone()),
            cfg,
            net,
            memory: None,
            indep_threshold: None,
            pending: None,
        })
    }

    fn target_domain(&self) -> usize {
        usize::from(self.source.is_some())
    }

    /// The hybrid memory from the current model: normalised source class means, then one
    /// normalised feature per target train image.
    fn init_memory(&self, session: &Session) -> Result<HybridMemory, TrainError> {
        let t = &session.config.train;
        let opts = |domain: usize, what: &str| ExtractOptions {
            height: t.height,
            width: t.width,
            batch_size: t.eval_batch_size,
            domain,
            progress: Some(format!("spcl memory: {what}")),
            output: crate::nn::ExtractOutput::Retrieval,
        };
        let d = self.net.feature_dim();
        let mut rows: Vec<f32> = Vec::new();
        let mut labels: Vec<i32> = Vec::new();
        if let Some(source) = &self.source {
            let paths: Vec<_> = source.iter().map(|it| it.path.clone()).collect();
            let f = session.timed(STAGE_EXTRACT, || {
                extract_features(&self.net, &paths, &session.device, &opts(0, "source"))
            })?;
            let pids: Vec<i32> = source.iter().map(|it| it.pid).collect();
            let f = Tensor::from_slice(&f, &[paths.len(), d], &session.device)?;
            let centroids = class_centroids(&f, &pids)?;
            if centroids.shape()[0] != self.source_classes {
                return Err(TrainError::Method(format!(
                    "spcl: {} source class centroids for {} source identities",
                    centroids.shape()[0],
                    self.source_classes
                )));
            }
            rows.extend(centroids.to_vec()?);
            labels.extend(0..self.source_classes as i32);
        }
        let paths: Vec<_> = self.target.iter().map(|it| it.path.clone()).collect();
        rows.extend(session.timed(STAGE_EXTRACT, || {
            extract_features(
                &self.net,
                &paths,
                &session.device,
                &opts(self.target_domain(), "target"),
            )
        })?);
        let n = labels.len() + paths.len();
        labels.extend((0..paths.len() as i32).map(|i| self.source_classes as i32 + i));
        let features = Tensor::from_slice(&rows, &[n, d], &session.device)?;
        Ok(HybridMemory::new(
            features,
            labels,
            self.cfg.momentum as f32,
            self.cfg.temperature as f32,
        )?)
    }
}

impl Method for SpclMethod {
    fn name(&self) -> &'static str {
        "spcl"
    }

    fn relabel(&mut self, session: &Session, epoch: usize) -> Result<EpochPlan, TrainError> {
        if self.memory.is_none() {
            self.memory = Some(self.init_memory(session)?);
        }
        let memory = self.memory.as_mut().expect("built above");
        let (ns, nt) = (self.source_classes, self.target.len());
        let d = memory.features.shape()[1];
        let rows = memory.features.narrow(0, ns, nt)?.to_vec()?;
        let features = Features::new(&rows, nt, d)?;
        let pseudo = session.timed(STAGE_CLUSTER, || {
            pseudo_labels(
                session.cluster_backend(),
                features,
                &self.cfg.cluster,
                None,
                self.indep_threshold,
            )
        })?;
        let sp = spcl_labels(&pseudo)?;
        let threshold = pseudo
            .self_paced
            .as_ref()
            .map(|s| s.indep_threshold)
            .expect("spcl_labels checked it");
        let fixed_now = self.indep_threshold.is_none() && pseudo.num_clusters > 0;
        if fixed_now {
            self.indep_threshold = Some(threshold);
        }
        let mut all = Vec::with_capacity(ns + nt);
        all.extend(0..ns as i32);
        all.extend(sp.labels.iter().map(|&l| ns as i32 + l));
        memory.set_labels(all)?;

        let truth: Vec<i64> = self.target.iter().map(|it| it.raw_pid as i64).collect();
        let as_i64: Vec<i64> = sp.labels.iter().map(|&l| l as i64).collect();
        let q = label_quality(&as_i64, &truth)?;
        let eps = pseudo.eps.unwrap_or(self.cfg.cluster.eps);
        if pseudo.num_clusters == 0 {
            session.say(format!(
                "spcl epoch {epoch}: DBSCAN at eps {eps} found no cluster among {nt} target images: every sample is its own class this epoch (training continues on singletons){}",
                if self.indep_threshold.is_none() {
                    "; the independence threshold is fixed at the first epoch with a cluster"
                } else {
                    ""
                }
            ));
        }
        session.say(format!(
            "spcl epoch {epoch}: {} clusters, {} un-clustered, {} of {nt} samples kept by the reliability criterion (DBSCAN eps {eps}: {} clusters, {} outliers); R_indep threshold {}{}; NMI {:.3} ARI {:.3} pairwise P {:.3} R {:.3}",
            sp.clusters,
            sp.unclustered,
            sp.kept,
            pseudo.num_clusters,
            pseudo.num_outliers,
            self.indep_threshold
                .map_or("not fixed yet".to_string(), |t| format!("{:.4}", 1.0 - t)),
            if fixed_now { " (fixed now)" } else { "" },
            q.nmi,
            q.ari,
            q.pairwise_precision,
            q.pairwise_recall
        ));

        let t = &session.config.train;
        let mut plan = EpochPlan::default();
        if let Some(source) = &self.source {
            plan.streams.push(Stream {
                name: "source".into(),
                items: Arc::clone(source),
                domain: 0,
                batch_size: t.batch_size,
                num_instances: t.num_instances,
                two_views: false,
            });
        }
        let items: Vec<ReidItem> = self
            .target
            .iter()
            .zip(&sp.labels)
            .map(|(it, &l)| ReidItem {
                pid: l,
                ..it.clone()
            })
            .collect();
        plan.streams.push(Stream {
            name: "target".into(),
            items: Arc::new(items),
            domain: self.target_domain(),
            batch_size: t.batch_size,
            num_instances: t.num_instances,
            two_views: false,
        });
        let r = &mut plan.record;
        r.insert("clusters".into(), sp.clusters.into());
        r.insert("unclustered".into(), sp.unclustered.into());
        r.insert("kept".into(), sp.kept.into());
        r.insert("memory_classes".into(), (ns + sp.classes).into());
        r.insert("dbscan_clusters".into(), pseudo.num_clusters.into());
        r.insert("dbscan_outliers".into(), pseudo.num_outliers.into());
        r.insert("eps".into(), (eps as f64).into());
        if let Some(th) = self.indep_threshold {
            r.insert("indep_threshold".into(), (th as f64).into());
        }
        super::record_label_quality(r, &q);
        Ok(plan)
    }

    fn losses(
        &mut self,
        _session: &Session,
        batch: &TrainBatch,
    ) -> Result<Vec<(String, Tensor)>, TrainError> {
        let memory = self
            .memory
            .as_ref()
            .ok_or_else(|| TrainError::Method("spcl: no memory before the first relabel".into()))?;
        let out = self.net.forward(&batch.images, &batch.ctx)?;
        let f = out.bn.l2_normalize(1)?;
        // The source stream (UDA) is stream 0: its rows are class rows; target rows are
        // `source_classes + item index`.
        let source_rows = if self.source.is_some() {
            batch.ranges[0].clone()
        } else {
            0..0
        };
        let rows: Vec<usize> = (0..batch.labels.len())
            .map(|r| {
                if source_rows.contains(&r) {
                    batch.labels[r] as usize
                } else {
                    self.source_classes + batch.indices[r]
                }
            })
            .collect();
        let loss = memory.loss(&f, &rows)?;
        self.pending = Some((f.detach(), rows));
        Ok(vec![("contrast".into(), loss)])
    }

    fn after_step(&mut self, _session: &Session, _batch: &TrainBatch) -> Result<(), TrainError> {
        if let (Some((f, rows)), Some(memory)) = (self.pending.take(), self.memory.as_mut()) {
            memory.update(&f, &rows)?;
        }
        Ok(())
    }

    fn images_per_forward(&self, batch_size: usize) -> usize {
        // UDA steps join a source and a target batch into one forward pass.
        if self.source.is_some() {
            2 * batch_size
        } else {
            batch_size
        }
    }

    fn trainable(&self) -> Vec<(String, &Param)> {
        prefixed("", &self.net)
    }

    fn models(&self) -> Vec<(String, &ReidNet)> {
        vec![("net".into(), &self.net)]
    }

    fn eval_models(&self) -> Vec<(String, &ReidNet, usize)> {
        vec![("net".into(), &self.net, self.target_domain())]
    }

    fn state(&self) -> Result<(Vec<(String, Tensor)>, serde_json::Value), TrainError> {
        let tensors = match &self.memory {
            Some(m) => vec![("memory".to_string(), m.features.clone())],
            None => Vec::new(),
        };
        Ok((
            tensors,
            serde_json::json!({ "indep_threshold": self.indep_threshold }),
        ))
    }

    fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        meta: &serde_json::Value,
    ) -> Result<(), TrainError> {
        let features = tensors.get("memory").ok_or_else(|| {
            TrainError::Method("spcl: the checkpoint has no hybrid memory (method.memory)".into())
        })?;
        let n = self.source_classes + self.target.len();
        let d = self.net.feature_dim();
        if features.shape() != [n, d] {
            return Err(TrainError::Method(format!(
                "spcl: the checkpoint's memory is {:?}, this run needs [{n}, {d}] ({} source classes + {} target images)",
                features.shape(),
                self.source_classes,
                self.target.len()
            )));
        }
        let labels: Vec<i32> = (0..n as i32).collect();
        self.memory = Some(HybridMemory::new(
            features.clone(),
            labels,
            self.cfg.momentum as f32,
            self.cfg.temperature as f32,
        )?);
        self.indep_threshold = match meta.get("indep_threshold") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| {
                TrainError::Method(format!("spcl: indep_threshold {v} is not a number"))
            })? as f32),
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_labels_keep_order_and_close_gaps() {
        let (d, n) = dense_labels(&[5, 0, 9, 5, 2]);
        assert_eq!(d, vec![2, 0, 3, 2, 1]);
        assert_eq!(n, 4);
    }
}
