//! ProDA-style prototypical pseudo-label denoising over the clustering loop (Zhang et al.,
//! "Prototypical Pseudo Label Denoising and Target Structure Learning for Domain Adaptive
//! Semantic Segmentation", CVPR 2021; microsoft/ProDA `train.py`, `models/adaptation_modelv2.py`
//! stage 1), adapted to re-ID clusters: shared/ALGORITHMS.md section 7.
//!
//! One net (source-pretrained, `model.init`) and its EMA mean net. Every epoch the mean net's
//! L2-normalised features of the target train split are clustered as in MMT (k-means, or
//! Jaccard-DBSCAN with eps fixed at epoch 0 from rho or at a configured eps; outliers dropped);
//! the classifier rows of both nets become the normalised centroids, the prototypes eta_k the
//! plain cluster means, and the optimiser's moments are reset. Then, as ProDA stores its soft pseudo labels once per stage
//! (computed offline by the fixed model in eval mode on un-augmented images), every target train
//! image i gets its stored soft label `p_i = softmax(W n_i)`: n_i the mean net's eval-mode BN-neck
//! output on the test transform (from the same extraction pass as the clustering features), W the
//! classifier just set (bias-free, no scale: exactly the logits `ReidNet::forward` gives in eval
//! mode). Every step, on the batch's first view:
//! - the mean net (train mode, no graph) gives features f~ (its BN-neck output, raw as ProDA's
//!   code measures distances on the features its classifier reads, or L2-normalised with
//!   `prototype_space = "normalized"`); the prototypes live in the same space;
//! - prototype weights `w_k = softmax_k(-(d_k - min_j d_j) * T)`, `d_k = ||f~ - eta_k||`;
//! - rectified label `y^ = argmax_k p_ik w_k` with p_i the image's *stored* soft label (ProDA's
//!   `weights * target_lpsoft`), not the mean net's prediction on the augmented batch;
//! - the net learns `alpha * CE(z, y^) + beta * RCE(z, y^)` (symmetric CE, alpha 0.1, beta 1);
//! - optional consistency on a second, independent augmentation of the same images (ProDA's
//!   weak / strong views): `KL(softmax(-d(f~, eta) T) || softmax(-d(f2, eta) T))` with f2 the
//!   net's normalised feature of view 2, averaged over all B x K elements as ProDA's masked mean.
//!
//! After the optimiser step, every prototype moves towards the mean-net features of the samples
//! the mean net predicts for it, sample by sample (`eta <- (1 - m) eta + m f~`, m = 1e-4), and the
//! mean net follows the net by EMA. Each epoch logs how many labels the rectification changed and,
//! from the ground-truth ids of the target train split, whether the changed labels now agree
//! with the majority id of their new cluster more often than with that of their old cluster.

use serde::{Deserialize, Serialize};

use super::methods::{initial_model, prefixed};
use super::mmt::{cluster_target, features_of, target_stream, target_train};
use super::{EpochPlan, Method, RunConfig, Session, TrainBatch, TrainError};
use crate::cluster::{ClusterConfig, Features};
use crate::data::ReidItem;
use crate::loss::{
    euclidean_distance, prototype_weights, rectified_labels, symmetric_cross_entropy,
};
use crate::memory::{class_centroids, PrototypeBank};
use crate::nn::{ExtractOutput, Param, ReidNet, ReidOutput};
use crate::optim::MeanTeacher;
use crate::Tensor;

/// The `[proda]` section. Defaults: microsoft/ProDA's stage-1 command (`train.py --ema
/// --proto_rectify --moving_prototype --proto_consistW 10 --rce`, parser defaults
/// `proto_temperature` 1, `proto_momentum` 1e-4, `rce_alpha` 0.1, `rce_beta` 1, EMA 0.999) and,
/// for the clustering that replaces ProDA's fixed classes, MMT's (k-means, k = 500).
///
/// Where the paper and the public code differ we follow the code (shared/ALGORITHMS.md):
/// - `temperature` **multiplies** the distances (`softmax(-d * proto_temperature)`); the paper and
///   ALGORITHMS.md section 7 divide. The two agree at the default T = 1.
/// - the distances are measured on the raw features (ProDA's `get_prototype_weight` on its
///   decoder features): on L2-normalised features they lie in [0, 2], the weights of two
///   prototypes differ by at most e^2 at T = 1, and the rectification could not override the
///   stored soft labels (measured: 0-1 of 512 labels changed per epoch).
/// - prototypes move once per *sample* of the batch (ProDA's per-image loop), towards the
///   features of the class the mean net predicts, not the pseudo label;
/// - the consistency KL is averaged over all batch x class elements (ProDA's `(kl * mask).sum() /
///   mask.sum()` with a mask over every class), so its effective per-sample weight is W / K;
/// - RCE clamps the probabilities at 1e-7 as ProDA's `rce` does.
///
/// Not carried over: ProDA's MRKLD regulariser (`--regular_w 0.1` in its stage-1 command; with
/// hundreds of clusters it would pull every prediction towards uniform), its confidence threshold
/// `train_thred` (default 0: no label is dropped), and the stage-2/3 self-distillation.
/// ProDA's EMA is a constant 0.999 with BN buffers copied from the student; here the mean net
/// is MMT's `optim::MeanTeacher` (a_t = min(1 - 1/(t+1), 0.999), its BN statistics its own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProdaConfig {
    /// Pseudo-labelling each epoch, as `[mmt.cluster]`: k-means with `k` clusters (500), or
    /// `algo = "dbscan"` on the Jaccard distance (k1 20, k2 6, min_samples 4) with eps fixed at
    /// epoch 0 from `rho` = 1.6e-3 (`eps_from = "rho"`) or at `eps` (`eps_from = "fixed"`).
    pub cluster: ClusterConfig,
    /// Rectify the cluster labels with the prototype weights (ProDA `--proto_rectify`); false
    /// trains on the cluster labels themselves (an ablation).
    pub rectify: bool,
    /// ProDA `proto_temperature` (multiplies the distances, see above).
    pub temperature: f64,
    /// ProDA `proto_momentum`: the per-sample EMA weight m of the prototypes.
    pub prototype_momentum: f64,
    /// Weight of the cross-entropy in the symmetric CE (ProDA `rce_alpha`).
    pub sce_alpha: f64,
    /// Weight of the reverse cross-entropy (ProDA `rce_beta`).
    pub sce_beta: f64,
    /// Weight of the weak/strong-view prototype KL consistency (ProDA `proto_consistW`, 10 in the
    /// stage-1 command); 0 turns it off and the second view is not loaded.
    pub consistency_weight: f64,
    /// Upper bound of the mean net's EMA smoothing a_t = min(1 - 1/(t+1), ema_alpha).
    pub ema_alpha: f64,
    /// The feature space of the prototypes and of the distances d_k: `"neck"`, the raw BN-neck
    /// output (microsoft/ProDA measures `||feat - prototype||` on the un-normalised features its
    /// classifier reads), or `"normalized"`, the L2-normalised retrieval features (distances in
    /// [0, 2], so at T = 1 the weights of two prototypes differ by at most e^2).
    pub prototype_space: PrototypeSpace,
}

/// Where ProDA's prototypes live (`[proda] prototype_space`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrototypeSpace {
    /// The raw BN-neck output, as microsoft/ProDA's code (the default).
    Neck,
    /// The L2-normalised BN-neck output (the retrieval and clustering features).
    Normalized,
}

impl PrototypeSpace {
    /// `feat` ([B, D] BN-neck output) in this space.
    fn map(self, feat: &Tensor) -> Result<Tensor, TrainError> {
        Ok(match self {
            PrototypeSpace::Neck => feat.clone(),
            PrototypeSpace::Normalized => feat.l2_normalize(1)?,
        })
    }
}

impl Default for ProdaConfig {
    fn default() -> Self {
        ProdaConfig {
            cluster: super::mmt::MmtConfig::default().cluster,
            rectify: true,
            temperature: 1.0,
            prototype_momentum: 1e-4,
            sce_alpha: 0.1,
            sce_beta: 1.0,
            consistency_weight: 10.0,
            ema_alpha: 0.999,
            prototype_space: PrototypeSpace::Neck,
        }
    }
}

impl ProdaConfig {
    fn validate(&self) -> Result<(), TrainError> {
        let bad = |key: &str, v: f64, what: &str| {
            Err(TrainError::Config(format!(
                "proda.{key} = {v} must be {what}"
            )))
        };
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad("temperature", self.temperature, "positive");
        }
        for (key, v) in [
            ("prototype_momentum", self.prototype_momentum),
            ("ema_alpha", self.ema_alpha),
        ] {
            if !(v.is_finite() && (0.0..=1.0).contains(&v)) {
                return bad(key, v, "in [0, 1]");
            }
        }
        for (key, v) in [
            ("sce_alpha", self.sce_alpha),
            ("sce_beta", self.sce_beta),
            ("consistency_weight", self.consistency_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(key, v, "finite and >= 0");
            }
        }
        if self.sce_alpha == 0.0 && self.sce_beta == 0.0 {
            return Err(TrainError::Config(
                "proda.sce_alpha and proda.sce_beta are both 0: the net would learn nothing from the pseudo labels".into(),
            ));
        }
        Ok(())
    }
}

/// The clustering loop's schedule, MMT's (ProDA's own is a segmentation schedule: SGD, 90k
/// iterations): 40 epochs x 400 iterations, batch 64 (16 ids x 4), constant lr 3.5e-4, weight
/// decay 5e-4, dropout 0, BN groups of 16, evaluation every epoch.
pub fn defaults() -> Result<RunConfig, TrainError> {
    RunConfig::with_section(
        "proda",
        super::mmt::mmt_model(),
        super::mmt::mmt_schedule(),
        &ProdaConfig::default(),
    )
}

/// What the rectification did over an epoch (counted per training sample seen, so an image
/// drawn twice counts twice).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RectifyStats {
    /// Samples whose label was rectified.
    pub seen: u64,
    /// Rectified label != cluster label.
    pub changed: u64,
    /// Of those, the ones where the prototype weights overruled the stored soft label's argmax
    /// (rectified label != argmax p); the rest follow the stored soft label's disagreement with
    /// the clustering.
    pub changed_by_prototypes: u64,
    /// Changed samples whose ground-truth id is the majority id of their new cluster.
    pub now_majority: u64,
    /// Changed samples whose ground-truth id was the majority id of their old cluster.
    pub before_majority: u64,
}

impl RectifyStats {
    /// Counts one sample: cluster label `cluster`, rectified label `rectified`, the argmax
    /// `predicted` of its soft label, ground-truth id `truth`, and the majority id of every
    /// cluster.
    pub fn count(
        &mut self,
        cluster: i32,
        rectified: i32,
        predicted: i32,
        truth: i32,
        majority: &[i32],
    ) {
        self.seen += 1;
        if rectified == cluster {
            return;
        }
        self.changed += 1;
        self.changed_by_prototypes += (rectified != predicted) as u64;
        let major = |k: i32| {
            usize::try_from(k)
                .ok()
                .and_then(|k| majority.get(k))
                .copied()
        };
        self.now_majority += (major(rectified) == Some(truth)) as u64;
        self.before_majority += (major(cluster) == Some(truth)) as u64;
    }

    fn line(&self, epoch: usize) -> String {
        let pct = |a: u64| 100.0 * a as f64 / self.changed.max(1) as f64;
        format!(
            "proda epoch {}: rectification changed {} of {} labels ({:.2}%; {} by the prototype weights); of the changed, {:.1}% agree with the majority ground-truth id of their new cluster, {:.1}% agreed with that of their old one",
            epoch + 1,
            self.changed,
            self.seen,
            100.0 * self.changed as f64 / self.seen.max(1) as f64,
            self.changed_by_prototypes,
            pct(self.now_majority),
            pct(self.before_majority)
        )
    }
}

/// ProDA's stored soft labels: `softmax(net.classifier(n_i))` for every row n_i of `neck` ([N, D]
/// row-major: the net's eval-mode BN-neck outputs, `ExtractOutput::Neck`), [N, K] row-major,
/// computed `chunk` rows at a time on `device` without a graph. These are the probabilities
/// `ReidNet::forward` gives in evaluation mode (no dropout); microsoft/ProDA computes its soft
/// pseudo labels once per stage with the fixed model in eval mode on un-augmented images.
/// Errors: a net without a classifier, a `neck` that is not N x D, chunk 0.
pub fn eval_soft_labels(
    net: &ReidNet,
    neck: &[f32],
    device: &crate::Device,
    chunk: usize,
) -> Result<Vec<f32>, TrainError> {
    let classifier = net
        .classifier
        .as_ref()
        .ok_or_else(|| TrainError::Method("proda: soft labels need a classifier".into()))?;
    let d = net.feature_dim();
    if chunk == 0 || d == 0 || neck.len() % d != 0 {
        return Err(TrainError::Method(format!(
            "proda: soft labels of {} values in rows of {d}, {chunk} rows at a time",
            neck.len()
        )));
    }
    let mut out = Vec::new();
    for rows in neck.chunks(chunk * d) {
        let x = Tensor::from_slice(rows, &[rows.len() / d, d], device)?;
        let p = crate::no_grad(|| classifier.forward(&x)?.softmax())?;
        out.extend(p.to_vec()?);
    }
    Ok(out)
}

/// The index of the first maximum of `row` (0 for an empty row).
fn row_argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bj, bv), (j, &v)| {
            if v > bv {
                (j, v)
            } else {
                (bj, bv)
            }
        })
        .0
}

/// The most frequent ground-truth id per cluster (ties: the smallest id); `labels` are compact
/// cluster labels (-1 skipped), `truth` the ids of the same items.
pub fn majority_ids(labels: &[i32], truth: &[i32], clusters: usize) -> Vec<i32> {
    let mut counts: Vec<std::collections::BTreeMap<i32, usize>> =
        vec![Default::default(); clusters];
    for (&l, &t) in labels.iter().zip(truth) {
        if let Some(c) = usize::try_from(l).ok().and_then(|l| counts.get_mut(l)) {
            *c.entry(t).or_default() += 1;
        }
    }
    counts
        .iter()
        .map(|c| {
            c.iter()
                .fold(
                    (-1, 0),
                    |(bi, bn), (&i, &n)| if n > bn { (i, n) } else { (bi, bn) },
                )
                .0
        })
        .collect()
}

pub struct ProdaMethod {
    cfg: ProdaConfig,
    net: ReidNet,
    mean: ReidNet,
    /// The target train split (`raw_pid` = ground truth for the logs only).
    target: Vec<ReidItem>,
    /// DBSCAN's eps derived from rho at epoch 0 (None until then, for k-means, and for
    /// `eps_from = "fixed"`, which clusters at `cluster.eps`).
    eps: Option<f32>,
    teacher: MeanTeacher,
    /// The epoch's prototypes (set by `relabel`).
    bank: Option<PrototypeBank>,
    /// The epoch's stored soft labels ([N, K] row-major, N target train images, K clusters; set
    /// by `relabel` when rectifying, empty otherwise).
    soft: Vec<f32>,
    /// Majority ground-truth id per cluster of the epoch.
    majority: Vec<i32>,
    /// The step's mean-net features and predicted classes, for the prototype update after the
    /// optimiser step.
    pending: Option<(Tensor, Vec<i32>)>,
    /// This epoch's rectification counts, and the previous epoch's (logged with the next relabel).
    stats: RectifyStats,
    previous: Option<(usize, RectifyStats)>,
    epoch: usize,
}

impl ProdaMethod {
    pub fn build(session: &Session) -> Result<ProdaMethod, TrainError> {
        let cfg: ProdaConfig = session.config.method_config()?;
        cfg.validate()?;
        let target = target_train(session, "proda", &cfg.cluster)?;
        let init = session.config.model.init.as_deref().ok_or_else(|| {
            TrainError::Config(
                "method proda starts from a source-pretrained net: give model.init (--init, e.g. a `source` run's best.safetensors)".into(),
            )
        })?;
        if session.config.model.init2.is_some() {
            return Err(TrainError::Config(
                "method proda trains one net: model.init2 is for mmt; remove it".into(),
            ));
        }
        let net = initial_model(session, None, session.config.train.seed, Some(init))?;
        let mean = net.duplicate()?;
        Ok(ProdaMethod {
            teacher: MeanTeacher {
                alpha: cfg.ema_alpha,
            },
            cfg,
            net,
            mean,
            target,
            eps: None,
            bank: None,
            soft: Vec::new(),
            majority: Vec::new(),
            pending: None,
            stats: RectifyStats::default(),
            previous: None,
            epoch: 0,
        })
    }

    fn logits<'a>(out: &'a ReidOutput, which: &str) -> Result<&'a Tensor, TrainError> {
        out.logits
            .as_ref()
            .ok_or_else(|| TrainError::Method(format!("proda: {which} has no classifier")))
    }

    /// The epoch's prototypes.
    pub fn prototypes(&self) -> Option<&Tensor> {
        self.bank.as_ref().map(|b| &b.prototypes)
    }

    /// The epoch's stored soft labels, [N, K] row-major (N target train images in dataset order,
    /// K clusters); empty before the first relabel and when `rectify` is off.
    pub fn soft_labels(&self) -> &[f32] {
        &self.soft
    }

    /// The stored soft labels of the batch's rows, [B, K], and their argmax (first maximum).
    fn batch_soft_labels(
        &self,
        session: &Session,
        indices: &[usize],
        k: usize,
    ) -> Result<(Tensor, Vec<i32>), TrainError> {
        let mut rows = Vec::with_capacity(indices.len() * k);
        let mut argmax = Vec::with_capacity(indices.len());
        for (r, &i) in indices.iter().enumerate() {
            let row = self.soft.get(i * k..(i + 1) * k).ok_or_else(|| {
                TrainError::Method(format!(
                    "proda: batch row {r} names target image {i}, but soft labels are stored for {} images x {k} clusters",
                    self.soft.len() / k.max(1)
                ))
            })?;
            argmax.push(row_argmax(row) as i32);
            rows.extend_from_slice(row);
        }
        let t = Tensor::from_slice(&rows, &[indices.len(), k], &session.device)?;
        Ok((t, argmax))
    }

    /// Closes the epoch's rectification counts: logged now, recorded with the next relabel.
    fn close_epoch(&mut self, session: &Session) {
        if self.stats.seen > 0 {
            session.say(self.stats.line(self.epoch));
            self.previous = Some((self.epoch, std::mem::take(&mut self.stats)));
        }
    }
}

impl Method for ProdaMethod {
    fn name(&self) -> &'static str {
        "proda"
    }

    fn relabel(&mut self, session: &Session, epoch: usize) -> Result<EpochPlan, TrainError> {
        // An epoch whose last step was skipped (unreadable batch) has not been closed yet.
        self.close_epoch(session);
        self.epoch = epoch;
        // One eval-mode pass gives the BN-neck outputs: normalised, the clustering features (what
        // `ExtractOutput::Retrieval` returns); through the new classifier, the soft labels.
        let neck = features_of(
            session,
            &self.mean,
            &self.target,
            "extract target (mean net)",
            ExtractOutput::Neck,
        )?;
        let n = self.target.len();
        let d = self.mean.feature_dim();
        let raw = Tensor::from_slice(&neck, &[n, d], &session.device)?;
        let x = raw.l2_normalize(1)?;
        let feats = x.to_vec()?;
        let c = cluster_target(
            session,
            "proda",
            &self.cfg.cluster,
            Features::new(&feats, n, d)?,
            &mut self.eps,
            &self.target,
            epoch,
        )?;
        let centroids = class_centroids(&x, &c.labels)?;
        self.net.set_classifier(centroids.clone())?;
        self.mean.set_classifier(centroids)?;
        self.soft = if self.cfg.rectify {
            eval_soft_labels(
                &self.mean,
                &neck,
                &session.device,
                session.config.train.eval_batch_size,
            )?
        } else {
            Vec::new()
        };
        self.bank = Some(PrototypeBank::from_clusters(
            &self.cfg.prototype_space.map(&raw)?,
            &c.labels,
            self.cfg.prototype_momentum as f32,
        )?);
        let truth: Vec<i32> = self.target.iter().map(|i| i.raw_pid).collect();
        self.majority = majority_ids(&c.labels, &truth, c.clusters);
        self.pending = None;
        let mut record = c.record;
        if self.cfg.rectify && c.clusters > 0 {
            // How often the stored soft label's argmax is the cluster label (clustered images).
            // And their confidence: the median log(p_1st / p_2nd): the prototype weights can only
            // override a margin below T times the spread of the distances (at most 2T with
            // `prototype_space = "normalized"`, where distances lie in [0, 2]).
            let (mut agree, mut clustered) = (0usize, 0usize);
            let mut margins = Vec::new();
            for (row, &l) in self.soft.chunks(c.clusters).zip(&c.labels) {
                if l >= 0 {
                    clustered += 1;
                    agree += (row_argmax(row) == l as usize) as usize;
                }
                let (mut a, mut b) = (0.0f64, 0.0f64);
                for &v in row {
                    let v = v as f64;
                    if v > a {
                        (a, b) = (v, a);
                    } else if v > b {
                        b = v;
                    }
                }
                margins.push((a / b.max(f64::MIN_POSITIVE)).ln());
            }
            margins.sort_by(f64::total_cmp);
            let median = margins.get(margins.len() / 2).copied().ok_or_else(|| {
                TrainError::Method("proda: no stored soft labels to measure after relabel".into())
            })?;
            let share = agree as f64 / clustered.max(1) as f64;
            let bound = match self.cfg.prototype_space {
                PrototypeSpace::Normalized => format!(
                    " (the prototype weights can move a label only below {:.2})",
                    2.0 * self.cfg.temperature
                ),
                PrototypeSpace::Neck => String::new(),
            };
            session.say(format!(
                "proda epoch {}: the stored soft labels' argmax is the cluster label for {agree} of {clustered} clustered images ({:.1}%); median log(p_1st / p_2nd) {median:.2}{bound}",
                epoch + 1,
                100.0 * share,
            ));
            record.insert("soft_label_agreement".into(), share.into());
            record.insert("soft_label_median_log_margin".into(), median.into());
        }
        if let Some((e, s)) = self.previous.take() {
            let mut v = serde_json::to_value(&s)
                .map_err(|err| TrainError::Method(format!("proda: {err}")))?;
            v["epoch"] = e.into();
            record.insert("rectified_previous_epoch".into(), v);
        }
        Ok(EpochPlan {
            streams: vec![target_stream(
                session,
                &self.target,
                &c.labels,
                self.cfg.consistency_weight > 0.0,
            )],
            record,
            reset_optimizer: true,
        })
    }

    fn losses(
        &mut self,
        session: &Session,
        batch: &TrainBatch,
    ) -> Result<Vec<(String, Tensor)>, TrainError> {
        let bank = self.bank.as_ref().ok_or_else(|| {
            TrainError::Method("proda: a training step before the first relabel".into())
        })?;
        let out = self.net.forward(&batch.images, &batch.ctx)?;
        // The mean net in train mode (its BN statistics follow), without a graph.
        let m = crate::no_grad(|| self.mean.forward(&batch.images, &batch.ctx))?;
        let mean_feat = self.cfg.prototype_space.map(&m.bn)?.detach();
        // The mean net's prediction on the batch moves the prototypes (ProDA's `ema_out`).
        let predicted = Self::logits(&m, "the mean net")?
            .argmax(1, false)?
            .to_vec_i32()?;
        let t = self.cfg.temperature as f32;
        let weights = prototype_weights(&mean_feat, &bank.prototypes, t)?;
        let labels = if self.cfg.rectify {
            let k = bank.prototypes.shape()[0];
            let (stored, stored_argmax) = self.batch_soft_labels(session, &batch.indices, k)?;
            let (_, hard) = rectified_labels(&stored, &weights)?;
            for (i, &r) in hard.iter().enumerate() {
                let item = self.target.get(batch.indices[i]).ok_or_else(|| {
                    TrainError::Method(format!(
                        "proda: batch row {i} names target image {} of {}",
                        batch.indices[i],
                        self.target.len()
                    ))
                })?;
                self.stats.count(
                    batch.labels[i],
                    r,
                    stored_argmax[i],
                    item.raw_pid,
                    &self.majority,
                );
            }
            hard
        } else {
            batch.labels.clone()
        };
        let logits = Self::logits(&out, "the net")?;
        let sce = symmetric_cross_entropy(
            logits,
            &labels,
            self.cfg.sce_alpha as f32,
            self.cfg.sce_beta as f32,
        )?;
        let mut terms = vec![("sce".to_string(), sce)];
        if self.cfg.consistency_weight > 0.0 {
            let view2 = batch.second_view.as_ref().ok_or_else(|| {
                TrainError::Method(
                    "proda: the batch has no second view (the stream asks two_views)".into(),
                )
            })?;
            let ctx2 = batch
                .ctx
                .clone()
                .seed(crate::random::key(&[batch.ctx.seed, 2]));
            let strong = self
                .cfg
                .prototype_space
                .map(&self.net.forward(view2, &ctx2)?.bn)?;
            let d = euclidean_distance(&strong, &bank.prototypes.detach())?;
            let student = d.mul_scalar(-t)?.log_softmax()?;
            let log_teacher = weights.clamp(f32::MIN_POSITIVE, 1.0)?.log()?;
            let kl = weights.mul(&log_teacher.sub(&student)?)?.mean_all()?;
            terms.push((
                "consistency".into(),
                kl.mul_scalar(self.cfg.consistency_weight as f32)?,
            ));
        }
        self.pending = Some((mean_feat, predicted));
        Ok(terms)
    }

    fn after_step(&mut self, session: &Session, batch: &TrainBatch) -> Result<(), TrainError> {
        if let (Some(bank), Some((feat, predicted))) = (self.bank.as_mut(), self.pending.take()) {
            bank.update(&feat, &predicted)?;
        }
        self.teacher.update(&self.mean, &self.net, batch.step)?;
        if batch.iter + 1 == session.config.train.iters {
            self.close_epoch(session);
        }
        Ok(())
    }

    fn trainable(&self) -> Vec<(String, &Param)> {
        prefixed("net.", &self.net)
    }

    fn models(&self) -> Vec<(String, &ReidNet)> {
        vec![("net".into(), &self.net), ("mean".into(), &self.mean)]
    }

    fn eval_models(&self) -> Vec<(String, &ReidNet, usize)> {
        vec![("mean".into(), &self.mean, 0), ("net".into(), &self.net, 0)]
    }

    /// The prototypes (`prototypes`, [K, D]) and, as JSON, DBSCAN's fixed eps and the
    /// rectification counts not yet recorded. (Relabelling rebuilds the prototypes from the new
    /// clusters at every epoch start; they are kept so a checkpoint holds every piece of state.)
    /// The stored soft labels ([N, K]: 200+ MB on MSMT17 with DBSCAN's clusters) are not saved:
    /// relabelling recomputes them at every epoch start, which is where a resumed run starts,
    /// from the restored mean net in eval mode on un-augmented images, i.e. deterministically.
    fn state(&self) -> Result<(Vec<(String, Tensor)>, serde_json::Value), TrainError> {
        let tensors = self
            .bank
            .as_ref()
            .map(|b| vec![("prototypes".to_string(), b.prototypes.clone())])
            .unwrap_or_default();
        Ok((
            tensors,
            serde_json::json!({
                "eps": self.eps,
                "epoch": self.epoch,
                "stats": self.stats,
                "previous": self.previous,
            }),
        ))
    }

    fn load_state(
        &mut self,
        tensors: &std::collections::BTreeMap<String, Tensor>,
        meta: &serde_json::Value,
    ) -> Result<(), TrainError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            TrainError::Method(format!("proda state: {what}: {e}"))
        };
        self.eps = match meta.get("eps") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(v.as_f64().ok_or_else(|| bad("eps", v))? as f32),
        };
        let field = |k: &str| meta.get(k).cloned().unwrap_or(serde_json::Value::Null);
        self.epoch = serde_json::from_value(field("epoch")).map_err(|e| bad("epoch", &e))?;
        self.stats = serde_json::from_value(field("stats")).map_err(|e| bad("stats", &e))?;
        self.previous =
            serde_json::from_value(field("previous")).map_err(|e| bad("previous", &e))?;
        if let Some(p) = tensors.get("prototypes") {
            self.bank = Some(PrototypeBank {
                prototypes: p.clone(),
                momentum: self.cfg.prototype_momentum as f32,
            });
        }
        Ok(())
    }
}
