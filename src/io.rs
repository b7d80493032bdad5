//! File-system mechanisms shared by every layer, one of each:
//!
//! - [`write_atomic`]: the one atomic writer (temporary sibling + fsync + rename, so a killed run
//!   never leaves a truncated file under the final name);
//! - [`read_text_lines`]: the one text-file reader (UTF-8 byte-order mark stripped, CRLF and
//!   trailing whitespace normalised, 1-based line numbers kept for error messages);
//! - [`walk_files`]: the one recursive folder walk (follows symlinked folders, terminates on loops,
//!   yields each file once, reports unreadable folders by name);
//! - [`OutputLock`]: an exclusive lock on an output folder, so two runs never write into the same
//!   place at once (released by the kernel when the process dies, so it is never stale);
//! - [`shown`]: a path as error messages print it, with invisible characters escaped.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Errors of the file-system helpers; each names the file or folder.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    #[error("{}: {error}", shown(path))]
    Read {
        path: PathBuf,
        /// Kept out of `source()` on purpose: the message already includes it.
        error: std::io::Error,
    },
    #[error("{}:{line}: not valid UTF-8 text", shown(path))]
    NotUtf8 { path: PathBuf, line: usize },
    #[error("cannot read folder {}: {error}", shown(path))]
    ReadDir {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(
        "{} is in use by another unreid process{} (lock file {}); wait for it to finish or choose another output",
        shown(dir), holder.map(|p| format!(" (pid {p})")).unwrap_or_default(), shown(lock)
    )]
    Locked {
        dir: PathBuf,
        lock: PathBuf,
        holder: Option<u32>,
    },
}

/// The path as messages print it: as is, unless it holds characters a terminal would not show
/// (a byte-order mark, zero-width or control characters, invalid UTF-8); then quoted and escaped,
/// e.g. `"\u{feff}train/0001.jpg"`.
pub fn shown(path: &Path) -> String {
    let visible = path.to_str().is_some_and(|s| {
        s.chars()
            .all(|c| matches!(c, '\\' | '"' | '\'') || c.escape_debug().eq(std::iter::once(c)))
    });
    if visible {
        path.display().to_string()
    } else {
        format!("{path:?}")
    }
}

/// The temporary sibling `write_atomic` writes before renaming (hidden, tagged with the process id).
fn temp_sibling(path: &Path) -> PathBuf {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    dir.join(format!(".{name}.tmp-{}", std::process::id()))
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it, then renames it over `path`.
/// The parent folder must exist. On failure the temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Checks, before any long work, that `path` can later be written by [`write_atomic`]: its parent
/// folder exists (or can be created) and accepts a new file, and `path` is not a folder. The probe
/// file is removed again; nothing at `path` is touched.
pub fn check_writable(path: &Path) -> Result<(), IoError> {
    let err = |error| IoError::Read {
        path: path.to_path_buf(),
        error,
    };
    if path.is_dir() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "is a folder, expected a file path",
        )));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let probe = temp_sibling(path);
    std::fs::File::create(&probe).map_err(err)?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// One line of a text file as [`read_text_lines`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextLine {
    /// 1-based line number in the file, for error messages.
    pub number: usize,
    /// The line without its end-of-line (`\n` or `\r\n`) and without leading/trailing whitespace.
    pub text: String,
}

/// Reads a UTF-8 text file, the one way every text input (list files, configs) is read: a leading
/// byte-order mark is dropped, `\r\n` and `\n` both end a line, surrounding whitespace is trimmed,
/// and empty lines and `#` comments are skipped (their numbers still count).
///
/// Errors: the file cannot be read (named with the OS reason), or a line is not UTF-8 (named with its number).
pub fn read_text_lines(path: &Path) -> Result<Vec<TextLine>, IoError> {
    let bytes = std::fs::read(path).map_err(|error| IoError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text = std::str::from_utf8(bytes).map_err(|e| IoError::NotUtf8 {
        path: path.to_path_buf(),
        line: 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
    })?;
    Ok(text
        .split('\n')
        .enumerate()
        .map(|(i, l)| TextLine {
            number: i + 1,
            text: l.trim().to_string(),
        })
        .filter(|l| !l.text.is_empty() && !l.text.starts_with('#'))
        .collect())
}

/// Identity of a file or folder on disk, so two routes to it (symlinks) count once.
#[cfg(unix)]
fn file_id(meta: &std::fs::Metadata, _path: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_id(_meta: &std::fs::Metadata, path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Every file under `root` (recursively, symlinked folders followed) for which `keep(path)` holds,
/// sorted by path. Each folder is entered once (a symlink loop ends the descent) and each file is
/// listed once even when several links reach it (the first path in sorted order is kept).
///
/// Errors: `root` or a folder below it cannot be read (permissions, a vanished folder): the error
/// names that folder. A broken symlink is reported the same way, naming the link.
pub fn walk_files(root: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>, IoError> {
    let read_err = |path: &Path| {
        let path = path.to_path_buf();
        move |error| IoError::ReadDir { path, error }
    };
    let root_meta = std::fs::metadata(root).map_err(read_err(root))?;
    if !root_meta.is_dir() {
        return Err(IoError::ReadDir {
            path: root.to_path_buf(),
            error: std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder"),
        });
    }
    let mut seen_dirs = HashSet::from([file_id(&root_meta, root)]);
    let mut stack = vec![root.to_path_buf()];
    let mut files = Vec::new();
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(read_err(&dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(read_err(&dir))?;
        entries.sort();
        for path in entries {
            let meta = std::fs::metadata(&path).map_err(|error| IoError::Read {
                path: path.clone(),
                error,
            })?;
            if meta.is_dir() {
                if seen_dirs.insert(file_id(&meta, &path)) {
                    stack.push(path);
                }
            } else if keep(&path) {
                files.push((path.clone(), file_id(&meta, &path)));
            }
        }
    }
    files.sort();
    let mut seen_files = HashSet::new();
    Ok(files
        .into_iter()
        .filter_map(|(p, id)| seen_files.insert(id).then_some(p))
        .collect())
}

/// An exclusive lock on an output folder, held until dropped (or until the process ends, however
/// it ends: the operating system releases it, so a killed run never leaves a stale lock behind).
/// The lock file `.unreid.lock` inside the folder records the holder's process id for messages
/// and is removed again when the lock is dropped.
#[derive(Debug)]
pub struct OutputLock {
    file: std::fs::File,
    path: PathBuf,
}

impl OutputLock {
    /// The lock file's name inside a locked folder.
    pub const FILE_NAME: &'static str = ".unreid.lock";

    /// Creates `dir` if needed and locks it without waiting.
    ///
    /// Errors: `dir` cannot be created or the lock file cannot be opened (named), or another
    /// process holds the lock ([`IoError::Locked`], with its pid when known).
    pub fn acquire(dir: &Path) -> Result<Self, IoError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| IoError::Read { path, error }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(Self::FILE_NAME);
        loop {
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io(&path))?;
            if !try_lock(&file).map_err(io(&path))? {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|s| s.trim().parse().ok());
                return Err(IoError::Locked {
                    dir: dir.to_path_buf(),
                    lock: path,
                    holder,
                });
            }
            // The previous holder may have removed the file between our open and our lock: then
            // we locked an orphan and must start again on the file now at `path`.
            let ours = file.metadata().map_err(io(&path))?;
            match std::fs::metadata(&path) {
                Ok(now) if file_id(&now, &path) == file_id(&ours, &path) => {}
                _ => continue,
            }
            file.set_len(0).map_err(io(&path))?;
            writeln!(file, "{}", std::process::id()).map_err(io(&path))?;
            return Ok(OutputLock { file, path });
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Remove the file while still holding the lock; whoever opened it meanwhile notices
        // (see `acquire`). The lock itself is released when `file` closes.
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.sync_all();
    }
}

/// Non-blocking exclusive lock; Ok(false) when another process holds it.
#[cfg(unix)]
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(err)
    }
}

#[cfg(not(unix))]
fn try_lock(file: &std::fs::File) -> std::io::Result<bool> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(std::fs::TryLockError::WouldBlock) => Ok(false),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// SHA-256 of a file's bytes as lowercase hex (provenance of weights files), read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String, IoError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let err = |error| IoError::Read {
        path: path.to_path_buf(),
        error,
    };
    let mut file = std::fs::File::open(path).map_err(err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
