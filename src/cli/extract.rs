//! `unreid extract`: L2-normalised re-ID features of a folder of images (or a dataset split) with a
//! backbone and its weights, written as safetensors: `features` [N, D] f32, `pids` and `camids`
//! [N] i64 (-1 when unknown), and the ordered image paths in the metadata (`paths`, JSON).
//!
//! Also the image pipeline the ImageNet check uses: Pillow-exact resampling (bilinear / bicubic
//! with antialiasing, 8-bit fixed point, horizontal then vertical pass), centre crop, normalise.
//! When the data module's transforms land this should delegate to them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rayon::prelude::*;

use crate::nn::weights::{read_tensors, save_tensors};
use crate::nn::{load_safetensors, LoadOptions, Module, Pooling, ReidConfig, ReidNet};
use crate::{Device, DeviceChoice, Tensor};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(clap::Args, Debug)]
pub struct ExtractArgs {
    /// Backbone architecture.
    #[arg(long, value_parser = ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])]
    pub arch: String,
    /// safetensors checkpoint (torchvision names; a BN neck `feat_bn.*` and `gem.p` are used when present).
    #[arg(long)]
    pub weights: PathBuf,
    /// A folder of images (jpg/png), searched recursively, in sorted path order.
    #[arg(long, conflicts_with = "data")]
    pub images: Option<PathBuf>,
    /// Dataset root (with --layout and --split).
    #[arg(long, requires = "split")]
    pub data: Option<PathBuf>,
    /// Dataset layout: market (Market-1501) or duke (DukeMTMC-reID).
    #[arg(long, default_value = "market")]
    pub layout: String,
    /// Split: train, query or gallery.
    #[arg(long)]
    pub split: Option<String>,
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
    /// Output safetensors file.
    #[arg(long)]
    pub out: PathBuf,
}

/// Person id and camera (0-based) from a Market/Duke-style name `0002_c1s1_000451_03.jpg`.
pub fn parse_market_name(path: &Path) -> (i64, i64) {
    let name = path.file_name().and_then(|s| s.to_str()).unwrap_or("");
    let mut it = name.splitn(2, '_');
    let pid = it.next().and_then(|p| p.parse::<i64>().ok());
    let cam = it.next().and_then(|rest| {
        let digits: String = rest
            .strip_prefix('c')?
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse::<i64>().ok()
    });
    match (pid, cam) {
        (Some(p), Some(c)) => (p, c - 1),
        _ => (-1, -1),
    }
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
}

fn list_images(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading folder {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if is_image(&p) {
                out.push(p);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Pillow's resampling filters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }
    fn eval(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => (1.0 - x).max(0.0),
            Filter::Bicubic => {
                let a = -0.5;
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
        }
    }
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`: per output pixel, the first input
/// index and fixed-point weights.
fn coeffs(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let mut k: Vec<f64> = (xmin..xmax)
                .map(|x| filter.eval((x as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|v| *v /= ww);
            }
            let one = (1u64 << PRECISION_BITS) as f64;
            let ki = k
                .iter()
                .map(|&v| {
                    if v < 0.0 {
                        (-0.5 + v * one) as i32
                    } else {
                        (0.5 + v * one) as i32
                    }
                })
                .collect();
            (xmin, ki)
        })
        .collect()
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes an RGB8 image exactly as Pillow's `Image.resize(size, filter)` (no reducing gap).
pub fn pil_resize(
    img: &image::RgbImage,
    out_w: usize,
    out_h: usize,
    filter: Filter,
) -> image::RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let half = 1i64 << (PRECISION_BITS - 1);
    // Horizontal pass.
    let mut tmp = src.clone();
    let mut tw = w;
    if out_w != w {
        let cx = coeffs(w, out_w, filter);
        tmp = vec![0u8; out_w * h * 3];
        for y in 0..h {
            for (x, (xmin, k)) in cx.iter().enumerate() {
                for c in 0..3 {
                    let mut ss = half;
                    for (i, &kv) in k.iter().enumerate() {
                        ss += src[(y * w + xmin + i) * 3 + c] as i64 * kv as i64;
                    }
                    tmp[(y * out_w + x) * 3 + c] = clip8(ss);
                }
            }
        }
        tw = out_w;
    }
    // Vertical pass.
    let mut out = tmp.clone();
    if out_h != h {
        let cy = coeffs(h, out_h, filter);
        out = vec![0u8; tw * out_h * 3];
        for (y, (ymin, k)) in cy.iter().enumerate() {
            for x in 0..tw {
                for c in 0..3 {
                    let mut ss = half;
                    for (i, &kv) in k.iter().enumerate() {
                        ss += tmp[((ymin + i) * tw + x) * 3 + c] as i64 * kv as i64;
                    }
                    out[(y * tw + x) * 3 + c] = clip8(ss);
                }
            }
        }
    }
    image::RgbImage::from_raw(tw as u32, out_h as u32, out).expect("sizes match")
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

fn open_rgb(path: &Path) -> anyhow::Result<image::RgbImage> {
    Ok(image::open(path)
        .with_context(|| format!("decoding image {}", path.display()))?
        .to_rgb8())
}

/// torchvision's ImageNet evaluation input: Resize(256) (shorter side, bilinear with antialias),
/// CenterCrop(224), ToTensor, Normalize. Returns [3, 224, 224] as CHW floats.
pub fn imagenet_input(path: &Path) -> anyhow::Result<Vec<f32>> {
    let img = open_rgb(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (nw, nh) = if w <= h {
        (256, (256.0 * h as f64 / w as f64) as usize)
    } else {
        ((256.0 * w as f64 / h as f64) as usize, 256)
    };
    let r = pil_resize(&img, nw, nh, Filter::Bilinear);
    let top = ((nh as f64 - 224.0) / 2.0).round_ties_even() as u32;
    let left = ((nw as f64 - 224.0) / 2.0).round_ties_even() as u32;
    let crop = image::imageops::crop_imm(&r, left, top, 224, 224).to_image();
    Ok(to_normalised_chw(&crop))
}

/// A re-ID test input: Resize((height, width)) bicubic, ToTensor, Normalize.
pub fn reid_input(path: &Path, height: usize, width: usize) -> anyhow::Result<Vec<f32>> {
    Ok(to_normalised_chw(&pil_resize(
        &open_rgb(path)?,
        width,
        height,
        Filter::Bicubic,
    )))
}

fn split_folder(root: &Path, layout: &str, split: &str) -> anyhow::Result<PathBuf> {
    let sub = match (layout, split) {
        ("market" | "duke", "train") => "bounding_box_train",
        ("market" | "duke", "query") => "query",
        ("market" | "duke", "gallery") => "bounding_box_test",
        ("market" | "duke", other) => bail!("unknown split {other:?} (train, query, gallery)"),
        (other, _) => bail!(
            "layout {other:?} is not supported by extract yet (market, duke); use --images DIR"
        ),
    };
    let dir = root.join(sub);
    if !dir.is_dir() {
        bail!(
            "{} does not exist: is --data the dataset root of layout {layout}?",
            dir.display()
        );
    }
    Ok(dir)
}

pub fn run(args: ExtractArgs) -> anyhow::Result<()> {
    let folder = match (&args.images, &args.data) {
        (Some(dir), None) => dir.clone(),
        (None, Some(root)) => split_folder(
            root,
            &args.layout,
            args.split.as_deref().unwrap_or("gallery"),
        )?,
        _ => bail!("give either --images DIR or --data DIR --layout L --split S"),
    };
    let paths = list_images(&folder)?;
    if paths.is_empty() {
        bail!("no .jpg/.jpeg/.png images under {}", folder.display());
    }
    let device = Device::choose(args.device, args.adapter.as_deref())?;
    let keys = read_tensors(&args.weights)?;
    let has_neck =
        keys.contains_key("feat_bn.weight") || keys.keys().any(|k| k.starts_with("feat_bn.dsbn."));
    let pooling = if keys.contains_key("gem.p") {
        Pooling::Gem
    } else {
        Pooling::Avg
    };
    let domains = keys
        .keys()
        .filter_map(|k| {
            k.split(".dsbn.")
                .nth(1)?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(1, |d| d + 1);
    drop(keys);
    let mut net = ReidNet::new(
        &device,
        &ReidConfig {
            arch: args.arch.clone(),
            last_stride: args.last_stride,
            pooling,
            neck: has_neck,
            dropout: 0.0,
            classes: None,
            seed: 0,
        },
    )?;
    if domains > 1 {
        net.make_domain_specific(domains);
    }
    let opts = LoadOptions {
        classifier: crate::nn::ClassifierPolicy::Skip,
        ..Default::default()
    };
    let report = load_safetensors(&net, &args.weights, &opts)?;
    eprintln!("{}: {report}", args.weights.display());
    if report.loaded.is_empty() {
        bail!(
            "{} holds none of the {} parameters (wrong --arch?)",
            args.weights.display(),
            args.arch
        );
    }
    let domain = args.domain.unwrap_or(domains - 1);
    let bar = indicatif::ProgressBar::new(paths.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} images ({per_sec}, eta {eta})",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    let (h, w) = (args.height, args.width);
    let mut features: Vec<f32> = Vec::with_capacity(paths.len() * net.feature_dim());
    for batch in paths.chunks(args.batch_size.max(1)) {
        let pixels: Vec<Vec<f32>> = batch
            .par_iter()
            .map(|p| reid_input(p, h, w))
            .collect::<anyhow::Result<_>>()?;
        let flat: Vec<f32> = pixels.concat();
        let x = Tensor::from_slice(&flat, &[batch.len(), 3, h, w], &device)?;
        let f = net.extract(&x, domain)?;
        features.extend(f.to_vec()?);
        bar.inc(batch.len() as u64);
    }
    bar.finish();
    let (pids, camids): (Vec<i64>, Vec<i64>) = paths.iter().map(|p| parse_market_name(p)).unzip();
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut meta = HashMap::new();
    meta.insert("paths".to_string(), serde_json::to_string(&names)?);
    meta.insert("arch".to_string(), args.arch.clone());
    meta.insert("weights".to_string(), args.weights.display().to_string());
    meta.insert(
        "feature".to_string(),
        if has_neck { "bn_neck_l2" } else { "pooled_l2" }.to_string(),
    );
    let n = paths.len();
    let d = features.len() / n;
    save_tensors(
        &args.out,
        &[("features".into(), vec![n, d], features)],
        &[
            ("pids".into(), vec![n], pids),
            ("camids".into(), vec![n], camids),
        ],
        meta,
    )?;
    eprintln!(
        "wrote {} features of dimension {d} to {}",
        n,
        args.out.display()
    );
    Ok(())
}
