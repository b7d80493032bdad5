//! safetensors weights with torchvision names: load (reporting missing and unexpected keys,
//! refusing shape mismatches) and atomic save (temporary file + rename).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context};
use safetensors::{Dtype, SafeTensors};

use super::{Module, Param};
use crate::{random, Tensor};

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
    /// Fail when the model has parameters the file lacks.
    pub strict: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            classifier: ClassifierPolicy::Error,
            classifier_prefixes: vec!["classifier.".into()],
            strict: false,
        }
    }
}

/// What a load did, by key.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    pub loaded: Vec<String>,
    /// In the model, not in the file (left as initialised).
    pub missing: Vec<String>,
    /// In the file, not in the model (ignored).
    pub unexpected: Vec<String>,
    /// Classifier keys of another shape, skipped on request.
    pub skipped: Vec<String>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} tensors loaded", self.loaded.len())?;
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

fn to_f32(name: &str, dtype: Dtype, data: &[u8]) -> anyhow::Result<Vec<f32>> {
    Ok(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        other => {
            bail!("{name}: dtype {other:?} is not a float type this loader reads (F32, F64, BF16)")
        }
    })
}

/// Reads every tensor of a safetensors file as f32 host values with its shape.
/// A tensor read to the host: shape and f32 values.
pub type HostTensor = (Vec<usize>, Vec<f32>);

pub fn read_tensors(path: &Path) -> anyhow::Result<BTreeMap<String, HostTensor>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("opening weights {}", path.display()))?;
    // SAFETY: the file is only read, and not expected to change while mapped.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let st = SafeTensors::deserialize(&map)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    let mut out = BTreeMap::new();
    for (name, view) in st.tensors() {
        if matches!(view.dtype(), Dtype::I64 | Dtype::I32) {
            // Integer entries (num_batches_tracked, labels) are kept only as f32 when small.
            let v: Vec<f32> = match view.dtype() {
                Dtype::I64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
                _ => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as f32)
                    .collect(),
            };
            out.insert(name, (view.shape().to_vec(), v));
            continue;
        }
        let v =
            to_f32(&name, view.dtype(), view.data()).with_context(|| path.display().to_string())?;
        out.insert(name, (view.shape().to_vec(), v));
    }
    Ok(out)
}

/// The file's `__metadata__` (empty when none).
pub fn read_metadata(path: &Path) -> anyhow::Result<HashMap<String, String>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    Ok(meta.metadata().clone().unwrap_or_default())
}

/// Loads `path` into `module` by name. Shape mismatches are errors naming the key and both shapes
/// (except classifier keys under `ClassifierPolicy::Skip`/`Reinit`); `num_batches_tracked` is ignored.
pub fn load_safetensors(
    module: &dyn Module,
    path: &Path,
    opts: &LoadOptions,
) -> anyhow::Result<LoadReport> {
    let mut file = read_tensors(path)?;
    file.retain(|k, _| !k.ends_with("num_batches_tracked"));
    let mut report = LoadReport::default();
    let named = module.named();
    let is_classifier = |k: &str| {
        opts.classifier_prefixes
            .iter()
            .any(|p| k.starts_with(p.as_str()))
    };
    // Check every shape before changing anything, so a refused load leaves the model untouched.
    let mut plan: Vec<(&String, &Param, &HostTensor)> = Vec::new();
    let mut reinit: Vec<&Param> = Vec::new();
    for (name, p) in &named {
        match file.get(name) {
            None => report.missing.push(name.clone()),
            Some(t) if t.0 != p.shape() => {
                if is_classifier(name) && opts.classifier != ClassifierPolicy::Error {
                    report.skipped.push(name.clone());
                    if opts.classifier == ClassifierPolicy::Reinit {
                        reinit.push(p);
                    }
                } else {
                    bail!(
                        "{}: {name} has shape {:?} in the file but {:?} in the model",
                        path.display(),
                        t.0,
                        p.shape()
                    );
                }
            }
            Some(t) => plan.push((name, p, t)),
        }
    }
    let known: std::collections::HashSet<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    report.unexpected = file
        .keys()
        .filter(|k| !known.contains(k.as_str()))
        .cloned()
        .collect();
    if opts.strict && !report.missing.is_empty() {
        bail!(
            "{}: missing keys {}",
            path.display(),
            report.missing.join(", ")
        );
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

/// Writes `tensors` (f32) and `metadata` to `path` atomically: a temporary file in the same folder,
/// then a rename, so a crash never leaves a half-written file under the final name.
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    ints: &[(String, Vec<usize>, Vec<i64>)],
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let mut views = Vec::new();
    for (name, shape, v) in tensors {
        views.push((
            name.clone(),
            safetensors::tensor::TensorView::new(
                Dtype::F32,
                shape.clone(),
                bytemuck::cast_slice(v),
            )?,
        ));
    }
    for (name, shape, v) in ints {
        views.push((
            name.clone(),
            safetensors::tensor::TensorView::new(
                Dtype::I64,
                shape.clone(),
                bytemuck::cast_slice(v),
            )?,
        ));
    }
    let bytes = safetensors::serialize(views, Some(metadata))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    crate::io::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// Saves every parameter and buffer of `module` under its torchvision name (atomic write).
pub fn save_safetensors(
    module: &dyn Module,
    path: &Path,
    metadata: HashMap<String, String>,
) -> anyhow::Result<()> {
    let mut tensors = Vec::new();
    for (name, p) in module.named() {
        let t = p.get();
        tensors.push((name, t.shape().to_vec(), t.to_vec()?));
    }
    save_tensors(path, &tensors, &[], metadata)
}
