//! Arguments shared by several subcommands, defined once so every command that reads a dataset
//! takes the same flags, and helpers for validating outputs before the work starts.

use crate::data::datasets::{DatasetSpec, Layout, ListFiles};
use std::path::{Path, PathBuf};

/// How a dataset root is read: its layout and, for `--layout list`, the list files. Flattened
/// into every command that reads a dataset (`check-data`, `extract`).
#[derive(clap::Args, Debug, Clone)]
pub struct DatasetArgs {
    /// Dataset layout (case-insensitive; market, Market-1501, duke, dukemtmc, msmt, MSMT17_V1 are
    /// accepted too). `auto` detects it; a --list file means `list`.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Layout::Auto)]
    pub layout: Layout,
    /// Train list of the generic layout (`relative/path pid camid` per line, paths relative to the root).
    #[arg(long)]
    pub list: Option<PathBuf>,
    /// Query list of the generic layout.
    #[arg(long)]
    pub query_list: Option<PathBuf>,
    /// Gallery list of the generic layout.
    #[arg(long)]
    pub gallery_list: Option<PathBuf>,
}

impl DatasetArgs {
    /// The loader's description of the dataset at `root`.
    pub fn spec(&self, root: &Path) -> DatasetSpec {
        DatasetSpec {
            root: root.to_path_buf(),
            layout: self.layout,
            lists: ListFiles {
                train: self.list.clone(),
                query: self.query_list.clone(),
                gallery: self.gallery_list.clone(),
            },
            domain: 0,
        }
    }
}

/// Checks before the work starts that an output file can be written (see
/// [`crate::io::check_writable`]); the error names the flag and the path.
pub fn check_output(flag: &str, path: &Path) -> anyhow::Result<()> {
    crate::io::check_writable(path).map_err(|e| anyhow::anyhow!("{flag}: {e}"))
}

/// clap parser for a count that must be at least 1 (`--batch-size`, `--height`, ...).
pub fn positive() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..)
}

/// clap parser for a finite f32 that is not negative.
pub fn non_negative_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(format!("{s} must be a finite number >= 0"))
    }
}

/// clap parser for a fraction in [0, 1].
pub fn unit_f32(s: &str) -> Result<f32, String> {
    let v = non_negative_f32(s)?;
    if v <= 1.0 {
        Ok(v)
    } else {
        Err(format!("{s} must lie in [0, 1]"))
    }
}

/// Resolves `--device` / `--adapter` and prints the device actually used (with the adapter's
/// name, backend and driver for a GPU), so every command says where it ran.
pub fn open_device(
    choice: crate::DeviceChoice,
    adapter: Option<&str>,
) -> anyhow::Result<crate::Device> {
    use anyhow::Context;
    let device = crate::Device::choose(choice, adapter).context("--device / --adapter")?;
    match device.as_gpu() {
        Some(gpu) => eprintln!("device: gpu, adapter {}", gpu.summary()),
        None => eprintln!("device: cpu ({} threads)", rayon::current_num_threads()),
    }
    Ok(device)
}
