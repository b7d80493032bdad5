//! MMT: Mutual Mean-Teaching (Ge et al., ICLR 2020; yxgeee/MMT `mmt_train_kmeans.py`,
//! `mmt_train_dbscan.py`, `mmt/trainers.py::MMTTrainer`), shared/ALGORITHMS.md section 3.
//!
//! Two nets (source-pretrained, `model.init` / `model.init2`) and their EMA mean nets. Every
//! epoch the averaged, L2-normalised mean-net features of the target train split are clustered
//! (k-means, or Jaccard-DBSCAN with eps fixed at epoch 0 from rho, or at a configured eps),
//! outliers are dropped and the
//! classifier rows of all four nets are overwritten by the normalised centroids; the optimiser's
//! moments are reset. Every step, net 1 and mean net 1 see view 1 of the batch, net 2 and mean
//! net 2 view 2 (two independent augmentations); net i learns from the *other* mean net:
//! `(1-l_id)(CE_1+CE_2) + (1-l_tri)(TRI_1+TRI_2) + l_id(SCE(1<-2')+SCE(2<-1')) +
//! l_tri(STRI(1<-2')+STRI(2<-1'))`. After each step the mean nets follow their nets by EMA
//! (parameters only; the mean nets run in train mode so their BN statistics follow themselves).

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::methods::{initial_model, prefixed};
use super::{EpochPlan, Method, RunConfig, Session, Stream, TrainBatch, TrainError};
use crate::cluster::{
    label_quality, pseudo_labels, ClusterAlgo, ClusterConfig, ClusterDistance, EpsFrom, Features,
};
use crate::data::ReidItem;
use crate::loss::{
    batch_hard, cross_entropy, euclidean_distance, soft_cross_entropy, soft_softmax_triplet,
    softmax_triplet,
};
use crate::nn::{ExtractOptions, ExtractOutput, Param, ReidNet, ReidOutput};
use crate::optim::MeanTeacher;
use crate::Tensor;

/// The `[mmt]` section (defaults: MMT's published values).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MmtConfig {
    /// Pseudo-labelling: k-means with `cluster.k` clusters (MMT's default, k = 500 for
    /// Duke->Market), or `algo = "dbscan"` on the Jaccard distance (k1 20, k2 6, min_samples 4)
    /// with eps fixed at epoch 0 as the mean of the smallest `rho` = 1.6e-3 fraction of the
    /// N(N-1)/2 distances (`eps_from = "rho"`, MMT's `mmt_train_dbscan.py`), or at `cluster.eps`
    /// for every epoch (`eps_from = "fixed"`; rho is a fraction of all pairs, so its eps shrinks
    /// with a smaller target set).
    pub cluster: ClusterConfig,
    /// Weight l_id of the soft cross-entropy (the hard CE gets 1 - l_id).
    pub soft_ce_weight: f64,
    /// Weight l_tri of the soft softmax-triplet (the hard softmax-triplet gets 1 - l_tri).
    pub soft_triplet_weight: f64,
    /// Label smoothing of the hard cross-entropy.
    pub label_smoothing: f64,
    /// Upper bound of the EMA smoothing a_t = min(1 - 1/(t+1), alpha).
    pub ema_alpha: f64,
}

impl Default for MmtConfig {
    fn default() -> Self {
        MmtConfig {
            cluster: ClusterConfig {
                algo: ClusterAlgo::Kmeans,
                distance: ClusterDistance::Euclidean,
                k1: 20,
                k2: 6,
                eps: 0.6,
                min_samples: 4,
                eps_gap: None,
                eps_from: EpsFrom::Rho,
                rho: 1.6e-3,
                k: 500,
                max_iter: 300,
                seed: 0,
            },
            soft_ce_weight: 0.5,
            soft_triplet_weight: 0.8,
            label_smoothing: 0.1,
            ema_alpha: 0.999,
        }
    }
}

impl MmtConfig {
    fn validate(&self) -> Result<(), TrainError> {
        for (key, v) in [
            ("mmt.soft_ce_weight", self.soft_ce_weight),
            ("mmt.soft_triplet_weight", self.soft_triplet_weight),
            ("mmt.label_smoothing", self.label_smoothing),
            ("mmt.ema_alpha", self.ema_alpha),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return Err(TrainError::Config(format!(
                    "{key} = {v} must lie in [0, 1]"
                )));
            }
        }
        Ok(())
    }
}

/// The published schedule: 40 epochs x 400 iterations, batch 64 (16 ids x 4), constant lr 3.5e-4
/// (no warm-up, no steps), dropout 0, BN groups of 16 (MMT ran on 4 GPUs), evaluation every epoch.
pub fn defaults() -> Result<RunConfig, TrainError> {
    RunConfig::with_section("mmt", mmt_model(), mmt_schedule(), &MmtConfig::default())
}

/// MMT's published schedule (ALGORITHMS.md section 3): 40 x 400, batch 64 (16 ids x 4), BN
/// groups of 16, Adam 3.5e-4 / 5e-4 at a constant lr, evaluation every epoch.
pub(crate) fn mmt_schedule() -> super::ScheduleConfig {
    let mut train = super::ScheduleConfig {
        epochs: 40,
        iters: 400,
        batch_size: 64,
        num_instances: 4,
        bn_group: 16,
        lr: 3.5e-4,
        milestones: Vec::new(),
        warmup_epochs: 0,
        eval_every: 1,
        ..Default::default()
    };
    train.weight_decay = 5e-4;
    train
}

/// MMT's model settings: no dropout before the classifier.
pub(crate) fn mmt_model() -> super::ModelConfig {
    super::ModelConfig {
        dropout: 0.0,
        ..Default::default()
    }
}

/// Features of `net` (eval mode, test transform) for every item, [N, D] row-major:
/// L2-normalised retrieval features, or the raw BN-neck output (`output`).
pub(crate) fn features_of(
    session: &Session,
    net: &ReidNet,
    items: &[ReidItem],
    label: &str,
    output: ExtractOutput,
) -> Result<Vec<f32>, TrainError> {
    let t = &session.config.train;
    let paths: Vec<std::path::PathBuf> = items.iter().map(|i| i.path.clone()).collect();
    let opts = ExtractOptions {
        height: t.height,
        width: t.width,
        batch_size: t.eval_batch_size,
        domain: 0,
        progress: Some(label.to_string()),
        output,
    };
    Ok(session.timed(super::STAGE_EXTRACT, || {
        crate::nn::extract_features(net, &paths, &session.device, &opts)
    })?)
}

/// `(a + b) / 2`, each row L2-normalised (MMT averages the two mean nets' features).
pub fn average_normalised(a: &[f32], b: &[f32], dim: usize) -> Vec<f32> {
    let mut out: Vec<f32> = a.iter().zip(b).map(|(x, y)| 0.5 * (x + y)).collect();
    for row in out.chunks_mut(dim.max(1)) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

/// Renumbers cluster labels to 0..K-1 in order of first appearance (k-means may leave a cluster
/// empty); -1 (outlier) stays -1. Returns the labels and K.
pub fn compact_labels(labels: &[i64]) -> (Vec<i32>, usize) {
    let mut map = std::collections::HashMap::new();
    let out = labels
        .iter()
        .map(|&l| {
            if l < 0 {
                -1
            } else {
                let next = map.len() as i32;
                *map.entry(l).or_insert(next)
            }
        })
        .collect();
    (out, map.len())
}

/// The target train split a clustering method trains on, checked before any work: present,
/// not empty, and big enough for the `[method].cluster` settings.
pub(crate) fn target_train(
    session: &Session,
    method: &str,
    cluster: &ClusterConfig,
) -> Result<Vec<ReidItem>, TrainError> {
    let target = session.target.as_ref().ok_or_else(|| {
        TrainError::Config(format!(
            "method {method} needs a target dataset (data.target, --target DIR)"
        ))
    })?;
    if target.train.is_empty() {
        return Err(TrainError::Config(format!(
            "the target train split of {} is empty",
            target.root.display()
        )));
    }
    cluster
        .validate(target.train.len())
        .map_err(|e| TrainError::Config(format!("[{method}] cluster settings: {e}")))?;
    Ok(target.train.clone())
}

/// One relabelling of the target train split by clustering (MMT, ProDA): the compact labels
/// (`-1` = outlier), their counts, and the numbers to log.
pub(crate) struct TargetClusters {
    /// Per target image: its cluster 0..clusters-1, or -1 (outlier, not sampled).
    pub labels: Vec<i32>,
    pub clusters: usize,
    /// The clustering's record: clusters, outliers, kept, eps, and the label quality against
    /// the ground-truth ids (NMI, ARI, pairwise precision / recall / F).
    pub record: serde_json::Map<String, serde_json::Value>,
}

/// Clusters the L2-normalised target features `feats` ([N, D], one row per `target` item) with
/// `cluster`. DBSCAN's eps: with `eps_from = "rho"` it is derived at the first call, stored in
/// `fixed_eps` and reused after (MMT fixes it at epoch 0); with `eps_from = "fixed"` it is
/// `cluster.eps` at every call and `fixed_eps` stays None.
/// Too few clusters for a batch is an error naming the counts and the `[method]` keys to change.
/// Says one line (counts and the label quality against the ground-truth ids).
pub(crate) fn cluster_target(
    session: &Session,
    method: &str,
    cluster: &ClusterConfig,
    feats: Features<'_>,
    fixed_eps: &mut Option<f32>,
    target: &[ReidItem],
    epoch: usize,
) -> Result<TargetClusters, TrainError> {
    let t = &session.config.train;
    let n = feats.rows;
    let pseudo = session.timed(super::STAGE_CLUSTER, || {
        pseudo_labels(session.cluster_backend(), feats, cluster, *fixed_eps, None)
    })?;
    if cluster.algo == ClusterAlgo::Dbscan
        && cluster.eps_from == EpsFrom::Rho
        && fixed_eps.is_none()
    {
        *fixed_eps = pseudo.eps;
        if let Some(e) = pseudo.eps {
            session.say(format!(
                "{method}: DBSCAN eps fixed at {e:.4} (mean of the smallest rho = {} fraction of the Jaccard distances, epoch {epoch})",
                cluster.rho
            ));
        }
    }
    let (labels, clusters) = compact_labels(&pseudo.labels);
    let outliers = labels.iter().filter(|&&l| l < 0).count();
    let ids_per_batch = t.batch_size / t.num_instances;
    if clusters < ids_per_batch.max(2) {
        let change = match (cluster.algo, cluster.eps_from) {
            (ClusterAlgo::Kmeans, _) => format!("raise {method}.cluster.k"),
            (ClusterAlgo::Dbscan, EpsFrom::Rho) => format!(
                "raise {method}.cluster.rho, or set {method}.cluster.eps_from = \"fixed\" and {method}.cluster.eps"
            ),
            (ClusterAlgo::Dbscan, EpsFrom::Fixed) => format!("raise {method}.cluster.eps"),
        };
        return Err(TrainError::Method(format!(
            "{method} epoch {epoch}: clustering gave {clusters} clusters and {outliers} outliers of {n} images (eps {}); a batch needs {} identities — lower train.batch_size / {change}",
            pseudo.eps.map_or("-".into(), |e| format!("{e:.4}")),
            ids_per_batch.max(2)
        )));
    }
    let mut record = serde_json::Map::new();
    record.insert("clusters".into(), clusters.into());
    record.insert("outliers".into(), outliers.into());
    record.insert("kept".into(), (n - outliers).into());
    if let Some(e) = pseudo.eps {
        record.insert("eps".into(), (e as f64).into());
    }
    let truth: Vec<i64> = target.iter().map(|i| i.raw_pid as i64).collect();
    let labels64: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
    let q = label_quality(&labels64, &truth)?;
    super::record_label_quality(&mut record, &q);
    session.say(format!(
        "{method} epoch {}: {} ({}) -> {clusters} clusters, {outliers} outliers, {} images kept; vs ground truth NMI {:.3} ARI {:.3} pairwise P/R {:.3}/{:.3}",
        epoch + 1,
        cluster.algo,
        pseudo.eps.map_or(format!("k = {}", cluster.k), |e| format!("eps {e:.4}")),
        n - outliers,
        q.nmi,
        q.ari,
        q.pairwise_precision,
        q.pairwise_recall
    ));
    Ok(TargetClusters {
        labels,
        clusters,
        record,
    })
}

/// The epoch's target stream: the target items with `pid` = their cluster label.
pub(crate) fn target_stream(
    session: &Session,
    target: &[ReidItem],
    labels: &[i32],
    two_views: bool,
) -> Stream {
    let t = &session.config.train;
    let items: Vec<ReidItem> = target
        .iter()
        .zip(labels)
        .map(|(item, &l)| ReidItem {
            pid: l,
            ..item.clone()
        })
        .collect();
    Stream {
        name: "target".into(),
        items: Arc::new(items),
        domain: 0,
        batch_size: t.batch_size,
        num_instances: t.num_instances,
        two_views,
    }
}

pub struct MmtMethod {
    cfg: MmtConfig,
    net1: ReidNet,
    net2: ReidNet,
    mean1: ReidNet,
    mean2: ReidNet,
    /// The target train split; `pid` is replaced by the pseudo label every epoch.
    target: Vec<ReidItem>,
    /// DBSCAN's eps derived from rho at epoch 0 (None until then, for k-means, and for
    /// `eps_from = "fixed"`, which clusters at `cluster.eps`).
    eps: Option<f32>,
    teacher: MeanTeacher,
}

impl MmtMethod {
    pub fn build(session: &Session) -> Result<MmtMethod, TrainError> {
        let cfg: MmtConfig = session.config.method_config()?;
        cfg.validate()?;
        let target = target_train(session, "mmt", &cfg.cluster)?;
        let model = &session.config.model;
        let init1 = model.init.as_deref().ok_or_else(|| {
            TrainError::Config(
                "method mmt starts from source-pretrained nets: give model.init (--init, e.g. a `source` run's best.safetensors) and optionally model.init2 (--init2)".into(),
            )
        })?;
        let init2 = model.init2.as_deref().unwrap_or(init1);
        let seed = session.config.train.seed;
        let net1 = initial_model(session, None, seed, Some(init1))?;
        let net2 = initial_model(session, None, seed.wrapping_add(1), Some(init2))?;
        if model.init2.is_none() {
            session.say(
                "mmt: no model.init2; net 2 starts from the same weights as net 1 (its own augmentation and dropout seeds)",
            );
        }
        let mean1 = net1.duplicate()?;
        let mean2 = net2.duplicate()?;
        Ok(MmtMethod {
            teacher: MeanTeacher {
                alpha: cfg.ema_alpha,
            },
            cfg,
            net1,
            net2,
            mean1,
            mean2,
            target,
            eps: None,
        })
    }

    fn logits<'a>(out: &'a ReidOutput, which: &str) -> Result<&'a Tensor, TrainError> {
        out.logits
            .as_ref()
            .ok_or_else(|| TrainError::Method(format!("mmt: {which} has no classifier")))
    }
}

impl Method for MmtMethod {
    fn name(&self) -> &'static str {
        "mmt"
    }

    fn relabel(&mut self, session: &Session, epoch: usize) -> Result<EpochPlan, TrainError> {
        let f1 = features_of(
            session,
            &self.mean1,
            &self.target,
            "extract target (mean net 1)",
            ExtractOutput::Retrieval,
        )?;
        let f2 = features_of(
            session,
            &self.mean2,
            &self.target,
            "extract target (mean net 2)",
            ExtractOutput::Retrieval,
        )?;
        let n = self.target.len();
        let d = self.mean1.feature_dim();
        let feats = average_normalised(&f1, &f2, d);
        let c = cluster_target(
            session,
            "mmt",
            &self.cfg.cluster,
            Features::new(&feats, n, d)?,
            &mut self.eps,
            &self.target,
            epoch,
        )?;
        // Classifier rows of all four nets = the normalised centroids of the averaged features.
        let x = Tensor::from_slice(&feats, &[n, d], &session.device)?;
        let centroids = crate::memory::class_centroids(&x, &c.labels)?;
        for net in [
            &mut self.net1,
            &mut self.net2,
            &mut self.mean1,
            &mut self.mean2,
        ] {
            net.set_classifier(centroids.clone())?;
        }
        Ok(EpochPlan {
            streams: vec![target_stream(session, &self.target, &c.labels, true)],
            record: c.record,
            reset_optimizer: true,
        })
    }

    fn losses(
        &mut self,
        _session: &Session,
        batch: &TrainBatch,
    ) -> Result<Vec<(String, Tensor)>, TrainError> {
        let view2 = batch.second_view.as_ref().ok_or_else(|| {
            TrainError::Method(
                "mmt: the batch has no second view (the stream asks two_views)".into(),
            )
        })?;
        let ctx1 = batch.ctx.clone();
        // Net 2 / mean net 2: their own dropout masks.
        let ctx2 = batch
            .ctx
            .clone()
            .seed(crate::random::key(&[batch.ctx.seed, 2]));
        let o1 = self.net1.forward(&batch.images, &ctx1)?;
        let o2 = self.net2.forward(view2, &ctx2)?;
        // Mean nets in train mode (their BN statistics follow), without a graph.
        let (m1, m2) = crate::no_grad(|| -> crate::Result<_> {
            Ok((
                self.mean1.forward(&batch.images, &ctx1)?,
                self.mean2.forward(view2, &ctx2)?,
            ))
        })?;
        let (p1, p2) = (Self::logits(&o1, "net 1")?, Self::logits(&o2, "net 2")?);
        let (q1, q2) = (
            Self::logits(&m1, "mean net 1")?,
            Self::logits(&m2, "mean net 2")?,
        );
        let labels = &batch.labels;
        let eps = self.cfg.label_smoothing as f32;
        let ce = cross_entropy(p1, labels, eps)?.add(&cross_entropy(p2, labels, eps)?)?;
        let mined1 = batch_hard(&euclidean_distance(&o1.pooled, &o1.pooled)?, labels)?;
        let mined2 = batch_hard(&euclidean_distance(&o2.pooled, &o2.pooled)?, labels)?;
        let tri = softmax_triplet(&mined1)?.add(&softmax_triplet(&mined2)?)?;
        let soft_ce = soft_cross_entropy(p1, q2)?.add(&soft_cross_entropy(p2, q1)?)?;
        let dm1 = euclidean_distance(&m1.pooled, &m1.pooled)?;
        let dm2 = euclidean_distance(&m2.pooled, &m2.pooled)?;
        let soft_tri =
            soft_softmax_triplet(&mined1, &dm2)?.add(&soft_softmax_triplet(&mined2, &dm1)?)?;
        let (l_id, l_tri) = (
            self.cfg.soft_ce_weight as f32,
            self.cfg.soft_triplet_weight as f32,
        );
        Ok(vec![
            ("ce".into(), ce.mul_scalar(1.0 - l_id)?),
            ("triplet".into(), tri.mul_scalar(1.0 - l_tri)?),
            ("soft_ce".into(), soft_ce.mul_scalar(l_id)?),
            ("soft_triplet".into(), soft_tri.mul_scalar(l_tri)?),
        ])
    }

    fn after_step(&mut self, _session: &Session, batch: &TrainBatch) -> Result<(), TrainError> {
        self.teacher.update(&self.mean1, &self.net1, batch.step)?;
        self.teacher.update(&self.mean2, &self.net2, batch.step)?;
        Ok(())
    }

    fn trainable(&self) -> Vec<(String, &Param)> {
        let mut p = prefixed("net1.", &self.net1);
        p.extend(prefixed("net2.", &self.net2));
        p
    }

    fn models(&self) -> Vec<(String, &ReidNet)> {
        vec![
            ("net1".into(), &self.net1),
            ("net2".into(), &self.net2),
            ("mean1".into(), &self.mean1),
            ("mean2".into(), &self.mean2),
        ]
    }

    fn eval_models(&self) -> Vec<(String, &ReidNet, usize)> {
        vec![
            ("mean1".into(), &self.mean1, 0),
            ("mean2".into(), &self.mean2, 0),
        ]
    }

    fn state(&self) -> Result<(Vec<(String, Tensor)>, serde_json::Value), TrainError> {
        Ok((Vec::new(), serde_json::json!({ "eps": self.eps })))
    }

    fn load_state(
        &mut self,
        _tensors: &std::collections::BTreeMap<String, Tensor>,
        meta: &serde_json::Value,
    ) -> Result<(), TrainError> {
        self.eps =
            match meta.get("eps") {
                None | Some(serde_json::Value::Null) => None,
                Some(v) => Some(v.as_f64().ok_or_else(|| {
                    TrainError::Method(format!("mmt state: eps {v} is not a number"))
                })? as f32),
            };
        Ok(())
    }
}
