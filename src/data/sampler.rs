//! The PK sampler of MMT / SpCL / Cluster Contrast (`RandomMultipleGallerySampler`), shared/ALGORITHMS.md section 1.
//!
//! One pass: identities in random order; for each, one random anchor image, then K-1 more images of the same
//! identity taken from cameras other than the anchor's (camera preference). If the identity was only seen by the
//! anchor's camera, the K-1 come from its other images regardless of camera. The K-1 are drawn without
//! replacement when there are at least K candidates (the reference compares with K, not K-1), with replacement
//! otherwise. An identity with a single image contributes only its anchor. Items with pid < 0 (junk, or
//! un-clustered outliers in pseudo labels) are never sampled.
//!
//! The flat stream is cut into batches of B with the tail dropped; an epoch is exactly `iters` batches, starting
//! a fresh pass whenever one runs out (the reference's `IterLoader`).

use crate::random::Rng;
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct PkSampler {
    /// K: images per identity.
    pub num_instances: usize,
    /// Prefer cameras other than the anchor's (the reference default); off = `RandomMultipleGallerySamplerNoCam`.
    pub camera_preference: bool,
    /// Per identity (in first-seen order): dataset indices and their cameras.
    identities: Vec<Vec<usize>>,
    camids: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("PK sampler: K (--num-instances) must be at least 1")]
    ZeroInstances,
    #[error("PK sampler: batch size must be at least 1")]
    ZeroBatch,
    #[error("PK sampler: no labelled images (every pid is negative)")]
    NoIdentities,
    #[error("PK sampler: one pass yields {images} images, fewer than one batch of {batch_size}")]
    TooFewImages { images: usize, batch_size: usize },
}

impl PkSampler {
    /// `labels[i] = (pid, camid)` of dataset item `i`; items with pid < 0 are ignored.
    pub fn new(labels: &[(i32, u32)], num_instances: usize) -> Result<Self, SamplerError> {
        if num_instances == 0 {
            return Err(SamplerError::ZeroInstances);
        }
        let mut slot_of_pid: HashMap<i32, usize> = HashMap::new();
        let mut identities: Vec<Vec<usize>> = Vec::new();
        for (index, &(pid, _)) in labels.iter().enumerate() {
            if pid < 0 {
                continue;
            }
            let slot = *slot_of_pid.entry(pid).or_insert_with(|| {
                identities.push(Vec::new());
                identities.len() - 1
            });
            identities[slot].push(index);
        }
        if identities.is_empty() {
            return Err(SamplerError::NoIdentities);
        }
        let camids = labels.iter().map(|&(_, cam)| cam).collect();
        Ok(PkSampler {
            num_instances,
            camera_preference: true,
            identities,
            camids,
        })
    }

    /// A sampler over dataset items (their current pids: train labels, or pseudo labels written into them).
    pub fn from_items(
        items: &[super::datasets::ReidItem],
        num_instances: usize,
    ) -> Result<Self, SamplerError> {
        let labels: Vec<(i32, u32)> = items.iter().map(|it| (it.pid, it.camid)).collect();
        Self::new(&labels, num_instances)
    }

    pub fn with_camera_preference(mut self, on: bool) -> Self {
        self.camera_preference = on;
        self
    }

    pub fn num_identities(&self) -> usize {
        self.identities.len()
    }

    /// One pass over all identities: a flat list of dataset indices, K (or 1 for singletons) per identity.
    pub fn pass(&self, rng: &mut Rng) -> Vec<usize> {
        let k = self.num_instances;
        let mut order: Vec<usize> = (0..self.identities.len()).collect();
        rng.shuffle(&mut order);
        let mut out = Vec::with_capacity(order.len() * k);
        for id in order {
            let members = &self.identities[id];
            let anchor_pos = rng.below(members.len());
            let anchor = members[anchor_pos];
            out.push(anchor);
            if k == 1 {
                continue;
            }
            let anchor_cam = self.camids[anchor];
            // Positions (within this identity) of the candidates for the K-1 others.
            let mut candidates: Vec<usize> = if self.camera_preference {
                (0..members.len())
                    .filter(|&p| self.camids[members[p]] != anchor_cam)
                    .collect()
            } else {
                Vec::new()
            };
            if candidates.is_empty() {
                candidates = (0..members.len())
                    .filter(|&p| members[p] != anchor)
                    .collect();
            }
            if candidates.is_empty() {
                continue; // a singleton identity contributes its anchor only
            }
            if candidates.len() >= k {
                // Without replacement: a partial Fisher-Yates of the candidates.
                for i in 0..k - 1 {
                    let j = i + rng.below(candidates.len() - i);
                    candidates.swap(i, j);
                    out.push(members[candidates[i]]);
                }
            } else {
                for _ in 0..k - 1 {
                    out.push(members[*rng.choose(&candidates)]);
                }
            }
        }
        out
    }

    /// The `iters` batches of one epoch, reproducible from (seed, epoch): passes are keyed (seed, epoch, pass).
    pub fn epoch_batches(
        &self,
        seed: u64,
        epoch: u64,
        iters: usize,
        batch_size: usize,
    ) -> Result<Vec<Vec<usize>>, SamplerError> {
        if batch_size == 0 {
            return Err(SamplerError::ZeroBatch);
        }
        let mut batches = Vec::with_capacity(iters);
        let mut pass_no = 0u64;
        while batches.len() < iters {
            let stream = self.pass(&mut Rng::keyed(&[seed, epoch, pass_no, 0x5a4d_504c]));
            if stream.len() < batch_size {
                return Err(SamplerError::TooFewImages {
                    images: stream.len(),
                    batch_size,
                });
            }
            for chunk in stream.chunks_exact(batch_size) {
                if batches.len() == iters {
                    break;
                }
                batches.push(chunk.to_vec());
            }
            pass_no += 1;
        }
        Ok(batches)
    }
}
