//! Weights in and out of a `Module`, by name.
//!
//! In: `load_weights` / `read_checkpoint` read safetensors, PyTorch's zip format (`.pth`, `.pt`,
//! `.pth.tar` since PyTorch 1.6) and its legacy pickle format, told apart by content, never by
//! extension. PyTorch files go through a restricted reader that runs no code (`nn::pickle`);
//! names are mapped from the layout recognised (torchvision, SpCL/MMT/Cluster Contrast `base.N`,
//! fast-reid, `module.` prefixes, SpCL DSBN; see `nn::layout`); fp16/bf16/f64 become f32.
//! Missing backbone tensors are an error unless `LoadOptions::allow_missing`; unexpected keys are
//! reported; a checkpoint of another architecture is named as such; a refused load changes nothing.
//!
//! Out: `save_safetensors` / `save_tensors` write safetensors atomically (`crate::io::write_atomic`);
//! `convert` turns any readable checkpoint into an unreid safetensors file with provenance metadata.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use super::layout::{guess_arch, map_names, LayoutInfo};
use super::pth::{detect_format, read_torch, CheckpointFormat};
use super::{Module, Param};
use crate::{random, Tensor};

/// Everything that can go wrong reading, loading or writing weights; each names the file and,
/// where there is one, the tensor.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read weights {path}: {error}")]
    Io {
        path: PathBuf,
        /// Kept out of `source()`: the message already includes it.
        error: std::io::Error,
    },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error(
        "{path}: refused: the checkpoint's pickle names the global `{global}`, which is not a \
         tensor, storage or OrderedDict constructor (nothing was executed; only what torch.save \
         writes for tensors and containers is read)"
    )]
    ForbiddenGlobal { path: PathBuf, global: String },
    #[error("{path}: tensor `{tensor}` {message}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    #[error("{path}: {tensor} has shape {file:?} in the file but {model:?} in the model")]
    Shape {
        path: PathBuf,
        tensor: String,
        file: Vec<usize>,
        model: Vec<usize>,
    },
    /// `detail`: the layout recognised and an example tensor that differs.
    #[error("{path} looks like a {file_arch} checkpoint but the model is a {model_arch} {detail}")]
    WrongArch {
        path: PathBuf,
        file_arch: String,
        model_arch: String,
        detail: String,
    },
    /// `names`: the first few missing names, then the layout and what to do.
    #[error("{path}: {count} {what} tensors missing from the file: {names}")]
    Missing {
        path: PathBuf,
        what: &'static str,
        count: usize,
        names: String,
    },
    #[error("{path} holds none of the model's tensors ({layout}; its names start {example})")]
    NothingLoaded {
        path: PathBuf,
        layout: String,
        example: String,
    },
    #[error("cannot write weights {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error(transparent)]
    Runtime(#[from] crate::Error),
}

type Result<T> = std::result::Result<T, WeightsError>;

/// What to do when a classifier's shape differs from the checkpoint's (source vs target classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ClassifierPolicy {
    /// Refuse, like any other shape mismatch.
    #[default]
    Error,
    /// Keep the model's own classifier and report the key as skipped.
    Skip,
    /// Skip it and re-initialise the model's classifier (N(0, 0.001), bias 0).
    Reinit,
}

#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub classifier: ClassifierPolicy,
    /// Keys starting with one of these are the classifier (`classifier.` for ReidNet).
    pub classifier_prefixes: Vec<String>,
    /// Keys starting with one of these belong to the head (neck, GeM, classifier), which an
    /// ImageNet or backbone-only checkpoint lacks: missing head tensors are reported, not refused.
    pub head_prefixes: Vec<String>,
    /// Load even when backbone tensors are missing (they stay as initialised and are reported).
    pub allow_missing: bool,
    /// Fail when the model has any tensor the file lacks, head included.
    pub strict: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            classifier: ClassifierPolicy::Error,
            classifier_prefixes: vec!["classifier.".into()],
            head_prefixes: vec!["classifier.".into(), "feat_bn.".into(), "gem.".into()],
            allow_missing: false,
            strict: false,
        }
    }
}

/// What a load did, by key.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// The file format and the naming layout recognised (e.g. `PyTorch zip, SpCL/... base.N,
    /// module. prefix stripped`).
    pub layout: String,
    pub loaded: Vec<String>,
    /// In the model, not in the file (left as initialised).
    pub missing: Vec<String>,
    /// In the file, not in the model (ignored).
    pub unexpected: Vec<String>,
    /// Classifier keys of another shape, skipped on request.
    pub skipped: Vec<String>,
    /// Remarks on the layout (e.g. MMT's stem).
    pub notes: Vec<String>,
}

impl LoadReport {
    /// One line per thing a user should see (`warning: ` is the caller's prefix): each missing,
    /// unexpected and skipped tensor, and each note.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        out.extend(
            self.missing
                .iter()
                .map(|k| format!("missing tensor {k} (left as initialised)")),
        );
        out.extend(
            self.unexpected
                .iter()
                .map(|k| format!("unexpected tensor {k} in the file (ignored)")),
        );
        out.extend(
            self.skipped
                .iter()
                .map(|k| format!("classifier tensor {k} skipped (other number of classes)")),
        );
        out.extend(self.notes.iter().cloned());
        out
    }
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} tensors loaded", self.loaded.len())?;
        if !self.layout.is_empty() {
            write!(f, " ({})", self.layout)?;
        }
        for (what, keys) in [
            ("missing", &self.missing),
            ("unexpected", &self.unexpected),
            ("skipped", &self.skipped),
        ] {
            if !keys.is_empty() {
                write!(f, "; {what}: {}", keys.join(", "))?;
            }
        }
        Ok(())
    }
}

/// A tensor read to the host: shape and f32 values.
pub type HostTensor = (Vec<usize>, Vec<f32>);

fn safetensors_to_f32(path: &Path, name: &str, dtype: Dtype, data: &[u8]) -> Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        // Integer entries (num_batches_tracked, labels) are kept as f32.
        Dtype::I64 => data
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        Dtype::I32 => data
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        other => {
            return Err(WeightsError::Tensor {
                path: path.to_path_buf(),
                tensor: name.to_string(),
                message: format!(
                    "has dtype {other:?}, which this loader does not read (F32, F64, F16, BF16, I64, I32)"
                ),
            })
        }
    })
}

fn map_file(path: &Path) -> Result<memmap2::Mmap> {
    let io = |error| WeightsError::Io {
        path: path.to_path_buf(),
        error,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the file is only read, and not expected to change while mapped.
    unsafe { memmap2::Mmap::map(&file) }.map_err(io)
}

fn parse_safetensors<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        message: format!("not a valid safetensors file: {e}"),
    })
}

fn safetensors_tensors(path: &Path, bytes: &[u8]) -> Result<BTreeMap<String, HostTensor>> {
    let st = parse_safetensors(path, bytes)?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        let v = safetensors_to_f32(path, &name, view.dtype(), view.data())?;
        out.insert(name, (view.shape().to_vec(), v));
    }
    Ok(out)
}

/// Every tensor of a safetensors file under its own name (no mapping), as f32 with its shape
/// (F32/F64/F16/BF16/I64/I32 accepted).
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, HostTensor>> {
    let map = map_file(path)?;
    safetensors_tensors(path, &map)
}

/// The safetensors file's `__metadata__` (empty when none).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    let map = map_file(path)?;
    let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| WeightsError::Format {
        path: path.to_path_buf(),
        message: format!("not a valid safetensors file: {e}"),
    })?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// A checkpoint read and mapped to unreid's names, not yet loaded into a model.
pub struct Checkpoint {
    pub path: PathBuf,
    pub format: CheckpointFormat,
    /// The top-level key the state dict sat under (`state_dict`, `model`), if any.
    pub container: Option<String>,
    pub layout: LayoutInfo,
    /// unreid name -> shape and f32 values.
    pub tensors: BTreeMap<String, HostTensor>,
    /// PyTorch dtypes found (e.g. `float16`), for the report; empty for safetensors.
    pub source_dtypes: Vec<String>,
    /// Other entries of the file (PyTorch: `epoch`, `best_mAP`, ...; safetensors: its metadata).
    pub extras: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The architecture the names look like (`resnet50`, ...; see `nn::layout::guess_arch`).
    pub fn arch(&self) -> Option<String> {
        guess_arch(self.tensors.keys().map(String::as_str))
    }

    /// Number of domain-specific BN sets (`X.dsbn.D.*` -> D + 1), 1 without DSBN.
    pub fn domains(&self) -> usize {
        self.tensors
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
            .map_or(1, |d| d + 1)
    }

    /// `format, layout` for reports.
    pub fn describe(&self) -> String {
        let mut s = format!("{}, {}", self.format, self.layout);
        if let Some(c) = &self.container {
            s.push_str(&format!(", under `{c}`"));
        }
        if !self.source_dtypes.is_empty() {
            s.push_str(&format!(", {}", self.source_dtypes.join("/")));
        }
        s
    }

    /// Loads the tensors into `module` by name. Everything is checked before anything changes,
    /// so a refused load leaves the model as it was. Errors: another architecture
    /// (`WrongArch`), a shape mismatch (`Shape`, except classifier keys under
    /// `ClassifierPolicy::Skip`/`Reinit`), missing backbone tensors unless `allow_missing`
    /// (`Missing`), any missing tensor under `strict`, no tensor matching at all (`NothingLoaded`).
    pub fn apply(&self, module: &dyn Module, opts: &LoadOptions) -> Result<LoadReport> {
        let path = &self.path;
        let named = module.named();
        let starts = |k: &str, ps: &[String]| ps.iter().any(|p| k.starts_with(p.as_str()));
        let layout = self.describe();
        let mut report = LoadReport {
            layout: layout.clone(),
            notes: self.layout.notes.clone(),
            ..Default::default()
        };
        // Another architecture: say which, before listing hundreds of missing names.
        let model_arch = guess_arch(named.iter().map(|(n, _)| n.as_str()));
        if let (Some(m), Some(f)) = (&model_arch, self.arch()) {
            if *m != f {
                let example = named
                    .iter()
                    .find_map(|(n, p)| match self.tensors.get(n) {
                        None => Some(format!("; e.g. {n} is not in the file")),
                        Some(t) if t.0 != p.shape() => Some(format!(
                            "; e.g. {n} has shape {:?} in the file but {:?} in the model",
                            t.0,
                            p.shape()
                        )),
                        _ => None,
                    })
                    .unwrap_or_default();
                return Err(WeightsError::WrongArch {
                    path: path.clone(),
                    file_arch: f,
                    model_arch: m.clone(),
                    detail: format!("({layout}){example}"),
                });
            }
        }
        let mut plan: Vec<(&String, &Param, &HostTensor)> = Vec::new();
        let mut reinit: Vec<&Param> = Vec::new();
        let mut missing_backbone = Vec::new();
        for (name, p) in &named {
            match self.tensors.get(name) {
                None => {
                    if !starts(name, &opts.head_prefixes) {
                        missing_backbone.push(name.clone());
                    }
                    report.missing.push(name.clone());
                }
                Some(t) if t.0 != p.shape() => {
                    if starts(name, &opts.classifier_prefixes)
                        && opts.classifier != ClassifierPolicy::Error
                    {
                        report.skipped.push(name.clone());
                        if opts.classifier == ClassifierPolicy::Reinit {
                            reinit.push(p);
                        }
                    } else {
                        return Err(WeightsError::Shape {
                            path: path.clone(),
                            tensor: name.clone(),
                            file: t.0.clone(),
                            model: p.shape(),
                        });
                    }
                }
                Some(t) => plan.push((name, p, t)),
            }
        }
        let known: HashSet<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
        report.unexpected = self
            .tensors
            .keys()
            .filter(|k| !known.contains(k.as_str()))
            .cloned()
            .collect();
        if plan.is_empty() {
            return Err(WeightsError::NothingLoaded {
                path: path.clone(),
                layout,
                example: self
                    .tensors
                    .keys()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let refuse = |what: &'static str, names: &[String]| {
            let shown: Vec<&str> = names.iter().take(8).map(String::as_str).collect();
            let more = names.len().saturating_sub(shown.len());
            let file_dsbn = self.domains() > 1;
            let model_dsbn = named.iter().any(|(n, _)| n.contains(".dsbn."));
            let mut hint = String::new();
            if more > 0 {
                hint.push_str(&format!(" and {more} more"));
            }
            if file_dsbn && !model_dsbn {
                hint.push_str(&format!(
                    "; the file has domain-specific BN ({} sets) but the model has plain BN",
                    self.domains()
                ));
            } else if model_dsbn && !file_dsbn {
                hint.push_str("; the model has domain-specific BN but the file has plain BN");
            }
            if what == "backbone" {
                hint.push_str(
                    " (LoadOptions::allow_missing, --allow-missing on the command line, loads \
                     anyway and leaves them as initialised)",
                );
            }
            WeightsError::Missing {
                path: path.clone(),
                what,
                count: names.len(),
                names: format!("{} ({layout}){hint}", shown.join(", ")),
            }
        };
        if !missing_backbone.is_empty() && !opts.allow_missing {
            return Err(refuse("backbone", &missing_backbone));
        }
        if opts.strict && !report.missing.is_empty() {
            return Err(refuse("model (strict)", &report.missing));
        }
        for (name, p, (shape, values)) in plan {
            let device = p.get().device().clone();
            p.set(Tensor::from_slice(values, shape, &device)?);
            report.loaded.push(name.clone());
        }
        for (i, p) in reinit.into_iter().enumerate() {
            let t = p.get();
            let fresh = if t.rank() == 1 {
                Tensor::zeros(t.shape(), t.device())?
            } else {
                Tensor::randn(
                    t.shape(),
                    0.0,
                    0.001,
                    random::bits(0xc1a5, i as u64),
                    t.device(),
                )?
            };
            p.set(fresh);
        }
        Ok(report)
    }
}

/// Reads any supported checkpoint (safetensors, PyTorch zip, PyTorch legacy; detected by
/// content) and maps its names to unreid's (`nn::layout::map_names`). Never executes code from
/// the file: a pickle naming any global but torch's tensor/storage rebuilds and
/// `collections.OrderedDict` is refused with `ForbiddenGlobal`.
pub fn read_checkpoint(path: &Path) -> Result<Checkpoint> {
    let map = map_file(path)?;
    let format = detect_format(path, &map)?;
    let (raw, container, source_dtypes, extras) = match format {
        CheckpointFormat::Safetensors => {
            let tensors = safetensors_tensors(path, &map)?;
            let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| WeightsError::Format {
                path: path.to_path_buf(),
                message: format!("not a valid safetensors file: {e}"),
            })?;
            let extras = meta
                .metadata()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect();
            (tensors, None, Vec::new(), extras)
        }
        _ => {
            let t = read_torch(path, &map, format)?;
            let mut dtypes: Vec<String> = t.tensors.values().map(|(d, _)| d.to_string()).collect();
            dtypes.sort();
            dtypes.dedup();
            let tensors = t.tensors.into_iter().map(|(k, (_, v))| (k, v)).collect();
            (tensors, t.container, dtypes, t.extras)
        }
    };
    let (tensors, layout) = map_names(raw);
    Ok(Checkpoint {
        path: path.to_path_buf(),
        format,
        container,
        layout,
        tensors,
        source_dtypes,
        extras,
    })
}

/// Reads `path` (any supported format) and loads it into `module`: `read_checkpoint` then
/// `Checkpoint::apply`. The one entry point for `--weights` / `--init`.
pub fn load_weights(module: &dyn Module, path: &Path, opts: &LoadOptions) -> Result<LoadReport> {
    read_checkpoint(path)?.apply(module, opts)
}

/// `load_weights` under its former name (any supported format, not only safetensors).
pub fn load_safetensors(
    module: &dyn Module,
    path: &Path,
    opts: &LoadOptions,
) -> Result<LoadReport> {
    load_weights(module, path, opts)
}

/// Writes `tensors` (f32), `ints` (i64) and `metadata` to `path` as safetensors, atomically
/// (`crate::io::write_atomic`), creating the parent folder.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    ints: &[(String, Vec<usize>, Vec<i64>)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let write = |message: String| WeightsError::Write {
        path: path.to_path_buf(),
        message,
    };
    let mut views = Vec::new();
    for (name, shape, v) in tensors {
        views.push((
            name.clone(),
            safetensors::tensor::TensorView::new(
                Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(v),
            )
            .map_err(|e| write(format!("{name}: {e}")))?,
        ));
    }
    for (name, shape, v) in ints {
        views.push((
            name.clone(),
            safetensors::tensor::TensorView::new(
                Dtype::I64,
                shape.clone(),
                bytemuck::cast_slice(v),
            )
            .map_err(|e| write(format!("{name}: {e}")))?,
        ));
    }
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| write(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| write(format!("creating {}: {e}", dir.display())))?;
    }
    crate::io::write_atomic(path, &bytes).map_err(|e| write(e.to_string()))
}

/// Saves every parameter and buffer of `module` under its torchvision name (atomic write).
pub fn save_safetensors(
    module: &dyn Module,
    path: &Path,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut tensors = Vec::new();
    for (name, p) in module.named() {
        let t = p.get();
        tensors.push((name, t.shape().to_vec(), t.to_vec()?));
    }
    save_tensors(path, &tensors, &[], metadata)
}

/// Converts any readable checkpoint to an unreid safetensors file: every tensor under its mapped
/// name as f32 (tensors no layout claims keep their name without `module.`), with provenance
/// metadata: `converted_from` (file name), `source_format`, `source_layout`, `source_container`,
/// `source_dtypes`, `source_entries` (JSON of the file's other entries, e.g. epoch and best_mAP),
/// `arch` (as the names look) and `converter`. Refuses to replace `input` itself, or an existing
/// `output` unless `overwrite`. Returns the checkpoint that was written.
pub fn convert(input: &Path, output: &Path, overwrite: bool) -> Result<Checkpoint> {
    let write = |message: String| WeightsError::Write {
        path: output.to_path_buf(),
        message,
    };
    if output.exists() {
        let same = std::fs::canonicalize(input).ok() == std::fs::canonicalize(output).ok();
        if same {
            return Err(write("it is the input file".into()));
        }
        if !overwrite {
            return Err(write("it exists (overwrite to replace it)".into()));
        }
    }
    let ckpt = read_checkpoint(input)?;
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = ckpt
        .tensors
        .iter()
        .map(|(k, (s, v))| (k.clone(), s.clone(), v.clone()))
        .collect();
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let meta = HashMap::from([
        ("converted_from".to_string(), name),
        ("source_format".into(), ckpt.format.to_string()),
        ("source_layout".into(), ckpt.layout.to_string()),
        (
            "source_container".into(),
            ckpt.container.clone().unwrap_or_default(),
        ),
        ("source_dtypes".into(), ckpt.source_dtypes.join(",")),
        (
            "source_entries".into(),
            serde_json::to_string(&ckpt.extras).map_err(|e| write(e.to_string()))?,
        ),
        (
            "arch".into(),
            ckpt.arch().unwrap_or_else(|| "unknown".into()),
        ),
        (
            "converter".into(),
            format!("unreid convert {}", env!("CARGO_PKG_VERSION")),
        ),
    ]);
    save_tensors(output, &tensors, &[], meta)?;
    Ok(ckpt)
}
