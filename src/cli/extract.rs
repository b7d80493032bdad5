//! `unreid extract`: L2-normalised re-ID features of a folder of images (or a dataset split) with a
//! backbone and its weights, written as a features file (`crate::features::FeatureSet`, shared
//! with `cluster` and `evaluate`): `features` [N, D] f32, `pids` / `camids` [N] i64 (-1 for a
//! name that does not parse, counted and reported), the ordered image paths relative to the
//! dataset root, and provenance metadata (arch, weights file and its SHA-256, image size, split,
//! layout, root).

use std::path::{Path, PathBuf};

use super::args::{check_output, open_device, positive, DatasetArgs};
use crate::data::datasets::{image_files, load, parse_market_name, ReidItem};
use crate::features::FeatureSet;
use crate::io::{sha256_file, shown};
use crate::nn::{extract_features, reid_net_from_weights, ExtractOptions};
use crate::DeviceChoice;
use anyhow::{bail, Context};

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
    /// are parsed from Market-style names (-1 otherwise, counted and reported).
    #[arg(long, conflicts_with = "data", required_unless_present = "data")]
    pub images: Option<PathBuf>,
    /// Dataset root (with --layout / --list ... and --split).
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// Split of --data.
    #[arg(long, default_value = "gallery", value_parser = ["train", "query", "gallery"])]
    pub split: String,
    /// Input height in pixels.
    #[arg(long, default_value_t = 256, value_parser = positive())]
    pub height: usize,
    /// Input width in pixels.
    #[arg(long, default_value_t = 128, value_parser = positive())]
    pub width: usize,
    /// Images per forward pass.
    #[arg(long, default_value_t = 64, value_parser = positive())]
    pub batch_size: usize,
    /// Stride of the last ResNet stage (1 for re-ID models, 2 for torchvision's).
    #[arg(long, default_value_t = 1, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=2))]
    pub last_stride: usize,
    /// Domain-specific BN set to evaluate with (default: the last, i.e. the target domain).
    #[arg(long)]
    pub domain: Option<usize>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Backend or adapter-name substring (default: UNREID_ADAPTER, else the best).
    #[arg(long, env = "UNREID_ADAPTER")]
    pub adapter: Option<String>,
    /// Output features file (safetensors).
    #[arg(long)]
    pub out: PathBuf,
}

/// Person id and 0-based camera from a Market/Duke-style name (`0002_c1s1_000451_03.jpg`), or
/// None when the name does not follow it.
pub fn ids_from_name(path: &Path) -> Option<(i64, i64)> {
    let name = path.file_name()?.to_str()?;
    match parse_market_name(name) {
        Some((pid, cam)) if cam > 0 => Some((pid as i64, cam as i64 - 1)),
        _ => None,
    }
}

/// What is extracted: images with their labels, the root their paths are relative to, and how
/// they were found (for the provenance metadata).
struct Input {
    items: Vec<(PathBuf, i64, i64)>,
    root: PathBuf,
    split: Option<String>,
    layout: String,
    /// Labels unknown for every image (none of the names parse): no pids/camids tensors.
    labels_known: bool,
}

fn folder_input(dir: &Path) -> anyhow::Result<Input> {
    let paths = image_files(dir)?;
    if paths.is_empty() {
        bail!("no .jpg/.jpeg/.png images under {}", shown(dir));
    }
    let mut unparsed = Vec::new();
    let items: Vec<(PathBuf, i64, i64)> = paths
        .into_iter()
        .map(|p| {
            let (pid, cam) = ids_from_name(&p).unwrap_or_else(|| {
                unparsed.push(p.clone());
                (-1, -1)
            });
            (p, pid, cam)
        })
        .collect();
    let labels_known = unparsed.len() < items.len();
    if let Some(example) = unparsed.first() {
        eprintln!(
            "warning: {} of {} file names do not give a pid and camera (expected Market-style \
             <pid>_c<camera>..., e.g. 0002_c1s1_000451_03.jpg), e.g. {}; {}",
            unparsed.len(),
            items.len(),
            shown(example.strip_prefix(dir).unwrap_or(example)),
            if labels_known {
                "their pid and camid are -1 (unknown; evaluation skips them)"
            } else {
                "the features file gets no pids/camids"
            }
        );
    }
    Ok(Input {
        items,
        root: dir.to_path_buf(),
        split: None,
        layout: "folder".into(),
        labels_known,
    })
}

fn dataset_input(root: &Path, args: &ExtractArgs) -> anyhow::Result<Input> {
    let ds = load(&args.dataset.spec(root))?;
    let items: &[ReidItem] = match args.split.as_str() {
        "train" => &ds.train,
        "query" => &ds.query,
        _ => &ds.gallery,
    };
    if items.is_empty() {
        bail!(
            "the {} split of {} has no images (for --layout list, give its list file)",
            args.split,
            shown(root)
        );
    }
    Ok(Input {
        items: items
            .iter()
            .map(|i| (i.path.clone(), i.raw_pid as i64, i.camid as i64))
            .collect(),
        root: ds.root.clone(),
        split: Some(args.split.clone()),
        layout: ds.name.clone(),
        labels_known: true,
    })
}

pub fn run(args: ExtractArgs) -> anyhow::Result<()> {
    // Everything that can be checked is checked before the model is built and any image is read.
    check_output("--out", &args.out)?;
    let input = match (&args.images, &args.data) {
        (Some(dir), None) => folder_input(dir)?,
        (None, Some(root)) => dataset_input(root, &args)?,
        _ => bail!("give either --images DIR or --data DIR [--layout L] --split S"),
    };
    let weights_sha256 = sha256_file(&args.weights).context("--weights")?;
    let device = open_device(args.device, args.adapter.as_deref())?;
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
        shown(&args.weights),
        report.loaded.len(),
        report.layout
    );
    let domains = layout.domains;
    let domain = args.domain.unwrap_or(domains - 1);
    if domain >= domains {
        bail!("--domain {domain}: the checkpoint has {domains} BN domain(s) (0..{domains})");
    }
    let n = input.items.len();
    eprintln!(
        "extracting {n} images{} of {} at {}x{} (HxW), batch {}",
        input
            .split
            .as_ref()
            .map_or(String::new(), |s| format!(" ({s} split)")),
        shown(&input.root),
        args.height,
        args.width,
        args.batch_size
    );
    let paths: Vec<PathBuf> = input.items.iter().map(|i| i.0.clone()).collect();
    let opts = ExtractOptions {
        height: args.height,
        width: args.width,
        batch_size: args.batch_size,
        domain,
        progress: Some("extract".into()),
        output: crate::nn::ExtractOutput::Retrieval,
    };
    let features = extract_features(&net, &paths, &device, &opts)?;
    let root = std::fs::canonicalize(&input.root).unwrap_or_else(|_| input.root.clone());
    let relative = |p: &Path| -> String {
        let rel = p
            .strip_prefix(&input.root)
            .or_else(|_| p.strip_prefix(&root))
            .unwrap_or(p);
        rel.display().to_string()
    };
    let provenance = [
        ("arch", args.arch.clone()),
        ("weights", args.weights.display().to_string()),
        ("weights_sha256", weights_sha256),
        ("height", args.height.to_string()),
        ("width", args.width.to_string()),
        ("split", input.split.clone().unwrap_or_else(|| "-".into())),
        ("layout", input.layout.clone()),
        ("root", root.display().to_string()),
        ("bn_domain", domain.to_string()),
        ("generator", format!("unreid {}", env!("CARGO_PKG_VERSION"))),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let set = FeatureSet {
        dim: features.len() / n,
        features,
        num: n,
        pids: input
            .labels_known
            .then(|| input.items.iter().map(|i| i.1).collect()),
        camids: input
            .labels_known
            .then(|| input.items.iter().map(|i| i.2).collect()),
        paths: input.items.iter().map(|i| relative(&i.0)).collect(),
        provenance,
    };
    set.save(&args.out)?;
    println!(
        "wrote {n} {} features of dimension {} ({}) to {}",
        if layout.neck { "BN-neck" } else { "pooled" },
        set.dim,
        if domains > 1 {
            format!("domain {domain} of {domains}")
        } else {
            "one BN domain".into()
        },
        shown(&args.out)
    );
    Ok(())
}
