//! Arguments shared by several subcommands, defined once so every command that reads a dataset
//! takes the same flags, and helpers for validating outputs before the work starts.

use crate::data::datasets::{DatasetSpec, Layout, ListFiles};
use std::path::{Path, PathBuf};

/// Defines a clap group of dataset flags. Every command that reads a dataset flattens one of the
/// groups below, so the layout names and the list files are spelled, parsed and checked the same
/// way everywhere; `train` reads two datasets and takes the same group twice, prefixed.
macro_rules! dataset_args {
    ($(#[$doc:meta])* $name:ident, $what:literal, $layout:literal, $list:literal, $query:literal, $gallery:literal) => {
        $(#[$doc])*
        #[derive(clap::Args, Debug, Clone, Default)]
        pub struct $name {
            #[doc = concat!("Layout of the ", $what, " (case-insensitive; auto, market1501, duke, msmt17, msmt17-market, list; market, Market-1501, dukemtmc, msmt, MSMT17_V1 are accepted too). Default: auto (detected); a list file means `list`.")]
            #[arg(long = $layout, id = $layout, value_enum, ignore_case = true, value_name = "LAYOUT")]
            pub layout: Option<Layout>,
            #[doc = concat!("Train list of the ", $what, " in the generic layout (`relative/path pid camid` per line, paths relative to the root).")]
            #[arg(long = $list, id = $list, value_name = "FILE")]
            pub list: Option<PathBuf>,
            #[doc = concat!("Query list of the ", $what, " in the generic layout.")]
            #[arg(long = $query, id = $query, value_name = "FILE")]
            pub query_list: Option<PathBuf>,
            #[doc = concat!("Gallery list of the ", $what, " in the generic layout.")]
            #[arg(long = $gallery, id = $gallery, value_name = "FILE")]
            pub gallery_list: Option<PathBuf>,
        }

        impl $name {
            /// The loader's description of the dataset at `root` (layout `auto` when not given).
            pub fn spec(&self, root: &Path) -> DatasetSpec {
                DatasetSpec {
                    root: root.to_path_buf(),
                    layout: self.layout.unwrap_or(Layout::Auto),
                    lists: self.lists(),
                    domain: 0,
                }
            }

            /// The list files given.
            pub fn lists(&self) -> ListFiles {
                ListFiles {
                    train: self.list.clone(),
                    query: self.query_list.clone(),
                    gallery: self.gallery_list.clone(),
                }
            }

            /// Whether any flag of the group was given.
            pub fn given(&self) -> bool {
                self.layout.is_some()
                    || self.list.is_some()
                    || self.query_list.is_some()
                    || self.gallery_list.is_some()
            }
        }
    };
}

dataset_args!(
    /// How a dataset root is read: its layout and, for `--layout list`, the list files
    /// (`check-data`, `extract`).
    DatasetArgs,
    "dataset",
    "layout",
    "list",
    "query-list",
    "gallery-list"
);

dataset_args!(
    /// `train`'s labelled source dataset: the same flags as every other command, prefixed.
    SourceDatasetArgs,
    "source dataset",
    "source-layout",
    "source-list",
    "source-query-list",
    "source-gallery-list"
);

dataset_args!(
    /// `train`'s target dataset: the same flags as every other command, prefixed.
    TargetDatasetArgs,
    "target dataset",
    "target-layout",
    "target-list",
    "target-query-list",
    "target-gallery-list"
);

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
