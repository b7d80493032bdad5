//! Feature extraction, shared by `unreid extract`, evaluation during training and every method's
//! per-epoch re-extraction: a `ReidNet` built to match a checkpoint, and batched L2-normalised
//! features of a list of images with the reference toolboxes' test transform
//! (Resize((H, W)) bicubic, ToTensor, Normalize; `data::transforms::test_input`).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::weights::{read_checkpoint, ClassifierPolicy, LoadOptions, LoadReport, WeightsError};
use super::{Module, Pooling, ReidConfig, ReidNet};
use crate::data::transforms::test_input;
use crate::data::DataError;
use crate::progress::Progress;
use crate::{Device, Tensor};

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error(transparent)]
    Weights(#[from] WeightsError),
    #[error(transparent)]
    Image(#[from] DataError),
    #[error(transparent)]
    Tensor(#[from] crate::Error),
    #[error("extraction settings: {0}")]
    Settings(String),
}

/// What a checkpoint holds besides the backbone, read from its tensor names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointLayout {
    /// A BN neck (`feat_bn.*`).
    pub neck: bool,
    /// GeM pooling (`gem.p`).
    pub gem: bool,
    /// Domain-specific BN sets (`*.dsbn.{d}.*`); 1 for a plain model.
    pub domains: usize,
}

impl CheckpointLayout {
    pub fn of_names<'a>(names: impl IntoIterator<Item = &'a String>) -> CheckpointLayout {
        let mut layout = CheckpointLayout {
            neck: false,
            gem: false,
            domains: 1,
        };
        for k in names {
            layout.neck |= k == "feat_bn.weight" || k.starts_with("feat_bn.dsbn.");
            layout.gem |= k == "gem.p";
            if let Some(d) = k
                .split(".dsbn.")
                .nth(1)
                .and_then(|rest| rest.split('.').next())
                .and_then(|d| d.parse::<usize>().ok())
            {
                layout.domains = layout.domains.max(d + 1);
            }
        }
        layout
    }
}

/// A model shaped like the checkpoint at `weights` (any format `nn::weights::read_checkpoint`
/// reads; neck, GeM and DSBN sets detected from its mapped names) with its tensors loaded; the
/// classifier, if any, is skipped (extraction does not use it). Missing backbone tensors are an
/// error unless `allow_missing`; see `Checkpoint::apply` for the other refusals.
pub fn reid_net_from_weights(
    device: &Device,
    arch: &str,
    last_stride: usize,
    weights: &Path,
    allow_missing: bool,
) -> Result<(ReidNet, CheckpointLayout, LoadReport), ExtractError> {
    let ckpt = read_checkpoint(weights)?;
    let layout = CheckpointLayout::of_names(ckpt.tensors.keys());
    let cfg = ReidConfig {
        arch: arch.to_string(),
        last_stride,
        pooling: if layout.gem {
            Pooling::Gem
        } else {
            Pooling::Avg
        },
        neck: layout.neck,
        ..Default::default()
    };
    let mut net = ReidNet::new(device, &cfg)?;
    if layout.domains > 1 {
        net.make_domain_specific(layout.domains);
    }
    let opts = LoadOptions {
        classifier: ClassifierPolicy::Skip,
        allow_missing,
        ..Default::default()
    };
    let report = ckpt.apply(&net, &opts)?;
    Ok((net, layout, report))
}

/// Which per-image vector extraction returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExtractOutput {
    /// The retrieval feature: the L2-normalised BN-neck output (`ReidNet::extract`).
    #[default]
    Retrieval,
    /// The raw BN-neck output (pooled features without a neck), not normalised: what the
    /// classifier sees in evaluation mode, so `classifier(neck)` are the eval-mode logits
    /// (`ReidNet::extract_neck`; ProDA's stored soft labels).
    Neck,
}

/// How to extract.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    pub height: usize,
    pub width: usize,
    pub batch_size: usize,
    /// Domain-specific BN set to normalise with (the target's in a DSBN model).
    pub domain: usize,
    /// Progress label ("extract target train"); None = silent.
    pub progress: Option<String>,
    /// Normalised retrieval features or the raw BN-neck output.
    pub output: ExtractOutput,
}

/// Features ([N, D] row-major, N = `paths.len()`) of `net` in evaluation mode: L2-normalised
/// retrieval features, or the raw BN-neck output (`opts.output`). Any unreadable image is an
/// error naming it (a missing row would shift every later one).
pub fn extract_features(
    net: &ReidNet,
    paths: &[PathBuf],
    device: &Device,
    opts: &ExtractOptions,
) -> Result<Vec<f32>, ExtractError> {
    if opts.batch_size == 0 || opts.height == 0 || opts.width == 0 {
        return Err(ExtractError::Settings(format!(
            "batch size {} and image size {}x{} must all be at least 1",
            opts.batch_size, opts.height, opts.width
        )));
    }
    let (h, w) = (opts.height, opts.width);
    let mut progress = opts
        .progress
        .as_ref()
        .map(|label| Progress::new(label.clone(), paths.len() as u64, "images"));
    let mut features: Vec<f32> = Vec::with_capacity(paths.len() * net.feature_dim());
    for batch in paths.chunks(opts.batch_size) {
        let pixels: Vec<Vec<f32>> = batch
            .par_iter()
            .map(|p| test_input(p, h, w))
            .collect::<Result<_, _>>()?;
        let x = Tensor::from_slice(&pixels.concat(), &[batch.len(), 3, h, w], device)?;
        let f = match opts.output {
            ExtractOutput::Retrieval => net.extract(&x, opts.domain)?,
            ExtractOutput::Neck => net.extract_neck(&x, opts.domain)?,
        };
        features.extend(f.to_vec()?);
        if let Some(p) = progress.as_mut() {
            p.inc(batch.len() as u64);
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    Ok(features)
}
