//! `unreid train`: parses the flags into configuration overrides and calls `train::train`.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::args::{SourceDatasetArgs, TargetDatasetArgs};
use crate::train::config::{read_toml_file, resolve};
use crate::train::run_dir::RunMode;
use crate::train::{method_defaults, RunConfig, RunDir, TrainOptions, METHODS};
use crate::{Device, DeviceChoice};

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Training method: source, spcl (UDA with --source, USL without), mmt, cluster-contrast,
    /// ise, proda. Default: the method of --config.
    #[arg(long)]
    pub method: Option<String>,
    /// A TOML preset or config file (e.g. configs/source.toml); flags and --set override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Labelled source dataset root.
    #[arg(long)]
    pub source: Option<PathBuf>,
    #[command(flatten)]
    pub source_data: SourceDatasetArgs,
    /// Target dataset root (its query/gallery are evaluated).
    #[arg(long)]
    pub target: Option<PathBuf>,
    #[command(flatten)]
    pub target_data: TargetDatasetArgs,
    /// resnet18, resnet34, resnet50 or mobilenet_v2.
    #[arg(long, value_parser = ["resnet18", "resnet34", "resnet50", "mobilenet_v2"])]
    pub arch: Option<String>,
    /// ImageNet backbone weights (safetensors, torchvision names).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// A checkpoint to start from (e.g. a source run's checkpoints/best.safetensors).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// MMT's second starting checkpoint.
    #[arg(long)]
    pub init2: Option<PathBuf>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs: Option<u64>,
    /// Steps per epoch.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub iters: Option<u64>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(2..))]
    pub batch_size: Option<u64>,
    /// Images per identity in a PK batch.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub num_instances: Option<u64>,
    #[arg(long, value_parser = positive_f64)]
    pub lr: Option<f64>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub height: Option<u64>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub width: Option<u64>,
    #[arg(long)]
    pub seed: Option<u64>,
    /// Evaluate every N epochs (and after the last).
    #[arg(long)]
    pub eval_every: Option<u64>,
    /// Pseudo labels by k-means with K clusters (MMT's default way; methods mmt and proda):
    /// sets `<method>.cluster.algo = "kmeans"` and `<method>.cluster.k = K`.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u64).range(2..))]
    pub clusters: Option<u64>,
    /// Any configuration key, e.g. --set train.milestones=[20] --set source.label_smoothing=0.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    /// The run directory (config.toml, metrics.jsonl, curves.png, train.log, checkpoints/).
    #[arg(long, required_unless_present = "resume")]
    pub out: Option<PathBuf>,
    /// Continue the run in this directory from its last checkpoint (with its own config).
    #[arg(long, conflicts_with_all = ["out", "overwrite", "config", "method"])]
    pub resume: Option<PathBuf>,
    /// Start over in a run directory that already holds a run.
    #[arg(long)]
    pub overwrite: bool,
    /// Stop cleanly after this many epochs (continue later with --resume).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub epochs_this_run: Option<u64>,
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    /// Backend or adapter-name substring.
    #[arg(long, env = "UNREID_ADAPTER")]
    pub adapter: Option<String>,
}

/// The methods whose pseudo labels can come from k-means (`--clusters K`).
const CLUSTERS_METHODS: &[&str] = &["mmt", "proda"];

/// A finite number > 0 (learning rates).
fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(format!("{s:?} is not a positive number")),
    }
}

impl TrainArgs {
    /// The flags that set configuration keys, as a TOML table.
    fn overrides(&self) -> anyhow::Result<toml::Table> {
        use toml::Value;
        let mut t = toml::Table::new();
        let mut put = |section: &str, key: &str, v: Value| {
            let s = t
                .entry(section.to_string())
                .or_insert_with(|| Value::Table(toml::Table::new()));
            if let Value::Table(s) = s {
                s.insert(key.to_string(), v);
            }
        };
        let path = |p: &PathBuf| Value::String(p.display().to_string());
        if let Some(p) = &self.source {
            put("data", "source", path(p));
        }
        for (prefix, layout, lists) in [
            ("source", self.source_data.layout, self.source_data.lists()),
            ("target", self.target_data.layout, self.target_data.lists()),
        ] {
            if let Some(layout) = layout {
                let name = clap::ValueEnum::to_possible_value(&layout)
                    .map(|v| v.get_name().to_string())
                    .context("layout name")?;
                put("data", &format!("{prefix}_layout"), Value::String(name));
            }
            for (key, file) in [
                ("list", &lists.train),
                ("query_list", &lists.query),
                ("gallery_list", &lists.gallery),
            ] {
                if let Some(file) = file {
                    if !file.is_file() {
                        bail!(
                            "--{prefix}-{}: {}: no such file",
                            key.replace('_', "-"),
                            crate::io::shown(file)
                        );
                    }
                    put("data", &format!("{prefix}_{key}"), path(file));
                }
            }
        }
        if let Some(a) = &self.arch {
            put("model", "arch", Value::String(a.clone()));
        }
        for (key, p) in [
            ("weights", &self.weights),
            ("init", &self.init),
            ("init2", &self.init2),
        ] {
            if let Some(p) = p {
                if !p.is_file() {
                    bail!("--{key} {}: no such file", p.display());
                }
                put("model", key, path(p));
            }
        }
        for (key, v) in [
            ("epochs", self.epochs),
            ("iters", self.iters),
            ("batch_size", self.batch_size),
            ("num_instances", self.num_instances),
            ("height", self.height),
            ("width", self.width),
            ("eval_every", self.eval_every),
        ] {
            if let Some(v) = v {
                put("train", key, Value::Integer(v as i64));
            }
        }
        if let Some(seed) = self.seed {
            put(
                "train",
                "seed",
                Value::Integer(i64::try_from(seed).context("--seed")?),
            );
        }
        if let Some(lr) = self.lr {
            put("train", "lr", Value::Float(lr));
        }
        Ok(t)
    }

    fn changes_config(&self) -> bool {
        self.source.is_some()
            || self.source_data.given()
            || self.target.is_some()
            || self.target_data.given()
            || self.clusters.is_some()
            || self.arch.is_some()
            || self.weights.is_some()
            || self.init.is_some()
            || self.init2.is_some()
            || self.epochs.is_some()
            || self.iters.is_some()
            || self.batch_size.is_some()
            || self.num_instances.is_some()
            || self.lr.is_some()
            || self.height.is_some()
            || self.width.is_some()
            || self.seed.is_some()
            || self.eval_every.is_some()
            || !self.sets.is_empty()
    }
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let (config, out, mode) = if let Some(dir) = &args.resume {
        if args.changes_config() {
            bail!("--resume continues a run with its own config.toml; drop the other configuration flags");
        }
        let path = dir.join(RunDir::CONFIG);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("--resume {}: reading {}", dir.display(), path.display()))?;
        (
            RunConfig::from_toml(&text, &path.display().to_string())?,
            dir.clone(),
            RunMode::Resume,
        )
    } else {
        if let Some(out) = &args.out {
            if out.is_file() {
                bail!("--out {}: is a file, not a run directory", out.display());
            }
        }
        let file = args.config.as_deref().map(read_toml_file).transpose()?;
        let method = match (&args.method, file.as_ref().and_then(|f| f.get("method"))) {
            (Some(m), _) => m.clone(),
            (None, Some(toml::Value::String(m))) => m.clone(),
            _ => bail!(
                "give --method ({}) or a --config file naming one",
                METHODS.join(", ")
            ),
        };
        let defaults = method_defaults(&method)?;
        let mut sets = Vec::new();
        if let Some(k) = args.clusters {
            if !CLUSTERS_METHODS.contains(&method.as_str()) {
                bail!(
                    "--clusters sets the k-means cluster count of {}; method {method} clusters by DBSCAN (set its eps with --set {method}.cluster.eps=...)",
                    CLUSTERS_METHODS.join(" and ")
                );
            }
            sets.push(format!("{method}.cluster.algo=\"kmeans\""));
            sets.push(format!("{method}.cluster.k={k}"));
        }
        sets.extend(args.sets.iter().cloned());
        let config = resolve(&defaults, file.as_ref(), &args.overrides()?, &sets)?;
        let out = args.out.clone().context("--out RUN_DIR is required")?;
        let mode = if args.overwrite {
            RunMode::Overwrite
        } else {
            RunMode::New
        };
        (config, out, mode)
    };
    let device = Device::choose(args.device, args.adapter.as_deref()).context("--device")?;
    let summary = crate::train::train(
        config,
        TrainOptions {
            out,
            mode,
            device,
            max_epochs_this_run: args.epochs_this_run.map(|e| e as usize),
        },
    )?;
    if let Some(e) = &summary.last_eval {
        println!(
            "final: mAP {:.1}%  Rank-1 {:.1}%  Rank-5 {:.1}%  Rank-10 {:.1}%  (epoch {}, {})",
            100.0 * e.map,
            100.0 * e.rank1,
            100.0 * e.rank5,
            100.0 * e.rank10,
            e.epoch + 1,
            e.model
        );
    }
    Ok(())
}
