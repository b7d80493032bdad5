//! Cluster Contrast for unsupervised re-ID (Dai et al., 2021; alibaba/cluster-contrast-reid
//! `examples/cluster_contrast_train_usl.py`, `clustercontrast/models/cm.py`), shared/ALGORITHMS.md
//! sections 5 and 12.
//!
//! USL, target only. At the start of every epoch the current model (eval mode) re-extracts the
//! L2-normalised BN-neck features of the target train split; they are clustered (k-reciprocal
//! Jaccard k1 30 / k2 6, DBSCAN eps 0.6, min_samples 4), outliers are dropped from this epoch's
//! training, and a fresh cluster memory holds one row per cluster, the normalised mean of its
//! members. Each step: `L = -log softmax(f . c / tau)_y` over the centroids (tau 0.05, f the
//! normalised BN-neck feature); after the optimiser, the batch updates the memory: momentum
//! `c <- m c + (1 - m) f` then renormalise, sample by sample (m 0.1), or "hard": per cluster in the
//! batch, the member with the lowest cosine to its centroid updates it once. GeM pooling,
//! batch 256 = 16 ids x 16 in BN groups of 64 (4 GPUs), Adam 3.5e-4, step x0.1 at epoch 20.
//!
//! [`ClusterContrastCore`] is the shared machinery (model, per-epoch relabelling, memory and its
//! update) and [`ClusterContrastMethod`] the one `Method` over it; a [`StepRule`] says what a step
//! computes: [`PlainContrast`] here, ISE's support samples in `ise.rs`.
//!
//! Resume: the memory is rebuilt at every relabel from the restored model's features (the model is
//! checkpointed exactly and extraction and clustering are deterministic), and eps is fixed by the
//! configuration, so no method state needs saving.

use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::methods::{initial_model, prefixed};
use super::mmt::compact_labels;
use super::{
    EpochPlan, RunConfig, Session, Stream, TrainBatch, TrainError, STAGE_CLUSTER, STAGE_EXTRACT,
};
use crate::cluster::{
    camera_centered, label_quality, pseudo_labels, Backend, ClusterAlgo, ClusterConfig, EpsFrom,
    Features, PseudoLabels,
};
use crate::data::ReidItem;
use crate::memory::{ClusterMemory, MemoryUpdate};
use crate::nn::{extract_features, ExtractOptions, Param, ReidNet};
use crate::Tensor;

/// How the batch moves the cluster memory after the step (cm.py `CM` / `CM_Hard`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateRule {
    /// Every sample in batch order: `c <- m c + (1 - m) f`, renormalised.
    Momentum,
    /// Per cluster in the batch, the member with the lowest cosine to `c` updates it once.
    Hard,
}

impl UpdateRule {
    pub fn memory_update(self) -> MemoryUpdate {
        match self {
            UpdateRule::Momentum => MemoryUpdate::Momentum,
            UpdateRule::Hard => MemoryUpdate::Hard,
        }
    }
}

/// The `[cluster-contrast]` section (defaults: the reference README's Market-1501 command).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterContrastConfig {
    /// Temperature tau of the contrastive loss over the centroids.
    pub temperature: f64,
    /// Memory momentum m: `c <- m c + (1 - m) f` (`--momentum 0.1` in the README's commands).
    pub momentum: f64,
    /// `momentum` (the reference's default since 2021-11-19) or `hard` (`--use-hard`).
    pub update: UpdateRule,
    /// Pseudo-labelling of the re-extracted features: Jaccard (k1 30, k2 6), DBSCAN eps 0.6,
    /// min_samples 4 (one run: no `eps_gap`; `eps_from = "fixed"`).
    pub cluster: ClusterConfig,
    /// Cluster camera-centred features (`cluster::camera_centered`: each camera's mean feature
    /// removed) instead of the features themselves; the memory still starts from the means of
    /// the features themselves. Off in the reference; see [`MemorySettings::camera_centering`].
    pub camera_centering: bool,
}

impl Default for ClusterContrastConfig {
    fn default() -> Self {
        ClusterContrastConfig {
            temperature: 0.05,
            momentum: 0.1,
            update: UpdateRule::Momentum,
            cluster: ClusterConfig::default(),
            camera_centering: false,
        }
    }
}

impl ClusterContrastConfig {
    pub fn settings(&self) -> MemorySettings {
        MemorySettings {
            temperature: self.temperature,
            momentum: self.momentum,
            update: self.update,
            cluster: self.cluster.clone(),
            camera_centering: self.camera_centering,
        }
    }
}

/// The part of a method's section the shared core reads (Cluster Contrast's and ISE's sections
/// both carry these keys).
#[derive(Clone, Debug, PartialEq)]
pub struct MemorySettings {
    pub temperature: f64,
    pub momentum: f64,
    pub update: UpdateRule,
    pub cluster: ClusterConfig,
    /// Whether the relabel step clusters camera-centred features (`cluster::camera_centered`).
    /// A model trained on another domain can carry more camera than person: its clusters then
    /// hold one camera's people and Cluster Contrast learns the camera. Not in the reference
    /// code (default off); the demo turns it on (src/demo.rs, `method_sets`).
    pub camera_centering: bool,
}

impl MemorySettings {
    /// Checks the settings before any work; errors name the `[method]` key.
    pub fn validate(&self, method: &str) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!(
                "{method}.temperature {} must be positive",
                self.temperature
            ));
        }
        if !(self.momentum.is_finite() && (0.0..=1.0).contains(&self.momentum)) {
            return bad(format!(
                "{method}.momentum {} must lie in [0, 1]",
                self.momentum
            ));
        }
        if self.cluster.algo == ClusterAlgo::Dbscan {
            if self.cluster.eps_gap.is_some() {
                return bad(format!(
                    "{method}.cluster.eps_gap is SpCL's self-paced criterion; {method} clusters with one DBSCAN run (remove the key)"
                ));
            }
            if self.cluster.eps_from != EpsFrom::Fixed {
                return bad(format!(
                    "{method}.cluster.eps_from = \"{}\" (MMT's automatic eps) is not used by {method}: set {method}.cluster.eps_from = \"fixed\" and {method}.cluster.eps",
                    self.cluster.eps_from
                ));
            }
        }
        Ok(())
    }
}

/// The published schedule shared by Cluster Contrast and ISE: batch 256 = 16 ids x 16 instances,
/// BN groups of 64 (4 GPUs), Adam 3.5e-4 / 5e-4, step decay x0.1, no warm-up, evaluation every
/// 10 epochs (`--eval-step 10`).
pub(crate) fn usl_schedule(epochs: usize, iters: usize, step_at: usize) -> super::ScheduleConfig {
    super::ScheduleConfig {
        epochs,
        iters,
        batch_size: 256,
        num_instances: 16,
        bn_group: 64,
        lr: 3.5e-4,
        weight_decay: 5e-4,
        milestones: vec![step_at],
        gamma: 0.1,
        warmup_epochs: 0,
        eval_every: 10,
        ..Default::default()
    }
}

/// Cluster Contrast's published run (Market-1501): 50 epochs x 200 iterations, step at 20, GeM
/// pooling, the section's defaults. (MSMT17: `train.iters = 400`.)
pub fn defaults() -> Result<RunConfig, TrainError> {
    let model = super::ModelConfig {
        pooling: "gem".into(),
        ..Default::default()
    };
    RunConfig::with_section(
        "cluster-contrast",
        model,
        usl_schedule(50, 200, 20),
        &ClusterContrastConfig::default(),
    )
}

/// One epoch's pseudo labels: the clustering and its compact labels.
#[derive(Clone, Debug)]
pub struct Assignment {
    pub pseudo: PseudoLabels,
    /// Per sample its cluster in `0..clusters`, or -1 (outlier: not trained on this epoch).
    pub labels: Vec<i32>,
    pub clusters: usize,
    pub outliers: usize,
}

/// Clusters `features` ([N, D] L2-normalised rows) with `cfg` through `cluster::pseudo_labels`
/// and numbers the clusters 0..K-1 (outliers stay -1): the relabel step of Cluster Contrast / ISE.
pub fn assign(
    backend: Backend,
    features: Features<'_>,
    cfg: &ClusterConfig,
) -> Result<Assignment, TrainError> {
    let pseudo = pseudo_labels(backend, features, cfg, None, None)?;
    let (labels, clusters) = compact_labels(&pseudo.labels);
    let outliers = labels.iter().filter(|&&l| l < 0).count();
    Ok(Assignment {
        pseudo,
        labels,
        clusters,
        outliers,
    })
}

/// A fresh memory: one row per cluster, the L2-normalised mean of its members' features
/// ([N, D]; label -1 rows skipped), as the reference's `generate_cluster_features` + normalise.
pub fn cluster_memory(
    features: &Tensor,
    labels: &[i32],
    settings: &MemorySettings,
) -> Result<ClusterMemory, TrainError> {
    Ok(ClusterMemory::from_clusters(
        features,
        labels,
        settings.momentum as f32,
        settings.temperature as f32,
        settings.update.memory_update(),
    )?)
}

/// The machinery Cluster Contrast and ISE share: the model, the target split, the per-epoch
/// relabelling and cluster memory, and the memory update after the step.
pub struct ClusterContrastCore {
    /// The method's name (`cluster-contrast`, `ise`), for logs and errors.
    name: &'static str,
    settings: MemorySettings,
    net: ReidNet,
    target: Arc<Vec<ReidItem>>,
    /// Built at every relabel.
    memory: Option<ClusterMemory>,
    /// Detached features and their labels queued by the step for the update after it.
    pending: Option<(Tensor, Vec<i32>)>,
}

impl ClusterContrastCore {
    /// The model from `model.weights` / `model.init` and the target split; checks the settings.
    pub fn build(
        session: &Session,
        name: &'static str,
        settings: MemorySettings,
    ) -> Result<ClusterContrastCore, TrainError> {
        settings.validate(name)?;
        let target = session.target.as_ref().ok_or_else(|| {
            TrainError::Config(format!(
                "method {name} needs a target dataset (data.target, --target DIR)"
            ))
        })?;
        if session.source.is_some() {
            return Err(TrainError::Config(format!(
                "method {name} is unsupervised (target only); remove data.source / --source"
            )));
        }
        let t = &session.config.train;
        if target.train.len() < t.batch_size {
            return Err(TrainError::Config(format!(
                "the target train split {} has {} images, fewer than train.batch_size = {}",
                target.root.display(),
                target.train.len(),
                t.batch_size
            )));
        }
        settings
            .cluster
            .validate(target.train.len())
            .map_err(|e| TrainError::Config(format!("[{name}] cluster settings: {e}")))?;
        let net = initial_model(session, None, t.seed, session.config.model.init.as_deref())?;
        session.say(format!(
            "{name}: USL on {} target images; per epoch re-extract, {} ({}), fresh cluster memory (tau {}, {} update, m {})",
            target.train.len(),
            settings.cluster.algo,
            match settings.cluster.algo {
                ClusterAlgo::Dbscan => format!(
                    "{} k1 {} k2 {}, eps {}, min_samples {}",
                    settings.cluster.distance,
                    settings.cluster.k1,
                    settings.cluster.k2,
                    settings.cluster.eps,
                    settings.cluster.min_samples
                ),
                ClusterAlgo::Kmeans => format!("k = {}", settings.cluster.k),
            },
            settings.temperature,
            match settings.update {
                UpdateRule::Momentum => "momentum",
                UpdateRule::Hard => "hard",
            },
            settings.momentum
        ));
        Ok(ClusterContrastCore {
            name,
            settings,
            net,
            target: Arc::new(target.train.clone()),
            memory: None,
            pending: None,
        })
    }

    /// Re-extracts the target train split, clusters it, builds this epoch's memory and the
    /// target stream (outliers get pid -1 and are never sampled). Fewer clusters than a batch
    /// needs identities stops the run with the counts (section 12).
    pub fn relabel(&mut self, session: &Session, epoch: usize) -> Result<EpochPlan, TrainError> {
        let t = &session.config.train;
        let name = self.name;
        let paths: Vec<_> = self.target.iter().map(|it| it.path.clone()).collect();
        let opts = ExtractOptions {
            height: t.height,
            width: t.width,
            batch_size: t.eval_batch_size,
            domain: 0,
            progress: Some(format!("{name}: extract target")),
            output: crate::nn::ExtractOutput::Retrieval,
        };
        let feats = session.timed(STAGE_EXTRACT, || {
            extract_features(&self.net, &paths, &session.device, &opts)
        })?;
        let (n, d) = (paths.len(), self.net.feature_dim());
        let features = Features::new(&feats, n, d)?;
        let camids: Vec<u32> = self.target.iter().map(|it| it.camid).collect();
        let a = session.timed(STAGE_CLUSTER, || -> Result<Assignment, TrainError> {
            if self.settings.camera_centering {
                let centred = camera_centered(features, &camids)?;
                assign(
                    session.cluster_backend(),
                    Features::new(&centred, n, d)?,
                    &self.settings.cluster,
                )
            } else {
                assign(session.cluster_backend(), features, &self.settings.cluster)
            }
        })?;
        let eps = a.pseudo.eps;
        let ids_per_batch = (t.batch_size / t.num_instances).max(2);
        if a.clusters < ids_per_batch {
            return Err(TrainError::Method(format!(
                "{name} epoch {epoch}: clustering the {n} target images gave {} clusters and {} outliers ({}); a batch of {} x {} needs {ids_per_batch} identities: raise {name}.cluster.eps or lower train.batch_size / train.num_instances",
                a.clusters,
                a.outliers,
                eps.map_or(format!("k-means k {}", self.settings.cluster.k), |e| format!("DBSCAN eps {e}")),
                ids_per_batch,
                t.num_instances
            )));
        }
        let x = Tensor::from_slice(&feats, &[n, d], &session.device)?;
        self.memory = Some(cluster_memory(&x, &a.labels, &self.settings)?);
        self.pending = None;

        let truth: Vec<i64> = self.target.iter().map(|it| it.raw_pid as i64).collect();
        let labels64: Vec<i64> = a.labels.iter().map(|&l| l as i64).collect();
        let q = label_quality(&labels64, &truth)?;
        session.say(format!(
            "{name} epoch {epoch}: {} clusters, {} outliers dropped, {} of {n} images trained on ({}); vs ground truth NMI {:.3} ARI {:.3} pairwise P {:.3} R {:.3}",
            a.clusters,
            a.outliers,
            n - a.outliers,
            eps.map_or(format!("k-means k {}", self.settings.cluster.k), |e| format!("eps {e}")),
            q.nmi,
            q.ari,
            q.pairwise_precision,
            q.pairwise_recall
        ));
        let items: Vec<ReidItem> = self
            .target
            .iter()
            .zip(&a.labels)
            .map(|(it, &l)| ReidItem {
                pid: l,
                ..it.clone()
            })
            .collect();
        let mut plan = EpochPlan::default();
        plan.streams.push(Stream {
            name: "target".into(),
            items: Arc::new(items),
            domain: 0,
            batch_size: t.batch_size,
            num_instances: t.num_instances,
            two_views: false,
        });
        let r = &mut plan.record;
        r.insert("clusters".into(), a.clusters.into());
        r.insert("outliers".into(), a.outliers.into());
        r.insert("kept".into(), (n - a.outliers).into());
        if let Some(e) = eps {
            r.insert("eps".into(), (e as f64).into());
        }
        super::record_label_quality(r, &q);
        Ok(plan)
    }

    /// The batch's L2-normalised BN-neck features [B, D] (training mode).
    pub fn forward(&self, batch: &TrainBatch) -> Result<Tensor, TrainError> {
        let out = self.net.forward(&batch.images, &batch.ctx)?;
        Ok(out.bn.l2_normalize(1)?)
    }

    /// This epoch's memory (an error before the first relabel).
    pub fn memory(&self) -> Result<&ClusterMemory, TrainError> {
        self.memory.as_ref().ok_or_else(|| {
            TrainError::Method(format!(
                "{}: no cluster memory before the first relabel",
                self.name
            ))
        })
    }

    /// Queues `features` ([M, D]) with their cluster labels for the update after the step.
    pub fn queue_update(&mut self, features: &Tensor, labels: Vec<i32>) {
        self.pending = Some((features.detach(), labels));
    }

    /// Applies the queued update (momentum or hard) to the memory.
    pub fn apply_update(&mut self) -> Result<(), TrainError> {
        if let (Some((f, labels)), Some(memory)) = (self.pending.take(), self.memory.as_mut()) {
            memory.update(&f, &labels)?;
        }
        Ok(())
    }

    pub fn trainable(&self) -> Vec<(String, &Param)> {
        prefixed("", &self.net)
    }

    pub fn models(&self) -> Vec<(String, &ReidNet)> {
        vec![("net".into(), &self.net)]
    }

    pub fn eval_models(&self) -> Vec<(String, &ReidNet, usize)> {
        vec![("net".into(), &self.net, 0)]
    }
}

/// One step's named, weighted loss terms, and the rows (with their cluster labels) that update
/// the memory after the step.
pub struct StepOutput {
    pub terms: Vec<(String, Tensor)>,
    pub update_features: Tensor,
    pub update_labels: Vec<i32>,
}

/// What a method built on [`ClusterContrastCore`] adds to a step: its loss terms from the
/// batch's normalised features, and the rows (with their labels) that update the memory after it.
pub trait StepRule {
    /// The name users type (`--method ...`).
    const NAME: &'static str;

    /// Per-epoch lines and records beyond the core's (ISE: its lambda schedule).
    fn on_relabel(&self, _session: &Session, _epoch: usize, _plan: &mut EpochPlan) {}

    /// The step's losses from the batch's normalised features [B, D] and the memory.
    fn step(
        &self,
        memory: &ClusterMemory,
        features: &Tensor,
        batch: &TrainBatch,
    ) -> Result<StepOutput, TrainError>;
}

/// Cluster Contrast's step: `L = CE(f . c / tau, y)`; the batch's features update the memory.
pub struct PlainContrast;

impl StepRule for PlainContrast {
    const NAME: &'static str = "cluster-contrast";

    fn step(
        &self,
        memory: &ClusterMemory,
        f: &Tensor,
        batch: &TrainBatch,
    ) -> Result<StepOutput, TrainError> {
        Ok(StepOutput {
            terms: vec![("contrast".into(), memory.loss(f, &batch.labels)?)],
            update_features: f.clone(),
            update_labels: batch.labels.clone(),
        })
    }
}

/// A method over the shared core: `ClusterContrastMethod<PlainContrast>` is `--method
/// cluster-contrast`, `ClusterContrastMethod<ise::Supports>` is `--method ise`.
pub struct ClusterContrastMethod<R: StepRule = PlainContrast> {
    core: ClusterContrastCore,
    rule: R,
}

impl<R: StepRule> ClusterContrastMethod<R> {
    pub fn new(core: ClusterContrastCore, rule: R) -> ClusterContrastMethod<R> {
        ClusterContrastMethod { core, rule }
    }
}

impl ClusterContrastMethod<PlainContrast> {
    pub fn build(session: &Session) -> Result<Self, TrainError> {
        let cfg: ClusterContrastConfig = session.config.method_config()?;
        let core = ClusterContrastCore::build(session, PlainContrast::NAME, cfg.settings())?;
        Ok(Self::new(core, PlainContrast))
    }
}

impl<R: StepRule> super::Method for ClusterContrastMethod<R> {
    fn name(&self) -> &'static str {
        R::NAME
    }

    fn relabel(&mut self, session: &Session, epoch: usize) -> Result<EpochPlan, TrainError> {
        let mut plan = self.core.relabel(session, epoch)?;
        self.rule.on_relabel(session, epoch, &mut plan);
        Ok(plan)
    }

    fn losses(
        &mut self,
        _session: &Session,
        batch: &TrainBatch,
    ) -> Result<Vec<(String, Tensor)>, TrainError> {
        let f = self.core.forward(batch)?;
        let out = self.rule.step(self.core.memory()?, &f, batch)?;
        self.core
            .queue_update(&out.update_features, out.update_labels);
        Ok(out.terms)
    }

    fn after_step(&mut self, _session: &Session, _batch: &TrainBatch) -> Result<(), TrainError> {
        self.core.apply_update()
    }

    fn trainable(&self) -> Vec<(String, &Param)> {
        self.core.trainable()
    }

    fn models(&self) -> Vec<(String, &ReidNet)> {
        self.core.models()
    }

    fn eval_models(&self) -> Vec<(String, &ReidNet, usize)> {
        self.core.eval_models()
    }
}
