//! The run directory: `config.toml` (resolved), `metrics.jsonl`, `curves.png`, `train.log`,
//! `checkpoints/{last,best,state}.safetensors` and `summary.json`, with a lock so two runs never
//! write into one folder, and nothing already written ever half-overwritten (atomic writes).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::TrainError;
use crate::io::{write_atomic, OutputLock};
use crate::nn::weights::{read_metadata, read_tensors, save_tensors};
use crate::{Device, Tensor};

/// A checkpoint read back: tensors by name and the metadata.
pub type Checkpoint = (BTreeMap<String, Tensor>, HashMap<String, String>);

/// How to treat an existing run directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunMode {
    /// Refuse a folder that already holds a run.
    New,
    /// Delete what a previous run left and start over.
    Overwrite,
    /// Continue the run in the folder from its last checkpoint.
    Resume,
}

/// An open, locked run directory.
pub struct RunDir {
    pub path: PathBuf,
    /// Held for the run's lifetime (released on drop or when the process ends).
    _lock: OutputLock,
    log: std::fs::File,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

impl RunDir {
    pub const CONFIG: &'static str = "config.toml";
    pub const METRICS: &'static str = "metrics.jsonl";
    pub const LOG: &'static str = "train.log";
    pub const CURVES: &'static str = "curves.png";
    pub const SUMMARY: &'static str = "summary.json";

    /// Opens (creating) `path` for a run. A folder holding a run (its config.toml) is refused in
    /// `New` mode; `Resume` needs a state checkpoint; a folder locked by a live process is refused.
    pub fn open(path: &Path, mode: RunMode) -> Result<RunDir, TrainError> {
        let err = |message: String| TrainError::RunDir {
            path: path.to_path_buf(),
            message,
        };
        if path.exists() && !path.is_dir() {
            return Err(err("exists and is not a folder".into()));
        }
        std::fs::create_dir_all(path.join("checkpoints")).map_err(io_err(path))?;
        // Take the lock first, so the checks below cannot race another run; the operating system
        // releases it when a run is killed.
        let lock = OutputLock::acquire(path).map_err(|e| err(e.to_string()))?;
        let dir = RunDir {
            path: path.to_path_buf(),
            _lock: lock,
            log: std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path.join(Self::LOG))
                .map_err(io_err(path))?,
        };
        let has_run = path.join(Self::CONFIG).exists();
        match mode {
            RunMode::New if has_run => {
                return Err(err(
                    "already holds a run (config.toml); use --resume to continue it or --overwrite to start over".into(),
                ))
            }
            RunMode::Resume if !dir.state_path().exists() => {
                return Err(err(format!(
                    "has no checkpoint to resume from ({} is missing)",
                    dir.state_path().display()
                )))
            }
            RunMode::Overwrite => {
                for name in [Self::CONFIG, Self::METRICS, Self::CURVES, Self::SUMMARY] {
                    let _ = std::fs::remove_file(path.join(name));
                }
                for p in [dir.last_path(), dir.best_path(), dir.state_path()] {
                    let _ = std::fs::remove_file(p);
                }
                dir.log.set_len(0).map_err(io_err(path))?;
            }
            _ => {}
        }
        Ok(dir)
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
    pub fn last_path(&self) -> PathBuf {
        self.path.join("checkpoints/last.safetensors")
    }
    pub fn best_path(&self) -> PathBuf {
        self.path.join("checkpoints/best.safetensors")
    }
    /// Everything a resume needs (every model, the optimiser, the method's state, counters).
    pub fn state_path(&self) -> PathBuf {
        self.path.join("checkpoints/state.safetensors")
    }

    /// Writes a text file of the run atomically.
    pub fn write_text(&self, name: &str, text: &str) -> Result<(), TrainError> {
        let p = self.file(name);
        write_atomic(&p, text.as_bytes()).map_err(io_err(&p))
    }

    /// Prints a line and appends it to train.log.
    pub fn say(&mut self, line: &str) {
        println!("{line}");
        self.log_only(line);
    }

    /// Appends a line to train.log only (what progress bars show on a terminal).
    pub fn log_only(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
    }

    /// Appends one JSON object to metrics.jsonl.
    pub fn record(&self, value: &serde_json::Value) -> Result<(), TrainError> {
        let p = self.file(Self::METRICS);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io_err(&p))?;
        writeln!(f, "{value}").map_err(io_err(&p))
    }

    /// Every record of metrics.jsonl (an unparsable line is an error naming it).
    pub fn records(&self) -> Result<Vec<serde_json::Value>, TrainError> {
        let p = self.file(Self::METRICS);
        if !p.exists() {
            return Ok(Vec::new());
        }
        // The one reader of metrics.jsonl (the plots read it too): every line a JSON object.
        Ok(super::plots::read_metrics(&p)?)
    }

    /// Keeps only the records of epochs before `epoch` (a resume drops what the killed run wrote
    /// after its last checkpoint), rewriting metrics.jsonl atomically.
    pub fn truncate_records(&self, epoch: usize) -> Result<(), TrainError> {
        let kept: Vec<String> = self
            .records()?
            .into_iter()
            .filter(|r| {
                r.get("epoch")
                    .and_then(|e| e.as_u64())
                    .is_some_and(|e| (e as usize) < epoch)
            })
            .map(|r| r.to_string() + "\n")
            .collect();
        let p = self.file(Self::METRICS);
        write_atomic(&p, kept.concat().as_bytes()).map_err(io_err(&p))
    }

    /// Writes named tensors and metadata to a checkpoint atomically.
    pub fn save_checkpoint(
        path: &Path,
        tensors: &[(String, Tensor)],
        metadata: HashMap<String, String>,
    ) -> Result<(), TrainError> {
        let mut host = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            host.push((name.clone(), t.shape().to_vec(), t.to_vec()?));
        }
        save_tensors(path, &host, &[], metadata).map_err(|e| TrainError::Io {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })
    }

    /// Reads a checkpoint's tensors onto `device`, with its metadata.
    pub fn load_checkpoint(path: &Path, device: &Device) -> Result<Checkpoint, TrainError> {
        let err = |e: crate::nn::WeightsError| TrainError::Io {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let meta = read_metadata(path).map_err(err)?;
        let mut out = BTreeMap::new();
        for (name, (shape, values)) in read_tensors(path).map_err(err)? {
            out.insert(name, Tensor::from_slice(&values, &shape, device)?);
        }
        Ok((out, meta))
    }
}
