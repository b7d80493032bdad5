//! Fixture helpers: temporary folders and tiny images.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A temporary folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("unreid-test-{}-{tag}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small JPEG with a colour that depends on `tint` (so images differ).
pub fn jpeg_bytes(w: u32, h: u32, tint: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([tint, (x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8])
    });
    unreid::data::synth::encode_jpeg(&img, 90).unwrap()
}

/// Writes a small valid JPEG at `path`, creating parent folders.
pub fn write_jpeg(path: &Path, tint: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, jpeg_bytes(16, 32, tint)).unwrap();
}

/// Creates the given files (relative to `root`) as small JPEGs.
pub fn touch_images(root: &Path, files: &[&str]) {
    for (i, f) in files.iter().enumerate() {
        write_jpeg(&root.join(f), (i * 37 % 256) as u8);
    }
}
