//! `unreid extract`: L2-normalised re-ID features of a folder of images (or a dataset split) with a
//! backbone and its weights, written as a features file (`crate::features::FeatureSet`, shared
//! with `cluster` and `evaluate`): `features` [N, D] f32, `pids` / `camids` [N] i64 (-1 when
//! unknown) and the ordered image paths in the metadata.

use std::path::{Path, PathBuf};

use crate::data::datasets::{is_image_file, load, parse_market_name, DatasetSpec, Layout};
use crate::features::FeatureSet;
use crate::nn::{extract_features, reid_net_from_weights, ExtractOptions};
use crate::{Device, DeviceChoice};
use anyhow::bail;

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
    let (net, layout, report) = reid_net_from_weights(
        &device,
        &args.arch,
        args.last_stride,
        &args.weights,
        args.allow_missing,
    )?;
    for w in report.warnings() {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "{}: {} tensors loaded ({})",
        args.weights.display(),
        report.loaded.len(),
        report.layout
    );
    let domains = layout.domains;
    let domain = args.domain.unwrap_or(domains - 1);
    let paths: Vec<PathBuf> = items.iter().map(|i| i.0.clone()).collect();
    let opts = ExtractOptions {
        height: args.height,
        width: args.width,
        batch_size: args.batch_size.max(1),
        domain,
        progress: Some("extract".into()),
    };
    let features = extract_features(&net, &paths, &device, &opts)?;
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
        if layout.neck { "BN-neck" } else { "pooled" },
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
