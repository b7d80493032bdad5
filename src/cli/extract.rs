//! `unreid extract`: L2-normalised re-ID features of a folder of images (or a dataset split) with a
//! backbone and its weights, written as a features file (`crate::features::FeatureSet`, shared
//! with `cluster` and `evaluate`): `features` [N, D] f32, `pids` / `camids` [N] i64 (-1 when
//! unknown) and the ordered image paths in the metadata.
//!
//! Also the ImageNet evaluation input the MobileNetV2 check uses: Resize(256) with the data
//! module's Pillow-exact `resize`, CenterCrop(224), normalise.

use std::path::{Path, PathBuf};

use anyhow::bail;
use rayon::prelude::*;

use crate::data::datasets::{is_image_file, load, parse_market_name, DatasetSpec, Layout};
use crate::data::decode::decode_rgb;
use crate::data::transforms::{resize, Interpolation, IMAGENET_MEAN, IMAGENET_STD};
use crate::features::FeatureSet;
use crate::nn::{
    read_checkpoint, ClassifierPolicy, LoadOptions, Module, Pooling, ReidConfig, ReidNet,
};
use crate::{Device, DeviceChoice, Tensor};

#[derive(clap::Args, Debug)]
pub struct ExtractArgs {
    /// Backbone architecture.
    #[arg(long, value_parser = ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])]
    pub arch: String,
    /// Weights: safetensors, or a PyTorch checkpoint (.pth/.pt/.pth.tar of torchvision, SpCL, MMT,
    /// Cluster Contrast, ISE or fast-reid; detected by content). A BN neck, GeM and DSBN sets are
    /// used when the file has them.
    #[arg(long)]
    pub weights: PathBuf,
    /// Load even when backbone tensors are missing from --weights (each is printed as a warning
    /// and stays randomly initialised).
    #[arg(long)]
    pub allow_missing: bool,
    /// A folder of images (jpg/png), searched recursively, in sorted path order; ids and cameras
    /// are parsed from Market-style names (-1 otherwise).
    #[arg(long, conflicts_with = "data")]
    pub images: Option<PathBuf>,
    /// Dataset root (with --layout and --split).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Dataset layout (as `check-data`).
    #[arg(long, value_enum, default_value_t = Layout::Auto)]
    pub layout: Layout,
    /// Split of --data: train, query or gallery.
    #[arg(long, default_value = "gallery")]
    pub split: String,
    #[arg(long, default_value_t = 256)]
    pub height: usize,
    #[arg(long, default_value_t = 128)]
    pub width: usize,
    #[arg(long, default_value_t = 64)]
    pub batch_size: usize,
    /// Stride of the last ResNet stage (1 for re-ID models).
    #[arg(long, default_value_t = 1)]
    pub last_stride: usize,
    /// Domain-specific BN set to evaluate with (default: the last, i.e. the target domain).
    #[arg(long)]
    pub domain: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Backend or adapter-name substring (default: UNREID_ADAPTER, else the best).
    #[arg(long)]
    pub adapter: Option<String>,
    /// Output features file (safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

/// Person id and 0-based camera from a Market/Duke-style name (`0002_c1s1_000451_03.jpg`), or
/// (-1, -1) when the name does not follow it.
pub fn ids_from_name(path: &Path) -> (i64, i64) {
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("");
    match parse_market_name(name) {
        Some((pid, cam)) => (pid as i64, cam as i64 - 1),
        None => (-1, -1),
    }
}

fn list_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d)
            .map_err(|e| anyhow::anyhow!("reading folder {}: {e}", d.display()))?;
        for e in entries {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_image_file(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// CHW floats: x/255, then (x - mean) / std.
pub fn to_normalised_chw(img: &image::RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut out = vec![0f32; 3 * w * h];
    for c in 0..3 {
        for i in 0..w * h {
            out[c * w * h + i] =
                (raw[i * 3 + c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}

/// torchvision's ImageNet evaluation input: Resize(256) (shorter side, bilinear with antialias),
/// CenterCrop(224), ToTensor, Normalize. Returns [3, 224, 224] as CHW floats.
pub fn imagenet_input(path: &Path) -> anyhow::Result<Vec<f32>> {
    let img = decode_rgb(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (nw, nh) = if w <= h {
        (256, (256.0 * h as f64 / w as f64) as usize)
    } else {
        ((256.0 * w as f64 / h as f64) as usize, 256)
    };
    let r = resize(&img, nh, nw, Interpolation::Bilinear);
    let top = ((nh as f64 - 224.0) / 2.0).round_ties_even() as u32;
    let left = ((nw as f64 - 224.0) / 2.0).round_ties_even() as u32;
    let crop = image::imageops::crop_imm(&r, left, top, 224, 224).to_image();
    Ok(to_normalised_chw(&crop))
}

/// A re-ID test input: Resize((height, width)) bicubic, ToTensor, Normalize.
pub fn reid_input(path: &Path, height: usize, width: usize) -> anyhow::Result<Vec<f32>> {
    Ok(to_normalised_chw(&resize(
        &decode_rgb(path)?,
        height,
        width,
        Interpolation::Bicubic,
    )))
}

/// (path, pid, camid) of one split of a dataset, in the loader's order.
fn dataset_split(
    root: &Path,
    layout: Layout,
    split: &str,
) -> anyhow::Result<Vec<(PathBuf, i64, i64)>> {
    let ds = load(&DatasetSpec::new(root, layout))?;
    let items = match split {
        "train" => &ds.train,
        "query" => &ds.query,
        "gallery" => &ds.gallery,
        other => bail!("unknown split {other:?} (train, query, gallery)"),
    };
    Ok(items
        .iter()
        .map(|i| (i.path.clone(), i.raw_pid as i64, i.camid as i64))
        .collect())
}

pub fn run(args: ExtractArgs) -> anyhow::Result<()> {
    let items: Vec<(PathBuf, i64, i64)> = match (&args.images, &args.data) {
        (Some(dir), None) => {
            let paths = list_images(dir)?;
            if paths.is_empty() {
                bail!("no .jpg/.jpeg/.png images under {}", dir.display());
            }
            paths
                .into_iter()
                .map(|p| {
                    let (pid, cam) = ids_from_name(&p);
                    (p, pid, cam)
                })
                .collect()
        }
        (None, Some(root)) => dataset_split(root, args.layout, &args.split)?,
        _ => bail!("give either --images DIR or --data DIR [--layout L] --split S"),
    };
    if items.is_empty() {
        bail!("split {:?} has no images", args.split);
    }
    let device = Device::choose(args.device, args.adapter.as_deref())?;
    let ckpt = read_checkpoint(&args.weights)?;
    let keys = &ckpt.tensors;
    let has_neck =
        keys.contains_key("feat_bn.weight") || keys.keys().any(|k| k.starts_with("feat_bn.dsbn."));
    let pooling = if keys.contains_key("gem.p") {
        Pooling::Gem
    } else {
        Pooling::Avg
    };
    let domains = ckpt.domains();
    let cfg = ReidConfig {
        arch: args.arch.clone(),
        last_stride: args.last_stride,
        pooling,
        neck: has_neck,
        ..Default::default()
    };
    let mut net = ReidNet::new(&device, &cfg)?;
    if domains > 1 {
        net.make_domain_specific(domains);
    }
    let opts = LoadOptions {
        classifier: ClassifierPolicy::Skip,
        allow_missing: args.allow_missing,
        ..Default::default()
    };
    let report = ckpt.apply(&net, &opts)?;
    drop(ckpt);
    for w in report.warnings() {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "{}: {} tensors loaded ({})",
        args.weights.display(),
        report.loaded.len(),
        report.layout
    );
    let domain = args.domain.unwrap_or(domains - 1);
    let bar = indicatif::ProgressBar::new(items.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} images ({per_sec}, eta {eta})",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    let (h, w) = (args.height, args.width);
    let mut features: Vec<f32> = Vec::with_capacity(items.len() * net.feature_dim());
    for batch in items.chunks(args.batch_size.max(1)) {
        let pixels: Vec<Vec<f32>> = batch
            .par_iter()
            .map(|i| reid_input(&i.0, h, w))
            .collect::<anyhow::Result<_>>()?;
        let x = Tensor::from_slice(&pixels.concat(), &[batch.len(), 3, h, w], &device)?;
        features.extend(net.extract(&x, domain)?.to_vec()?);
        bar.inc(batch.len() as u64);
    }
    bar.finish();
    let n = items.len();
    let set = FeatureSet {
        dim: features.len() / n,
        features,
        num: n,
        pids: Some(items.iter().map(|i| i.1).collect()),
        camids: Some(items.iter().map(|i| i.2).collect()),
        paths: items.iter().map(|i| i.0.display().to_string()).collect(),
    };
    set.save(&args.out)?;
    eprintln!(
        "wrote {n} {} features of dimension {} ({}) to {}",
        if has_neck { "BN-neck" } else { "pooled" },
        set.dim,
        if domains > 1 {
            format!("domain {domain} of {domains}")
        } else {
            "one BN domain".into()
        },
        args.out.display()
    );
    Ok(())
}
