//! Ranked-list pictures: one PNG per query, the query on the left (grey border), then its top
//! gallery matches in rank order with green (same identity) or red (different) borders.

use image::{imageops, Rgb, RgbImage};
use std::path::{Path, PathBuf};

const THUMB_W: u32 = 64;
const THUMB_H: u32 = 128;
const BORDER: u32 = 4;
const GAP: u32 = 4;
/// Extra space between the query and its ranked list.
const QUERY_GAP: u32 = 20;

/// What to draw for one query: its image and the ranked gallery images with match flags.
pub struct RankedList {
    pub query_index: usize,
    pub query_image: PathBuf,
    pub gallery: Vec<(PathBuf, bool)>,
}

fn thumbnail(path: &Path) -> anyhow::Result<RgbImage> {
    use anyhow::Context;
    let img = image::open(path).with_context(|| format!("cannot read image {}", path.display()))?;
    Ok(imageops::resize(
        &img.to_rgb8(),
        THUMB_W,
        THUMB_H,
        imageops::FilterType::Triangle,
    ))
}

fn paste_with_border(canvas: &mut RgbImage, thumb: &RgbImage, x: u32, y: u32, colour: Rgb<u8>) {
    let (w, h) = (THUMB_W + 2 * BORDER, THUMB_H + 2 * BORDER);
    for dy in 0..h {
        for dx in 0..w {
            canvas.put_pixel(x + dx, y + dy, colour);
        }
    }
    imageops::replace(canvas, thumb, (x + BORDER) as i64, (y + BORDER) as i64);
}

/// Draws one ranked list and writes it to `out` (PNG, written atomically).
pub fn draw_ranked_list(list: &RankedList, out: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
    let cell_w = THUMB_W + 2 * BORDER;
    let n = list.gallery.len() as u32;
    let width = GAP + cell_w + QUERY_GAP + n * (cell_w + GAP);
    let height = THUMB_H + 2 * BORDER + 2 * GAP;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    paste_with_border(
        &mut canvas,
        &thumbnail(&list.query_image)?,
        GAP,
        GAP,
        Rgb([128, 128, 128]),
    );
    for (r, (path, is_match)) in list.gallery.iter().enumerate() {
        let colour = if *is_match {
            Rgb([0, 170, 0])
        } else {
            Rgb([220, 0, 0])
        };
        let x = GAP + cell_w + QUERY_GAP + r as u32 * (cell_w + GAP);
        paste_with_border(&mut canvas, &thumbnail(path)?, x, GAP, colour);
    }
    let mut bytes = Vec::new();
    canvas
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .context("encoding PNG")?;
    crate::io::write_atomic(out, &bytes).with_context(|| format!("writing {}", out.display()))
}
