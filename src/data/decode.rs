//! Image decoding with an explicit completeness check.
//!
//! The JPEG decoder happily returns a grey-filled image for a file cut short (a half-copied dataset), which
//! would silently poison training, so a JPEG must end its last scan with an EOI marker. That check is exact:
//! inside entropy-coded data 0xFF is always followed by 0x00 (stuffing) or a restart marker, so 0xFFD9 after the
//! last start-of-scan can only be the real end of image.

use super::datasets::DataError;
use image::RgbImage;
use std::path::Path;

/// Reads and decodes an image file to 8-bit RGB; errors name the path.
pub fn decode_rgb(path: &Path) -> Result<RgbImage, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::BadImage {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    decode_rgb_bytes(&bytes, path)
}

/// Decodes in-memory image bytes; `path` is only used in error messages.
pub fn decode_rgb_bytes(bytes: &[u8], path: &Path) -> Result<RgbImage, DataError> {
    let bad = |reason: String| DataError::BadImage {
        path: path.to_path_buf(),
        reason,
    };
    if bytes.is_empty() {
        return Err(bad("empty file".into()));
    }
    if bytes.starts_with(&[0xFF, 0xD8]) && !jpeg_is_complete(bytes) {
        return Err(bad(
            "truncated JPEG (no end-of-image marker after the last scan)".into(),
        ));
    }
    let img = image::load_from_memory(bytes).map_err(|e| bad(e.to_string()))?;
    if img.width() == 0 || img.height() == 0 {
        return Err(bad("zero-sized image".into()));
    }
    Ok(img.to_rgb8())
}

/// True when a JPEG stream has an EOI marker (FF D9) after its last start-of-scan (FF DA).
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    match last_sos {
        Some(pos) => bytes[pos..].windows(2).any(|w| w == [0xFF, 0xD9]),
        None => false,
    }
}
