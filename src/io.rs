//! File-system mechanisms shared by every layer: the one atomic writer (temporary sibling + fsync +
//! rename, so a killed run never leaves a truncated file under the final name).

use std::io::Write;
use std::path::{Path, PathBuf};

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
