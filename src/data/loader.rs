//! The data loader: decodes and augments batches in a rayon pool on a background thread, ahead of the training
//! step, through a bounded queue (so memory stays at `prefetch` batches however slow the consumer is).
//!
//! A corrupt or unreadable image never stops an epoch: it is left out of its batch (the batch gets smaller), a
//! warning names it once, and every skip is counted in `LoaderStats` so the training log can report it.

use super::datasets::ReidItem;
use super::decode::decode_rgb;
use super::sampler::{PkSampler, SamplerError};
use super::transforms::{augment_batch, AugmentConfig, SampleKey};
use crate::{Device, Tensor};
use image::RgbImage;
use rayon::prelude::*;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// One batch on the host, ready for a single upload.
#[derive(Clone, Debug, PartialEq)]
pub struct HostBatch {
    /// NCHW, normalised, `shape.iter().product()` floats.
    pub images: Vec<f32>,
    /// MMT's second, independent augmentation of the same images (same shape), when asked for.
    pub second_view: Option<Vec<f32>>,
    /// [N, 3, H, W]; N is smaller than the planned batch when images were skipped.
    pub shape: [usize; 4],
    pub pids: Vec<i32>,
    pub camids: Vec<u32>,
    /// Dataset indices of the images, in batch order.
    pub indices: Vec<usize>,
    /// Step within the epoch.
    pub step: usize,
}

/// A batch on a device, ready for the forward pass.
#[derive(Clone)]
pub struct DeviceBatch {
    /// [N, 3, H, W] normalised images.
    pub images: Tensor,
    /// MMT's second view, same shape.
    pub second_view: Option<Tensor>,
    /// [N] i32 labels (train pids, or pseudo labels when the items carry them).
    pub pids: Tensor,
    pub camids: Vec<u32>,
    pub indices: Vec<usize>,
    pub step: usize,
}

impl HostBatch {
    /// Uploads the batch: the images in one write (`Tensor::from_slice` of the whole NCHW buffer), the second
    /// view in one more, and the labels as a small i32 tensor.
    pub fn upload(&self, device: &Device) -> crate::Result<DeviceBatch> {
        let images = Tensor::from_slice(&self.images, &self.shape, device)?;
        let second_view = match &self.second_view {
            Some(view) => Some(Tensor::from_slice(view, &self.shape, device)?),
            None => None,
        };
        let pids = Tensor::from_i32(&self.pids, &[self.pids.len()], device)?;
        Ok(DeviceBatch {
            images,
            second_view,
            pids,
            camids: self.camids.clone(),
            indices: self.indices.clone(),
            step: self.step,
        })
    }

    pub fn len(&self) -> usize {
        self.shape[0]
    }

    pub fn is_empty(&self) -> bool {
        self.shape[0] == 0
    }
}

/// How batches are made.
#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub augment: AugmentConfig,
    pub seed: u64,
    /// Produce `second_view` too (MMT).
    pub two_views: bool,
    /// Batches decoded ahead of the consumer (at least 1).
    pub prefetch: usize,
}

impl LoaderConfig {
    pub fn new(augment: AugmentConfig, seed: u64) -> Self {
        LoaderConfig {
            augment,
            seed,
            two_views: false,
            prefetch: 2,
        }
    }
}

/// Counts of what the loader had to leave out; shared between the loader thread and the training loop.
#[derive(Debug, Default)]
pub struct LoaderStats {
    skipped: AtomicUsize,
    warned: Mutex<HashSet<PathBuf>>,
}

impl LoaderStats {
    /// Images skipped so far (every occurrence counts).
    pub fn skipped(&self) -> usize {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Distinct files that could not be read.
    pub fn bad_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self
            .warned
            .lock()
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    fn record(&self, path: &std::path::Path, reason: &str) {
        self.skipped.fetch_add(1, Ordering::Relaxed);
        let first_time = self
            .warned
            .lock()
            .map(|mut s| s.insert(path.to_path_buf()))
            .unwrap_or(false);
        if first_time {
            eprintln!(
                "warning: skipping unreadable image {}: {reason}",
                path.display()
            );
        }
    }
}

/// Decodes and augments one planned batch (synchronously, in the current rayon pool).
/// `step` and the slot in the batch give each sample its key: index = step * planned batch size + slot.
pub fn load_batch(
    items: &[ReidItem],
    indices: &[usize],
    epoch: u64,
    step: usize,
    cfg: &LoaderConfig,
    stats: &LoaderStats,
) -> HostBatch {
    let decoded: Vec<Option<RgbImage>> = indices
        .par_iter()
        .map(|&i| match decode_rgb(&items[i].path) {
            Ok(img) => Some(img),
            Err(err) => {
                let reason = err.to_string();
                // The error already names the path; keep only the reason for the warning line.
                let reason = reason
                    .split_once(": unreadable image: ")
                    .map_or(reason.as_str(), |(_, r)| r);
                stats.record(&items[i].path, reason);
                None
            }
        })
        .collect();
    let kept: Vec<(usize, usize, &RgbImage)> = decoded
        .iter()
        .enumerate()
        .filter_map(|(slot, img)| img.as_ref().map(|img| (slot, indices[slot], img)))
        .collect();
    let images: Vec<&RgbImage> = kept.iter().map(|k| k.2).collect();
    let keys_for = |view: u64| -> Vec<SampleKey> {
        kept.iter()
            .map(|&(slot, _, _)| SampleKey {
                seed: cfg.seed,
                epoch,
                index: (step * indices.len() + slot) as u64,
                view,
            })
            .collect()
    };
    let per_image = cfg.augment.image_len();
    let mut first = vec![0f32; kept.len() * per_image];
    augment_batch(&cfg.augment, &images, &keys_for(0), &mut first);
    let second_view = cfg.two_views.then(|| {
        let mut second = vec![0f32; kept.len() * per_image];
        augment_batch(&cfg.augment, &images, &keys_for(1), &mut second);
        second
    });
    HostBatch {
        images: first,
        second_view,
        shape: [kept.len(), 3, cfg.augment.height, cfg.augment.width],
        pids: kept.iter().map(|k| items[k.1].pid).collect(),
        camids: kept.iter().map(|k| items[k.1].camid).collect(),
        indices: kept.iter().map(|k| k.1).collect(),
        step,
    }
}

/// Consecutive batches over all items, the last one possibly partial (evaluation order).
pub fn sequential_batches(len: usize, batch_size: usize) -> Vec<Vec<usize>> {
    (0..len)
        .collect::<Vec<_>>()
        .chunks(batch_size.max(1))
        .map(|c| c.to_vec())
        .collect()
}

/// A background loader over a fixed list of planned batches (one epoch); iterate it to get `HostBatch`es.
pub struct Loader {
    receiver: Option<Receiver<HostBatch>>,
    worker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    stats: Arc<LoaderStats>,
}

impl Loader {
    /// Starts decoding `batches` (dataset indices) for `epoch` on a background thread. With `pool` = None the
    /// global rayon pool does the work.
    pub fn spawn(
        items: Arc<Vec<ReidItem>>,
        batches: Vec<Vec<usize>>,
        epoch: u64,
        cfg: LoaderConfig,
        pool: Option<Arc<rayon::ThreadPool>>,
        stats: Arc<LoaderStats>,
    ) -> Self {
        let (sender, receiver) = sync_channel(cfg.prefetch.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let worker_stats = Arc::clone(&stats);
        let worker = std::thread::Builder::new()
            .name("unreid-loader".into())
            .spawn(move || {
                for (step, indices) in batches.iter().enumerate() {
                    if stop_flag.load(Ordering::Relaxed) {
                        break;
                    }
                    let make = || load_batch(&items, indices, epoch, step, &cfg, &worker_stats);
                    let batch = match &pool {
                        Some(pool) => pool.install(make),
                        None => make(),
                    };
                    if sender.send(batch).is_err() {
                        break; // the consumer is gone
                    }
                }
            })
            .expect("spawning the loader thread");
        Loader {
            receiver: Some(receiver),
            worker: Some(worker),
            stop,
            stats,
        }
    }

    /// One training epoch: `iters` PK batches of `batch_size` from `sampler` (reproducible from (seed, epoch)),
    /// decoded and augmented in the background.
    #[allow(clippy::too_many_arguments)]
    pub fn pk_epoch(
        items: Arc<Vec<ReidItem>>,
        sampler: &PkSampler,
        epoch: u64,
        iters: usize,
        batch_size: usize,
        cfg: LoaderConfig,
        pool: Option<Arc<rayon::ThreadPool>>,
        stats: Arc<LoaderStats>,
    ) -> Result<Self, SamplerError> {
        let batches = sampler.epoch_batches(cfg.seed, epoch, iters, batch_size)?;
        Ok(Self::spawn(items, batches, epoch, cfg, pool, stats))
    }

    pub fn stats(&self) -> &Arc<LoaderStats> {
        &self.stats
    }
}

impl Iterator for Loader {
    type Item = HostBatch;

    fn next(&mut self) -> Option<HostBatch> {
        self.receiver.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver unblocks a worker waiting on a full queue.
        self.receiver.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
