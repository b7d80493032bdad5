//! Memory banks: SpCL's hybrid memory, the cluster memory of Cluster Contrast / ISE, and ProDA's
//! prototype bank. Rows are updated after `backward()`, sample by sample, on the GPU in place.

use crate::error::shape_err;
use crate::loss::{cluster_contrast, hybrid_contrast, ClassRows};
use crate::ops::memory::update_memory_rows;
pub use crate::ops::memory::MemoryUpdate;
use crate::{Device, Result, Tensor};

/// Mean of the rows of `features` ([N, D]) per label (`-1` rows skipped): [C, D] with
/// C = max label + 1, not normalised. Runs on the device as a segment mean over the transposed
/// features. Errors: labels that do not match the rows, or no labelled row.
pub fn class_means(features: &Tensor, labels: &[i32]) -> Result<Tensor> {
    if features.rank() != 2 || features.shape()[0] != labels.len() {
        return shape_err(
            "class_means",
            format!(
                "{} labels for features {:?}",
                labels.len(),
                features.shape()
            ),
        );
    }
    let kept: Vec<i32> = (0..labels.len() as i32)
        .filter(|&i| labels[i as usize] >= 0)
        .collect();
    let classes = labels.iter().copied().max().unwrap_or(-1) + 1;
    if classes <= 0 {
        return shape_err("class_means", "no labelled row");
    }
    let device = features.device();
    let rows = features.index_select(0, &Tensor::from_i32(&kept, &[kept.len()], device)?)?;
    let kept_labels: Vec<i32> = kept.iter().map(|&i| labels[i as usize]).collect();
    let groups = ClassRows::new(&kept_labels, classes as usize, device)?;
    groups.class_mean(&rows.transpose(0, 1)?)?.transpose(0, 1)
}

/// L2-normalised mean of the rows of `features` ([N, D]) per label (`-1` rows skipped): [C, D]
/// with C = max label + 1 ([`class_means`], then each row normalised).
pub fn class_centroids(features: &Tensor, labels: &[i32]) -> Result<Tensor> {
    class_means(features, labels)?.l2_normalize(1)
}

/// SpCL's hybrid memory: one row per source class (its normalised centroid) and one per target
/// instance, each with a class label that re-clustering rewrites.
pub struct HybridMemory {
    /// [rows, D], L2-normalised.
    pub features: Tensor,
    labels: Vec<i32>,
    rows: ClassRows,
    pub momentum: f32,
    pub temperature: f32,
}

impl HybridMemory {
    /// `labels[r]` is row r's class (source ids first, then target clusters and singletons).
    pub fn new(
        features: Tensor,
        labels: Vec<i32>,
        momentum: f32,
        temperature: f32,
    ) -> Result<HybridMemory> {
        let rows = Self::class_rows(&labels, features.shape()[0], features.device())?;
        Ok(HybridMemory {
            features,
            labels,
            rows,
            momentum,
            temperature,
        })
    }

    fn class_rows(labels: &[i32], n: usize, device: &Device) -> Result<ClassRows> {
        if labels.len() != n {
            return shape_err(
                "HybridMemory",
                format!("{} labels for {n} rows", labels.len()),
            );
        }
        let classes = labels.iter().copied().max().unwrap_or(-1) + 1;
        ClassRows::new(labels, classes.max(0) as usize, device)
    }

    /// Replaces the row labels after re-clustering.
    pub fn set_labels(&mut self, labels: Vec<i32>) -> Result<()> {
        self.rows = Self::class_rows(&labels, self.features.shape()[0], self.features.device())?;
        self.labels = labels;
        Ok(())
    }

    pub fn labels(&self) -> &[i32] {
        &self.labels
    }

    /// The unified contrastive loss of normalised `features`, sample i belonging to row `rows[i]`.
    pub fn loss(&self, features: &Tensor, rows: &[usize]) -> Result<Tensor> {
        let targets: Vec<i32> = rows.iter().map(|&r| self.labels[r]).collect();
        hybrid_contrast(
            features,
            &self.features,
            &self.rows,
            &targets,
            self.temperature,
        )
    }

    /// `m <- mu m + (1 - mu) f`, renormalised, sample by sample in batch order (after backward).
    pub fn update(&mut self, features: &Tensor, rows: &[usize]) -> Result<()> {
        self.features = update_memory_rows(
            &self.features,
            &features.detach(),
            rows,
            self.momentum,
            MemoryUpdate::Momentum,
        )?;
        Ok(())
    }
}

/// One row per cluster (Cluster Contrast, ISE), initialised from normalised cluster means.
pub struct ClusterMemory {
    /// [clusters, D], L2-normalised.
    pub centroids: Tensor,
    pub momentum: f32,
    pub temperature: f32,
    pub mode: MemoryUpdate,
}

impl ClusterMemory {
    /// Centroids of `features` per pseudo label (`-1` = outlier, dropped).
    pub fn from_clusters(
        features: &Tensor,
        labels: &[i32],
        momentum: f32,
        temperature: f32,
        mode: MemoryUpdate,
    ) -> Result<ClusterMemory> {
        Ok(ClusterMemory {
            centroids: class_centroids(features, labels)?,
            momentum,
            temperature,
            mode,
        })
    }

    pub fn loss(&self, features: &Tensor, labels: &[i32]) -> Result<Tensor> {
        cluster_contrast(features, &self.centroids, labels, self.temperature)
    }

    /// Momentum or hard update of the batch's clusters (after backward).
    pub fn update(&mut self, features: &Tensor, labels: &[i32]) -> Result<()> {
        let rows = labels_to_rows(labels)?;
        self.centroids = update_memory_rows(
            &self.centroids,
            &features.detach(),
            &rows,
            self.momentum,
            self.mode,
        )?;
        Ok(())
    }
}

/// ProDA's prototypes eta_k ([K, D], not normalised), one per class (here: per cluster).
///
/// Initialised as the plain per-class mean of the features (microsoft/ProDA `calc_prototype.py`
/// averages the warm-up model's features per predicted class). Updated after every step as
/// microsoft/ProDA's `update_objective_SingleVector(..., start_mean=False)` does: for every
/// sample of the batch *in batch order*, `eta_y <- (1 - m) eta_y + m f` (m = `proto_momentum`,
/// 1e-4). A class met n times in one batch thus moves n times (by about n*m), not once by the
/// batch mean as shared/ALGORITHMS.md section 7 words it: we follow the public code.
pub struct PrototypeBank {
    /// [K, D].
    pub prototypes: Tensor,
    /// The per-sample EMA weight m (1e-4 in ProDA).
    pub momentum: f32,
}

impl PrototypeBank {
    /// The per-label means of `features` ([N, D]); `-1` rows are skipped.
    pub fn from_clusters(
        features: &Tensor,
        labels: &[i32],
        momentum: f32,
    ) -> Result<PrototypeBank> {
        Ok(PrototypeBank {
            prototypes: class_means(features, labels)?,
            momentum,
        })
    }

    /// `eta_{labels[i]} <- (1 - m) eta_{labels[i]} + m features[i]` for i in batch order
    /// (`features` [B, D], detached). Runs as rounds of the memory kernel's mean-EMA update with
    /// at most one sample per row each: round r takes the r-th occurrence of every label, which
    /// keeps the order within a row. Errors: a negative label or one without a prototype.
    pub fn update(&mut self, features: &Tensor, labels: &[i32]) -> Result<()> {
        let rows = labels_to_rows(labels)?;
        if features.rank() != 2 || features.shape()[0] != rows.len() {
            return shape_err(
                "PrototypeBank::update",
                format!("{} labels for features {:?}", rows.len(), features.shape()),
            );
        }
        let mut seen: std::collections::HashMap<usize, usize> = Default::default();
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        for (i, &r) in rows.iter().enumerate() {
            let k = seen.entry(r).or_insert(0);
            if rounds.len() <= *k {
                rounds.push(Vec::new());
            }
            rounds[*k].push(i);
            *k += 1;
        }
        let features = features.detach();
        let device = features.device().clone();
        for samples in rounds {
            let idx: Vec<i32> = samples.iter().map(|&i| i as i32).collect();
            let picked =
                features.index_select(0, &Tensor::from_i32(&idx, &[idx.len()], &device)?)?;
            let round_rows: Vec<usize> = samples.iter().map(|&i| rows[i]).collect();
            self.prototypes = update_memory_rows(
                &self.prototypes,
                &picked,
                &round_rows,
                self.momentum,
                MemoryUpdate::MeanEma,
            )?;
        }
        Ok(())
    }
}

fn labels_to_rows(labels: &[i32]) -> Result<Vec<usize>> {
    labels
        .iter()
        .map(|&l| {
            usize::try_from(l).or_else(|_| {
                shape_err(
                    "memory update",
                    format!("label {l} has no memory row (outliers are dropped before training)"),
                )
            })
        })
        .collect()
}
