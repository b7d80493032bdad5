//! Re-ID datasets in the layouts users already have (shared/ALGORITHMS.md section 10).
//!
//! - Market-1501 / DukeMTMC-reID / Market-style MSMT17: `bounding_box_train`, `bounding_box_test`, `query`,
//!   file names `0002_c1s1_000451_03.jpg` (Market) or `0001_c2_f0046182.jpg` (Duke). The pid and camera come
//!   from the first `([-\d]+)_c(\d+)` in the file name, as the reference toolboxes' regex does.
//! - MSMT17_V1: `train/`, `test/` and `list_{train,val,query,gallery}.txt` (`<relpath> <pid>` per line); the
//!   camera is the third `_` field of the file name. Train and val together form the training set.
//! - A generic list layout: `relative/path pid camid` per line (camid already 0-based) next to an image root.
//!
//! Rules shared by all layouts: pid -1 is junk and dropped; pid 0 (Market's distractors) is kept; cameras are
//! made 0-based; train pids are relabelled to 0..C-1 in increasing order of the original pid.

use crate::io::{read_text_lines, shown, IoError};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while scanning a dataset; each message names the file (and line).
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("dataset folder not found: {} ({hint})", shown(path))]
    MissingFolder { path: PathBuf, hint: String },
    #[error("{} dataset at {} is incomplete: not found: {}", layout, shown(root), missing.iter().map(|p| shown(p)).collect::<Vec<_>>().join(", "))]
    MissingPieces {
        root: PathBuf,
        layout: &'static str,
        missing: Vec<PathBuf>,
    },
    #[error("list file not found: {}", shown(path))]
    MissingListFile { path: PathBuf },
    #[error(
        "{}: cannot parse the pid and camera from {count} of {total} file names (expected {expected}), e.g. {}",
        shown(dir), shown(example)
    )]
    BadFileNames {
        dir: PathBuf,
        count: usize,
        total: usize,
        example: PathBuf,
        expected: &'static str,
    },
    #[error("{}: the {split} split has no images", shown(path))]
    EmptySplit { path: PathBuf, split: &'static str },
    #[error("{}:{line}: {reason} in line {text:?}", shown(path))]
    BadListLine {
        path: PathBuf,
        line: usize,
        text: String,
        reason: String,
    },
    #[error("{}: {error}", shown(path))]
    Io {
        path: PathBuf,
        /// Kept out of `source()` on purpose: the message already includes it, and a chained
        /// report (`{:#}`) would print it twice.
        error: std::io::Error,
    },
    #[error(transparent)]
    Text(#[from] IoError),
    #[error("cannot detect the dataset layout of {}: {reason}", shown(path))]
    UnknownLayout { path: PathBuf, reason: String },
    #[error("{}: unreadable image: {reason}", shown(path))]
    BadImage { path: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |error| DataError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// Which directory layout a dataset folder uses. On the command line the names are matched
/// case-insensitively and the spellings users know are accepted (`market`, `Market-1501`,
/// `dukemtmc`, `duke`, `msmt`, `MSMT17_V1`, ...), see [`Layout::parse`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// Detect Market-1501 / DukeMTMC-reID / MSMT17 (both layouts); a `--list` file means `list`.
    Auto,
    /// Market-1501 (`bounding_box_train`, `bounding_box_test`, `query`).
    #[value(alias = "market", alias = "market-1501", alias = "market_1501")]
    Market1501,
    /// DukeMTMC-reID (same folders as Market, 8 cameras).
    #[value(
        alias = "dukemtmc",
        alias = "dukemtmc-reid",
        alias = "dukemtmcreid",
        alias = "duke-mtmc"
    )]
    Duke,
    /// MSMT17_V1 with `train/`, `test/` and `list_*.txt`.
    #[value(
        alias = "msmt",
        alias = "msmt17_v1",
        alias = "msmt17-v1",
        alias = "msmt17v1"
    )]
    Msmt17,
    /// MSMT17 converted to the Market-1501 folder layout.
    #[value(alias = "msmt17_market", alias = "msmt-market")]
    Msmt17Market,
    /// Generic list files of `relative/path pid camid` lines.
    #[value(alias = "lists")]
    List,
}

impl Layout {
    /// A layout from the name a user typed: any accepted spelling, case-insensitively.
    /// Errors list the accepted names.
    pub fn parse(name: &str) -> Result<Layout, String> {
        <Layout as clap::ValueEnum>::from_str(name.trim(), true).map_err(|_| {
            format!(
                "unknown dataset layout {name:?}: use auto, market1501 (market, Market-1501), duke \
                 (dukemtmc, DukeMTMC-reID), msmt17 (msmt, MSMT17_V1), msmt17-market or list"
            )
        })
    }

    pub fn display_name(self) -> &'static str {
        match self {
            Layout::Auto => "auto",
            Layout::Market1501 => "Market-1501",
            Layout::Duke => "DukeMTMC-reID",
            Layout::Msmt17 => "MSMT17_V1",
            Layout::Msmt17Market => "MSMT17 (Market layout)",
            Layout::List => "list",
        }
    }
}

/// The list files of the generic `list` layout (paths inside are relative to the dataset root).
#[derive(Clone, Debug, Default)]
pub struct ListFiles {
    pub train: Option<PathBuf>,
    pub query: Option<PathBuf>,
    pub gallery: Option<PathBuf>,
}

/// What to load: a root folder, its layout and which domain (0 = source, 1 = target, ...) the items belong to.
#[derive(Clone, Debug)]
pub struct DatasetSpec {
    pub root: PathBuf,
    pub layout: Layout,
    pub lists: ListFiles,
    pub domain: u8,
}

impl DatasetSpec {
    pub fn new(root: impl Into<PathBuf>, layout: Layout) -> Self {
        DatasetSpec {
            root: root.into(),
            layout,
            lists: ListFiles::default(),
            domain: 0,
        }
    }
}

/// One image of a dataset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReidItem {
    pub path: PathBuf,
    /// Train split: relabelled 0..C-1. Query/gallery: the original pid (0 = Market distractor).
    pub pid: i32,
    /// The pid as written in the file name or list.
    pub raw_pid: i32,
    /// 0-based camera.
    pub camid: u32,
    pub domain: u8,
}

/// A loaded dataset: three splits and where they came from.
#[derive(Clone, Debug)]
pub struct ReidDataset {
    pub name: String,
    pub layout: Layout,
    pub root: PathBuf,
    pub train: Vec<ReidItem>,
    pub query: Vec<ReidItem>,
    pub gallery: Vec<ReidItem>,
    /// Number of train identities C (train pids are 0..C-1).
    pub num_train_pids: usize,
}

/// Counts for one split, as the summary table prints them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SplitStats {
    pub ids: usize,
    pub images: usize,
    pub cameras: usize,
}

pub fn split_stats(items: &[ReidItem]) -> SplitStats {
    let ids: BTreeSet<i32> = items.iter().map(|it| it.pid).collect();
    let cams: BTreeSet<u32> = items.iter().map(|it| it.camid).collect();
    SplitStats {
        ids: ids.len(),
        images: items.len(),
        cameras: cams.len(),
    }
}

impl ReidDataset {
    /// The table the reference toolboxes print after loading (subset | # ids | # images | # cameras).
    pub fn summary_table(&self) -> String {
        let mut out = String::new();
        let rule = "  ----------------------------------------";
        let _ = writeln!(out, "=> Loaded {} from {}", self.name, self.root.display());
        let _ = writeln!(out, "{rule}");
        let _ = writeln!(out, "  subset   | # ids | # images | # cameras");
        let _ = writeln!(out, "{rule}");
        for (label, items) in [
            ("train", &self.train),
            ("query", &self.query),
            ("gallery", &self.gallery),
        ] {
            let s = split_stats(items);
            let _ = writeln!(
                out,
                "  {label:<8} | {:>5} | {:>8} | {:>9}",
                s.ids, s.images, s.cameras
            );
        }
        let _ = writeln!(out, "{rule}");
        out
    }

    /// All items of all splits (for scanning every file).
    pub fn all_items(&self) -> impl Iterator<Item = &ReidItem> {
        self.train.iter().chain(&self.query).chain(&self.gallery)
    }
}

/// The Market-style folder names, in (train, query, gallery) order.
pub const MARKET_SPLIT_DIRS: [&str; 3] = ["bounding_box_train", "query", "bounding_box_test"];

/// Sub-folders the official archives unpack into; `DIR` may point at their parent.
const KNOWN_SUBDIRS: [&str; 6] = [
    "Market-1501-v15.09.15",
    "Market-1501",
    "DukeMTMC-reID",
    "MSMT17_V1",
    "MSMT17",
    "MSMT17_V2",
];

/// Image files we read; the reference toolboxes glob `*.jpg`, we also take PNG (the synthetic benchmark, custom
/// data). Comparison ignores case.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .unwrap_or(false)
}

/// Every image file (by [`is_image_file`]) under `dir`, recursively and in sorted path order,
/// through the crate's one folder walk ([`crate::io::walk_files`]: symlinked folders followed,
/// loops ended, each file once, unreadable folders named).
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    Ok(crate::io::walk_files(dir, is_image_file)?)
}

/// Parses `(pid, camera)` from a Market/Duke-style file name: the leftmost match of `([-\d]+)_c(\d+)`.
/// The camera is returned as written (1-based). Returns `None` when nothing matches or the numbers do not parse.
pub fn parse_market_name(file_name: &str) -> Option<(i32, u32)> {
    let bytes = file_name.as_bytes();
    let is_pid_char = |b: u8| b == b'-' || b.is_ascii_digit();
    let mut start = 0;
    while start < bytes.len() {
        if !is_pid_char(bytes[start]) {
            start += 1;
            continue;
        }
        // A maximal run of [-\d]; a shorter prefix of the run can never be followed by `_`, so the leftmost
        // regex match, if any starts in this run, starts at its first character.
        let mut end = start;
        while end < bytes.len() && is_pid_char(bytes[end]) {
            end += 1;
        }
        let rest = &bytes[end..];
        if rest.len() >= 3 && rest[0] == b'_' && rest[1] == b'c' && rest[2].is_ascii_digit() {
            let cam_end = 2 + rest[2..].iter().take_while(|b| b.is_ascii_digit()).count();
            let pid = file_name[start..end].parse::<i32>().ok()?;
            let cam = file_name[end + 2..end + cam_end].parse::<u32>().ok()?;
            return Some((pid, cam));
        }
        start = end;
    }
    None
}

/// The MSMT17 camera: the third `_`-separated field of the file name, 1-based as written.
pub fn parse_msmt_camera(file_name: &str) -> Option<u32> {
    file_name.split('_').nth(2)?.parse::<u32>().ok()
}

/// Loads a dataset, detecting the layout when asked to.
///
/// Errors name the real missing piece: the root folder, or, for a layout whose folders are found
/// only in part (in `root` or one of the archive sub-folders such as `MSMT17_V1/`), every folder
/// or list file that layout still needs.
pub fn load(spec: &DatasetSpec) -> Result<ReidDataset, DataError> {
    if !exists(&spec.root, true)? {
        return Err(DataError::MissingFolder {
            path: spec.root.clone(),
            hint: "the dataset root must be a folder".into(),
        });
    }
    let (layout, root) = match spec.layout {
        Layout::Auto => detect_layout(&spec.root, &spec.lists)?,
        Layout::List => (Layout::List, spec.root.clone()),
        other => (other, complete_root(&spec.root, other)?),
    };
    let (train, query, gallery) = match layout {
        Layout::Msmt17 => load_msmt(&root, spec.domain)?,
        Layout::List => load_list_layout(&root, &spec.lists, spec.domain)?,
        _ => load_market_style(&root, spec.domain)?,
    };
    let (train, num_train_pids) = relabel(train);
    Ok(ReidDataset {
        name: layout.display_name().to_string(),
        layout,
        root,
        train,
        query,
        gallery,
        num_train_pids,
    })
}

/// Whether `path` exists as a folder (`folder`) or a file. A missing path is `Ok(false)`; a path
/// that cannot be inspected (permissions) is an error naming it, never "not found".
fn exists(path: &Path, folder: bool) -> Result<bool, DataError> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(meta.is_dir() == folder),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Ok(false),
        Err(error) => Err(DataError::Io {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// The folders and files a layout needs, relative to its root: (name, is a folder).
fn required_pieces(layout: Layout) -> &'static [(&'static str, bool)] {
    match layout {
        Layout::Msmt17 => &[
            ("train", true),
            ("test", true),
            ("list_train.txt", false),
            ("list_query.txt", false),
            ("list_gallery.txt", false),
        ],
        Layout::Market1501 | Layout::Duke | Layout::Msmt17Market => &[
            (MARKET_SPLIT_DIRS[0], true),
            (MARKET_SPLIT_DIRS[2], true),
            (MARKET_SPLIT_DIRS[1], true),
        ],
        Layout::Auto | Layout::List => &[],
    }
}

/// The candidate root (`dir` or one of its archive sub-folders) holding most of `layout`'s pieces,
/// with the pieces it still lacks (full paths) and how many it has.
fn locate(dir: &Path, layout: Layout) -> Result<(PathBuf, Vec<PathBuf>, usize), DataError> {
    let pieces = required_pieces(layout);
    let mut best: Option<(PathBuf, Vec<PathBuf>, usize)> = None;
    let candidates =
        std::iter::once(dir.to_path_buf()).chain(KNOWN_SUBDIRS.iter().map(|s| dir.join(s)));
    for candidate in candidates {
        if candidate != dir && !exists(&candidate, true)? {
            continue;
        }
        let mut missing = Vec::new();
        for (name, folder) in pieces {
            let path = candidate.join(name);
            if !exists(&path, *folder)? {
                missing.push(path);
            }
        }
        let found = pieces.len() - missing.len();
        if best.as_ref().is_none_or(|b| found > b.2) {
            best = Some((candidate, missing, found));
        }
    }
    Ok(best.unwrap_or_else(|| (dir.to_path_buf(), Vec::new(), 0)))
}

/// The root of a complete `layout` dataset at or inside `dir`, or an error listing what is missing.
fn complete_root(dir: &Path, layout: Layout) -> Result<PathBuf, DataError> {
    let (root, missing, _) = locate(dir, layout)?;
    if missing.is_empty() {
        Ok(root)
    } else {
        Err(DataError::MissingPieces {
            root,
            layout: layout.display_name(),
            missing,
        })
    }
}

/// `--layout auto`: MSMT17 list files, else Market-style folders (Duke told apart by folder or file names).
/// A layout found only in part is reported with its missing pieces.
pub fn detect_layout(dir: &Path, lists: &ListFiles) -> Result<(Layout, PathBuf), DataError> {
    if lists.train.is_some() || lists.query.is_some() || lists.gallery.is_some() {
        return Ok((Layout::List, dir.to_path_buf()));
    }
    let (msmt, msmt_missing, msmt_found) = locate(dir, Layout::Msmt17)?;
    if msmt_missing.is_empty() {
        return Ok((Layout::Msmt17, msmt));
    }
    let (market, market_missing, market_found) = locate(dir, Layout::Market1501)?;
    if !market_missing.is_empty() {
        // `train/` and `test/` alone are common folder names; list files or a Market folder are not.
        let msmt_specific = msmt_found > 2 || msmt_found > 0 && msmt != dir;
        return Err(if market_found > 0 && market_found >= msmt_found {
            DataError::MissingPieces {
                root: market,
                layout: "Market-style (Market-1501, DukeMTMC-reID, MSMT17 converted)",
                missing: market_missing,
            }
        } else if msmt_specific {
            DataError::MissingPieces {
                root: msmt,
                layout: Layout::Msmt17.display_name(),
                missing: msmt_missing,
            }
        } else {
            DataError::UnknownLayout {
                path: dir.to_path_buf(),
                reason: "found neither bounding_box_train/ (Market-1501, DukeMTMC-reID, Market-style MSMT17) nor \
                         train/ + list_train.txt (MSMT17_V1); for custom data use --layout list --list FILE"
                    .into(),
            }
        });
    }
    // Only the dataset folder's own name counts (a parent like /home/duke/ says nothing).
    let folder_names = market
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let layout = if folder_names.contains("duke") {
        Layout::Duke
    } else if folder_names.contains("msmt") {
        Layout::Msmt17Market
    } else {
        flavour_from_names(&market.join(MARKET_SPLIT_DIRS[0]))
    };
    Ok((layout, market))
}

/// Duke names carry a frame field `_f0046182` right after the camera; Market names a sequence `s1_`.
fn flavour_from_names(train_dir: &Path) -> Layout {
    let Ok(entries) = std::fs::read_dir(train_dir) else {
        return Layout::Market1501;
    };
    for entry in entries.flatten().take(32) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pos) = name.find("_c") {
            let after_cam = name[pos + 2..].trim_start_matches(|c: char| c.is_ascii_digit());
            if after_cam.starts_with("_f") {
                return Layout::Duke;
            }
            if after_cam.starts_with('s') {
                return Layout::Market1501;
            }
        }
    }
    Layout::Market1501
}

type Splits = (Vec<ReidItem>, Vec<ReidItem>, Vec<ReidItem>);

fn load_market_style(root: &Path, domain: u8) -> Result<Splits, DataError> {
    let mut splits = Vec::with_capacity(3);
    for (dir_name, split) in MARKET_SPLIT_DIRS.iter().zip(["train", "query", "gallery"]) {
        let dir = root.join(dir_name);
        splits.push(scan_market_dir(&dir, split, domain)?);
    }
    let gallery = splits.pop().unwrap_or_default();
    let query = splits.pop().unwrap_or_default();
    let train = splits.pop().unwrap_or_default();
    Ok((train, query, gallery))
}

/// Scans one Market-style folder (sorted by file name, so results do not depend on the file system order).
pub fn scan_market_dir(
    dir: &Path,
    split: &'static str,
    domain: u8,
) -> Result<Vec<ReidItem>, DataError> {
    if !exists(dir, true)? {
        return Err(DataError::MissingFolder {
            path: dir.to_path_buf(),
            hint: format!("the {split} split of a Market-style layout"),
        });
    }
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.path()).map_err(io_err(dir)))
        .collect::<Result<Vec<_>, _>>()?;
    paths.retain(|p| is_image_file(p));
    paths.sort();
    let total = paths.len();
    let mut items = Vec::with_capacity(paths.len());
    let mut bad_names = Vec::new();
    for path in paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match parse_market_name(&name) {
            Some((-1, _)) => {} // junk
            Some((pid, cam)) if pid >= 0 && cam > 0 => items.push(ReidItem {
                path,
                pid,
                raw_pid: pid,
                camid: cam - 1,
                domain,
            }),
            _ => bad_names.push(path),
        }
    }
    if let Some(example) = bad_names.first() {
        return Err(DataError::BadFileNames {
            dir: dir.to_path_buf(),
            count: bad_names.len(),
            total,
            example: example.file_name().map(PathBuf::from).unwrap_or_default(),
            expected: "<pid>_c<camera>..., camera from 1, e.g. 0002_c1s1_000451_03.jpg",
        });
    }
    if items.is_empty() {
        return Err(DataError::EmptySplit {
            path: dir.to_path_buf(),
            split,
        });
    }
    Ok(items)
}

fn load_msmt(root: &Path, domain: u8) -> Result<Splits, DataError> {
    let train_dir = root.join("train");
    let test_dir = root.join("test");
    for dir in [&train_dir, &test_dir] {
        if !exists(dir, true)? {
            return Err(DataError::MissingFolder {
                path: dir.clone(),
                hint: "MSMT17_V1 needs train/ and test/".into(),
            });
        }
    }
    let mut train = read_msmt_list(&root.join("list_train.txt"), &train_dir, domain, "train")?;
    // Train and val together are the training set (32,621 images / 1,041 ids), as the reference toolboxes do.
    let val_list = root.join("list_val.txt");
    if exists(&val_list, false)? {
        train.extend(read_msmt_list(&val_list, &train_dir, domain, "val")?);
    }
    let query = read_msmt_list(&root.join("list_query.txt"), &test_dir, domain, "query")?;
    let gallery = read_msmt_list(&root.join("list_gallery.txt"), &test_dir, domain, "gallery")?;
    Ok((train, query, gallery))
}

/// Reads non-empty, non-comment lines of a list file with their 1-based line numbers, through the
/// crate's one text reader (byte-order mark, CRLF and trailing whitespace normalised).
fn read_list_lines(list: &Path) -> Result<Vec<(usize, String)>, DataError> {
    match read_text_lines(list) {
        Ok(lines) => Ok(lines.into_iter().map(|l| (l.number, l.text)).collect()),
        Err(IoError::Read { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => {
            Err(DataError::MissingListFile {
                path: list.to_path_buf(),
            })
        }
        Err(e) => Err(DataError::Text(e)),
    }
}

fn read_msmt_list(
    list: &Path,
    image_root: &Path,
    domain: u8,
    split: &'static str,
) -> Result<Vec<ReidItem>, DataError> {
    let mut items = Vec::new();
    for (line_no, line) in read_list_lines(list)? {
        let bad = |reason: &str| DataError::BadListLine {
            path: list.to_path_buf(),
            line: line_no,
            text: line.clone(),
            reason: reason.to_string(),
        };
        let mut fields = line.split_whitespace();
        let (Some(rel), Some(pid), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad("expected `<relative path> <pid>`"));
        };
        let pid: i32 = pid.parse().map_err(|_| bad("the pid is not an integer"))?;
        let file_name = Path::new(rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let cam = parse_msmt_camera(&file_name)
            .filter(|&c| c > 0)
            .ok_or_else(|| {
                bad("the camera (third `_` field of the file name, 1-based) does not parse")
            })?;
        if pid == -1 {
            continue;
        }
        if pid < -1 {
            return Err(bad("negative pid"));
        }
        items.push(ReidItem {
            path: image_root.join(rel),
            pid,
            raw_pid: pid,
            camid: cam - 1,
            domain,
        });
    }
    if items.is_empty() {
        return Err(DataError::EmptySplit {
            path: list.to_path_buf(),
            split,
        });
    }
    Ok(items)
}

fn load_list_layout(root: &Path, lists: &ListFiles, domain: u8) -> Result<Splits, DataError> {
    if lists.train.is_none() && lists.query.is_none() && lists.gallery.is_none() {
        return Err(DataError::UnknownLayout {
            path: root.to_path_buf(),
            reason:
                "--layout list needs --list FILE (and optionally --query-list / --gallery-list)"
                    .into(),
        });
    }
    let read = |list: &Option<PathBuf>, split| match list {
        Some(list) => read_generic_list(list, root, domain, split),
        None => Ok(Vec::new()),
    };
    Ok((
        read(&lists.train, "train")?,
        read(&lists.query, "query")?,
        read(&lists.gallery, "gallery")?,
    ))
}

/// Reads a generic list: `relative/path pid camid` per line (camid 0-based, pid -1 = junk, `#` comments).
pub fn read_generic_list(
    list: &Path,
    root: &Path,
    domain: u8,
    split: &'static str,
) -> Result<Vec<ReidItem>, DataError> {
    let mut items = Vec::new();
    for (line_no, line) in read_list_lines(list)? {
        let bad = |reason: &str| DataError::BadListLine {
            path: list.to_path_buf(),
            line: line_no,
            text: line.clone(),
            reason: reason.to_string(),
        };
        let mut fields = line.split_whitespace();
        let (Some(rel), Some(pid), Some(cam), None) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(bad("expected `<relative path> <pid> <camid>`"));
        };
        let pid: i32 = pid.parse().map_err(|_| bad("the pid is not an integer"))?;
        let camid: u32 = cam
            .parse()
            .map_err(|_| bad("the camid is not a non-negative integer"))?;
        if pid == -1 {
            continue;
        }
        if pid < -1 {
            return Err(bad("negative pid"));
        }
        items.push(ReidItem {
            path: root.join(rel),
            pid,
            raw_pid: pid,
            camid,
            domain,
        });
    }
    if items.is_empty() {
        return Err(DataError::EmptySplit {
            path: list.to_path_buf(),
            split,
        });
    }
    Ok(items)
}

/// Relabels train pids to 0..C-1 in increasing order of the original pid; returns C.
pub fn relabel(mut items: Vec<ReidItem>) -> (Vec<ReidItem>, usize) {
    let pids: Vec<i32> = items
        .iter()
        .map(|it| it.raw_pid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for it in &mut items {
        // Present by construction: `pids` was built from these very items.
        it.pid = pids
            .binary_search(&it.raw_pid)
            .map(|p| p as i32)
            .unwrap_or(-1);
    }
    (items, pids.len())
}
