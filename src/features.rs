//! The features file shared by `unreid extract`, `cluster` and `evaluate`: one safetensors file with
//!
//! - `features`: f32 [N, D] (one row per image; f64 is accepted and converted),
//! - `pids`, `camids`: i64 [N] (i32 accepted), -1 = unknown for that row; absent when not known at all,
//! - metadata key `paths`: a JSON array of the N image paths, in row order (optional);
//! - any other metadata keys: provenance written by `unreid extract` (`arch`, `weights`,
//!   `weights_sha256`, `height`, `width`, `split`, `layout`, `root`: the dataset root the relative
//!   `paths` are resolved against), kept as strings.
//!
//! Writes are atomic (temporary file in the same folder, then rename), so a killed run never leaves
//! a truncated file behind.

use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crate::io::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    #[error("cannot read features file {path}: {error}")]
    Io {
        path: PathBuf,
        /// Kept out of `source()` on purpose: the message already includes it, and a chained
        /// report (`{:#}`) would print it twice.
        error: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {message}")]
    Format { path: PathBuf, message: String },
    #[error("{path}: tensor `{tensor}` {message}")]
    Tensor {
        path: PathBuf,
        tensor: String,
        message: String,
    },
    #[error("{path}: metadata key `paths` {message}")]
    Paths { path: PathBuf, message: String },
    #[error("cannot write features file {path}: {message}")]
    Write { path: PathBuf, message: String },
}

/// Features of N images with their identities, cameras and paths.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FeatureSet {
    /// Row-major N x D.
    pub features: Vec<f32>,
    pub num: usize,
    pub dim: usize,
    /// Person ids (-1 unknown); None when the file has no `pids` tensor.
    pub pids: Option<Vec<i64>>,
    /// Camera ids (-1 unknown); None when the file has no `camids` tensor.
    pub camids: Option<Vec<i64>>,
    /// Image paths in row order; empty when the file has none. Relative paths are relative to
    /// the `root` provenance entry when there is one.
    pub paths: Vec<String>,
    /// Every other metadata entry (provenance), by key.
    pub provenance: BTreeMap<String, String>,
}

fn as_f32(path: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>, FeaturesError> {
    match dtype {
        Dtype::F32 => Ok(bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        Dtype::F64 => Ok(bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f32)
            .collect()),
        other => Err(FeaturesError::Tensor {
            path: path.into(),
            tensor: name.into(),
            message: format!("has dtype {other:?}, expected F32"),
        }),
    }
}

fn as_i64(path: &Path, name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<i64>, FeaturesError> {
    match dtype {
        Dtype::I64 => Ok(bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect()),
        Dtype::I32 => Ok(bytes
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
            .collect()),
        other => Err(FeaturesError::Tensor {
            path: path.into(),
            tensor: name.into(),
            message: format!("has dtype {other:?}, expected I64"),
        }),
    }
}

impl FeatureSet {
    /// The folder relative image paths are resolved against (provenance `root`), if recorded.
    pub fn image_root(&self) -> Option<&Path> {
        self.provenance.get("root").map(Path::new)
    }

    #[inline]
    pub fn row(&self, i: usize) -> &[f32] {
        &self.features[i * self.dim..(i + 1) * self.dim]
    }

    /// Reads a features file, checking dtypes, shapes and that every length agrees with N.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, FeaturesError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|error| FeaturesError::Io {
            path: path.into(),
            error,
        })?;
        let format = |e: safetensors::SafeTensorError| FeaturesError::Format {
            path: path.into(),
            message: e.to_string(),
        };
        let (_, metadata) = SafeTensors::read_metadata(&bytes).map_err(format)?;
        let st = SafeTensors::deserialize(&bytes).map_err(format)?;
        let tensor_err = |tensor: &str, message: String| FeaturesError::Tensor {
            path: path.into(),
            tensor: tensor.into(),
            message,
        };

        let view = st
            .tensor("features")
            .map_err(|_| tensor_err("features", format!("is missing (found: {:?})", st.names())))?;
        let (num, dim) = match view.shape() {
            [n, d] => (*n, *d),
            other => {
                return Err(tensor_err(
                    "features",
                    format!("has shape {other:?}, expected [N, D]"),
                ))
            }
        };
        let features = as_f32(path, "features", view.dtype(), view.data())?;

        let labels = |name: &str| -> Result<Option<Vec<i64>>, FeaturesError> {
            let Ok(view) = st.tensor(name) else {
                return Ok(None);
            };
            if view.shape() != [num] {
                return Err(tensor_err(
                    name,
                    format!(
                        "has shape {:?}, expected [{num}] to match `features`",
                        view.shape()
                    ),
                ));
            }
            as_i64(path, name, view.dtype(), view.data()).map(Some)
        };
        let pids = labels("pids")?;
        let camids = labels("camids")?;

        let paths = match metadata.metadata().as_ref().and_then(|m| m.get("paths")) {
            None => Vec::new(),
            Some(json) => {
                let paths: Vec<String> =
                    serde_json::from_str(json).map_err(|e| FeaturesError::Paths {
                        path: path.into(),
                        message: format!("is not a JSON array of strings: {e}"),
                    })?;
                if paths.len() != num {
                    return Err(FeaturesError::Paths {
                        path: path.into(),
                        message: format!("lists {} paths for {num} feature rows", paths.len()),
                    });
                }
                paths
            }
        };
        let provenance = metadata
            .metadata()
            .as_ref()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| k.as_str() != "paths")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Self {
            features,
            num,
            dim,
            pids,
            camids,
            paths,
            provenance,
        })
    }

    /// Writes the file atomically; `pids` / `camids` that are None are left out of the file.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), FeaturesError> {
        let path = path.as_ref();
        let err = |message: String| FeaturesError::Write {
            path: path.into(),
            message,
        };
        if self.features.len() != self.num * self.dim {
            return Err(err(format!(
                "{} values are not {} x {}",
                self.features.len(),
                self.num,
                self.dim
            )));
        }
        for (name, labels) in [("pids", &self.pids), ("camids", &self.camids)] {
            if let Some(l) = labels {
                if l.len() != self.num {
                    return Err(err(format!("{} {name} for {} rows", l.len(), self.num)));
                }
            }
        }
        if !self.paths.is_empty() && self.paths.len() != self.num {
            return Err(err(format!(
                "{} paths for {} rows",
                self.paths.len(),
                self.num
            )));
        }
        let bytes_of = |v: &[i64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let feat_bytes: Vec<u8> = self.features.iter().flat_map(|v| v.to_le_bytes()).collect();
        let pid_bytes = self.pids.as_deref().map(bytes_of);
        let cam_bytes = self.camids.as_deref().map(bytes_of);
        let view = |dtype, shape: Vec<usize>, data| {
            safetensors::tensor::TensorView::new(dtype, shape, data).map_err(|e| err(e.to_string()))
        };
        let mut tensors = vec![(
            "features",
            view(Dtype::F32, vec![self.num, self.dim], &feat_bytes[..])?,
        )];
        // Labels that are not known are left out (never written as -1 stand-ins).
        if let Some(b) = &pid_bytes {
            tensors.push(("pids", view(Dtype::I64, vec![self.num], &b[..])?));
        }
        if let Some(b) = &cam_bytes {
            tensors.push(("camids", view(Dtype::I64, vec![self.num], &b[..])?));
        }
        let mut meta: HashMap<String, String> = self
            .provenance
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !self.paths.is_empty() {
            meta.insert(
                "paths".to_string(),
                serde_json::to_string(&self.paths).map_err(|e| err(e.to_string()))?,
            );
        }
        let bytes = safetensors::serialize(tensors, Some(meta)).map_err(|e| err(e.to_string()))?;
        write_atomic(path, &bytes).map_err(|e| err(e.to_string()))
    }
}
