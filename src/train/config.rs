//! The configuration of a training run: one struct, whose defaults are each method's published
//! values (shared/ALGORITHMS.md), resolved in layers: method defaults -> a TOML preset or file
//! (`--config`) -> command-line flags -> `--set key=value`. The resolved result is written to the
//! run directory as `config.toml` and into every checkpoint's metadata.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::TrainError;
use crate::data::datasets::{DatasetSpec, Layout, ListFiles};
use crate::nn::{Pooling, ReidConfig};
use crate::optim::{LrSchedule, Warmup};

/// Where the images come from. Each dataset is a root, a layout and, for the generic `list`
/// layout, list files (the same pieces `unreid check-data` / `extract` take as `--layout`,
/// `--list`, `--query-list`, `--gallery-list`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DataConfig {
    /// Labelled source dataset root (UDA methods, source pre-training).
    pub source: Option<PathBuf>,
    /// Its layout (auto, market1501, duke, msmt17, msmt17-market, list; case-insensitive, the
    /// usual spellings such as `market` or `MSMT17_V1` accepted).
    pub source_layout: Option<String>,
    /// The source's train / query / gallery list files (`relative/path pid camid` per line).
    pub source_list: Option<PathBuf>,
    pub source_query_list: Option<PathBuf>,
    pub source_gallery_list: Option<PathBuf>,
    /// Unlabelled target dataset root; its query/gallery splits are what evaluation reports.
    pub target: Option<PathBuf>,
    pub target_layout: Option<String>,
    pub target_list: Option<PathBuf>,
    pub target_query_list: Option<PathBuf>,
    pub target_gallery_list: Option<PathBuf>,
}

impl DataConfig {
    /// What to load for the source (domain 0), or None when no source is configured. Errors:
    /// an unknown layout name, or list files without a root.
    pub fn source_spec(&self) -> Result<Option<DatasetSpec>, TrainError> {
        Self::spec(
            "source",
            &self.source,
            &self.source_layout,
            ListFiles {
                train: self.source_list.clone(),
                query: self.source_query_list.clone(),
                gallery: self.source_gallery_list.clone(),
            },
            0,
        )
    }

    /// What to load for the target (domain 1), or None when no target is configured.
    pub fn target_spec(&self) -> Result<Option<DatasetSpec>, TrainError> {
        Self::spec(
            "target",
            &self.target,
            &self.target_layout,
            ListFiles {
                train: self.target_list.clone(),
                query: self.target_query_list.clone(),
                gallery: self.target_gallery_list.clone(),
            },
            1,
        )
    }

    fn spec(
        which: &str,
        root: &Option<PathBuf>,
        layout: &Option<String>,
        lists: ListFiles,
        domain: u8,
    ) -> Result<Option<DatasetSpec>, TrainError> {
        let layout = match layout {
            None => Layout::Auto,
            Some(name) => Layout::parse(name)
                .map_err(|e| TrainError::Config(format!("data.{which}_layout: {e}")))?,
        };
        let Some(root) = root else {
            let has_lists =
                lists.train.is_some() || lists.query.is_some() || lists.gallery.is_some();
            if has_lists || layout != Layout::Auto {
                return Err(TrainError::Config(format!(
                    "data.{which}_layout / data.{which}_*list are set but data.{which} (the dataset root) is not"
                )));
            }
            return Ok(None);
        };
        Ok(Some(DatasetSpec {
            root: root.clone(),
            layout,
            lists,
            domain,
        }))
    }
}

/// The network.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelConfig {
    /// resnet18, resnet34, resnet50 or mobilenet_v2.
    pub arch: String,
    /// Stride of ResNet's layer4 (1 for re-ID).
    pub last_stride: usize,
    /// `avg` or `gem`.
    pub pooling: String,
    /// Dropout before the classifier.
    pub dropout: f64,
    /// ImageNet (backbone) weights to start from; the classifier is always new.
    pub weights: Option<PathBuf>,
    /// A trained checkpoint (e.g. a `source` run's best.safetensors) to start from.
    pub init: Option<PathBuf>,
    /// A second checkpoint (MMT's second net).
    pub init2: Option<PathBuf>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            arch: "resnet50".into(),
            last_stride: 1,
            pooling: "avg".into(),
            dropout: 0.0,
            weights: None,
            init: None,
            init2: None,
        }
    }
}

impl ModelConfig {
    pub fn pooling(&self) -> Result<Pooling, TrainError> {
        match self.pooling.as_str() {
            "avg" => Ok(Pooling::Avg),
            "gem" => Ok(Pooling::Gem),
            other => Err(TrainError::Config(format!(
                "model.pooling = {other:?} (avg or gem)"
            ))),
        }
    }

    /// The `ReidNet` settings for a model with `classes` classifier rows (None: no classifier).
    pub fn reid(&self, classes: Option<usize>, seed: u64) -> Result<ReidConfig, TrainError> {
        Ok(ReidConfig {
            arch: self.arch.clone(),
            last_stride: self.last_stride,
            pooling: self.pooling()?,
            neck: true,
            dropout: self.dropout,
            classes,
            seed,
        })
    }
}

/// The optimisation schedule and the batches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    pub epochs: usize,
    /// Steps per epoch.
    pub iters: usize,
    /// Images per batch and per domain stream (P x K).
    pub batch_size: usize,
    /// K: images per identity in a PK batch.
    pub num_instances: usize,
    /// Images per BN group (ghost batch norm reproducing the published multi-GPU runs, section 12);
    /// 0 = the whole batch (per domain) in one group.
    pub bn_group: usize,
    /// Adam learning rate.
    pub lr: f64,
    pub weight_decay: f64,
    /// Step decay x `gamma` at the start of these epochs.
    pub milestones: Vec<usize>,
    pub gamma: f64,
    /// Linear warm-up from lr x `warmup_factor` over this many epochs (0 = none).
    pub warmup_epochs: usize,
    pub warmup_factor: f64,
    /// Input size.
    pub height: usize,
    pub width: usize,
    pub seed: u64,
    /// Evaluate every N epochs (and after the last one); 0 = only after the last.
    pub eval_every: usize,
    /// One metrics line (and one plain log line) every N steps.
    pub log_every: usize,
    /// Images per extraction batch.
    pub eval_batch_size: usize,
}

impl Default for ScheduleConfig {
    /// Source pre-training's published schedule (MMT: 80 epochs x 100 iters, warm-up 10, steps 40 / 70).
    fn default() -> Self {
        ScheduleConfig {
            epochs: 80,
            iters: 100,
            batch_size: 64,
            num_instances: 4,
            bn_group: 16,
            lr: 3.5e-4,
            weight_decay: 5e-4,
            milestones: vec![40, 70],
            gamma: 0.1,
            warmup_epochs: 10,
            warmup_factor: 0.01,
            height: 256,
            width: 128,
            seed: 0,
            eval_every: 10,
            log_every: 10,
            eval_batch_size: 64,
        }
    }
}

impl ScheduleConfig {
    /// The learning rate of `epoch` (0-based): step decay at the milestones, linear warm-up.
    pub fn lr_at(&self, epoch: usize) -> f64 {
        let schedule = LrSchedule::Step {
            milestones: self.milestones.clone(),
            gamma: self.gamma,
        };
        let warmup = (self.warmup_epochs > 0).then_some(Warmup {
            epochs: self.warmup_epochs,
            factor: self.warmup_factor,
        });
        schedule.lr(self.lr, epoch, warmup)
    }

    /// Whether evaluation runs after `epoch`.
    pub fn evaluates_after(&self, epoch: usize) -> bool {
        epoch + 1 == self.epochs || (self.eval_every > 0 && (epoch + 1) % self.eval_every == 0)
    }

    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        for (key, v) in [
            ("train.epochs", self.epochs),
            ("train.iters", self.iters),
            ("train.batch_size", self.batch_size),
            ("train.num_instances", self.num_instances),
            ("train.height", self.height),
            ("train.width", self.width),
            ("train.log_every", self.log_every),
            ("train.eval_batch_size", self.eval_batch_size),
        ] {
            if v == 0 {
                return bad(format!("{key} must be at least 1"));
            }
        }
        if self.batch_size / self.num_instances < 2 {
            return bad(format!(
                "train.batch_size {} / train.num_instances {} leaves fewer than two identities per batch: batch-hard mining needs negatives",
                self.batch_size, self.num_instances
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("train.lr {} must be a positive number", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(format!(
                "train.weight_decay {} must be >= 0",
                self.weight_decay
            ));
        }
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return bad(format!("train.gamma {} must be positive", self.gamma));
        }
        if !(self.warmup_factor.is_finite() && self.warmup_factor > 0.0) {
            return bad(format!(
                "train.warmup_factor {} must be positive",
                self.warmup_factor
            ));
        }
        Ok(())
    }
}

/// A whole run's configuration: the method, its data, model and schedule, and the method's own
/// section (`[source]`, `[spcl]`, ...), which the method parses with its own defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunConfig {
    pub method: String,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: ScheduleConfig,
    /// The method's section, keyed by the method's name.
    #[serde(flatten)]
    pub sections: BTreeMap<String, toml::Value>,
}

impl RunConfig {
    /// A method's defaults: its schedule and model settings, and its `[method]` section written
    /// from the section struct's `Default` (the published values).
    ///
    /// Errors: the section struct does not serialise to a TOML table (a programming error in the
    /// method's config struct, reported rather than replaced by an empty section).
    pub fn with_section<T: serde::Serialize>(
        method: &str,
        model: ModelConfig,
        train: ScheduleConfig,
        section: &T,
    ) -> Result<RunConfig, TrainError> {
        let value = toml::Value::try_from(section).map_err(|e| {
            TrainError::Config(format!("the [{method}] defaults do not serialise: {e}"))
        })?;
        if !value.is_table() {
            return Err(TrainError::Config(format!(
                "the [{method}] defaults serialise to {value}, not a table"
            )));
        }
        Ok(RunConfig {
            method: method.into(),
            data: DataConfig::default(),
            model,
            train,
            sections: BTreeMap::from([(method.to_string(), value)]),
        })
    }

    /// The method's own section (empty when the file has none).
    pub fn section(&self) -> toml::Table {
        match self.sections.get(&self.method) {
            Some(toml::Value::Table(t)) => t.clone(),
            _ => toml::Table::new(),
        }
    }

    /// Parses the method's section into its config struct (its `Default` fills what is absent);
    /// unknown keys are an error naming them.
    pub fn method_config<T: serde::de::DeserializeOwned>(&self) -> Result<T, TrainError> {
        toml::Value::Table(self.section())
            .try_into()
            .map_err(|e| TrainError::Config(format!("[{}] section: {e}", self.method)))
    }

    pub fn to_toml(&self) -> Result<String, TrainError> {
        toml::to_string_pretty(self)
            .map_err(|e| TrainError::Config(format!("writing the config: {e}")))
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<RunConfig, TrainError> {
        let cfg: RunConfig =
            toml::from_str(text).map_err(|e| TrainError::Config(format!("{origin}: {e}")))?;
        cfg.check_sections(origin)?;
        Ok(cfg)
    }

    fn check_sections(&self, origin: &str) -> Result<(), TrainError> {
        for key in self.sections.keys() {
            if key != &self.method {
                return Err(TrainError::Config(format!(
                    "{origin}: unknown key or section {key:?} (the method's own section is [{}])",
                    self.method
                )));
            }
        }
        Ok(())
    }
}

/// Merges `overlay` into `base` recursively (tables merge, every other value replaces).
pub fn merge_toml(base: &mut toml::Table, overlay: &toml::Table) {
    for (k, v) in overlay {
        match (base.get_mut(k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_toml(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

/// Applies `key.path=value` to a TOML table; the value is read as TOML (numbers, booleans,
/// arrays, quoted strings) and otherwise taken as a plain string.
pub fn set_key(table: &mut toml::Table, assignment: &str) -> Result<(), TrainError> {
    let (key, raw) = assignment.split_once('=').ok_or_else(|| {
        TrainError::Config(format!(
            "--set {assignment:?}: expected key=value (e.g. train.lr=0.00035)"
        ))
    })?;
    let key = key.trim();
    if key.is_empty() || key.split('.').any(str::is_empty) {
        return Err(TrainError::Config(format!(
            "--set {assignment:?}: empty key"
        )));
    }
    let raw = raw.trim();
    let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let parts: Vec<&str> = key.split('.').collect();
    let mut table = table;
    for part in &parts[..parts.len() - 1] {
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => {
                return Err(TrainError::Config(format!(
                    "--set {assignment:?}: {part} is a value, not a section"
                )))
            }
        };
    }
    table.insert(parts[parts.len() - 1].to_string(), value);
    Ok(())
}

/// Reads a TOML file as a table (for `--config`), errors naming the file.
pub fn read_toml_file(path: &Path) -> Result<toml::Table, TrainError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TrainError::Config(format!("reading {}: {e}", path.display())))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    toml::from_str(text).map_err(|e| TrainError::Config(format!("{}: {e}", path.display())))
}

/// Resolves a run's configuration: the method's defaults, then `file` (a preset), then
/// `overrides` (flags, already as a table), then `--set` assignments. Unknown keys anywhere are an
/// error naming them.
pub fn resolve(
    defaults: &RunConfig,
    file: Option<&toml::Table>,
    overrides: &toml::Table,
    sets: &[String],
) -> Result<RunConfig, TrainError> {
    let mut table = toml::Table::try_from(defaults)
        .map_err(|e| TrainError::Config(format!("method defaults: {e}")))?;
    if let Some(file) = file {
        if let Some(m) = file.get("method").and_then(|m| m.as_str()) {
            if m != defaults.method {
                return Err(TrainError::Config(format!(
                    "the config file is for method {m:?} but --method is {:?}",
                    defaults.method
                )));
            }
        }
        merge_toml(&mut table, file);
    }
    merge_toml(&mut table, overrides);
    for s in sets {
        set_key(&mut table, s)?;
    }
    let text = toml::to_string(&table).map_err(|e| TrainError::Config(e.to_string()))?;
    let cfg = RunConfig::from_toml(&text, "configuration")?;
    cfg.train.validate()?;
    cfg.model.pooling()?;
    Ok(cfg)
}
