//! Ranked-list pictures: one PNG per query, the query on the left (grey border), then its top
//! gallery matches in rank order with green (same identity) or red (different) borders. Under
//! each image: its rank and distance (`#3 0.412`) and its id (`id 23`); under the query its id
//! and, when known, its AP.
//!
//! Images are read with the crate's one image reader ([`crate::data::decode::decode_rgb`]), which
//! recognises a file by its content, not its extension.

use crate::data::decode::decode_rgb;
use crate::data::DataError;
use crate::eval::metrics::{top_ranked, EvalResult};
use image::{imageops, Rgb, RgbImage};
use std::path::{Path, PathBuf};

const THUMB_W: u32 = 64;
const THUMB_H: u32 = 128;
const BORDER: u32 = 4;
const GAP: u32 = 4;
/// Extra space between the query and its ranked list.
const QUERY_GAP: u32 = 20;
/// Glyph scale of the 3x5 bitmap font: 6x10 pixels, 8 pixels per character.
const SCALE: u32 = 2;
const LINE_H: u32 = 6 * SCALE;

/// Errors of the ranked-list pictures, naming the image or output file.
#[derive(Debug, thiserror::Error)]
pub enum VisualizeError {
    #[error(transparent)]
    Image(#[from] DataError),
    #[error("writing {}: {message}", crate::io::shown(path))]
    Write { path: PathBuf, message: String },
}

/// One ranked gallery image.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedImage {
    pub path: PathBuf,
    /// Same identity as the query.
    pub is_match: bool,
    /// Distance to the query (the ranking's own distance: squared Euclidean or re-ranked).
    pub distance: f32,
    pub pid: i64,
}

/// What to draw for one query: its image and id, its AP when it has one, and its ranked gallery.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedList {
    pub query_index: usize,
    pub query_image: PathBuf,
    pub query_pid: i64,
    pub average_precision: Option<f64>,
    pub gallery: Vec<RankedImage>,
}

fn thumbnail(path: &Path) -> Result<RgbImage, DataError> {
    Ok(imageops::resize(
        &decode_rgb(path)?,
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

/// 3x5 glyphs (rows top to bottom, 3 bits each, MSB = left) of the characters the labels use.
fn glyph(c: char) -> [u8; 5] {
    match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        '#' => [5, 7, 5, 7, 5],
        'i' => [2, 0, 2, 2, 2],
        'd' => [1, 1, 7, 5, 7],
        'A' => [2, 5, 7, 5, 5],
        'P' => [7, 5, 7, 4, 4],
        'q' => [0, 7, 5, 7, 1],
        _ => [0; 5],
    }
}

/// Draws `text` with its top-left corner at (x, y), clipped to `max_w` pixels.
fn draw_text(canvas: &mut RgbImage, text: &str, x: u32, y: u32, max_w: u32) {
    for (k, c) in text.chars().enumerate() {
        let x0 = x + k as u32 * 4 * SCALE;
        if x0 + 3 * SCALE > x + max_w {
            break;
        }
        for (row, bits) in glyph(c).iter().enumerate() {
            for col in 0..3u32 {
                if bits >> (2 - col) & 1 == 1 {
                    for sy in 0..SCALE {
                        for sx in 0..SCALE {
                            let (px, py) = (x0 + col * SCALE + sx, y + row as u32 * SCALE + sy);
                            if px < canvas.width() && py < canvas.height() {
                                canvas.put_pixel(px, py, Rgb([0, 0, 0]));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Draws one ranked list and writes it to `out` (PNG, written atomically).
///
/// Errors: an image that cannot be read (named, with the reader's reason) or `out` cannot be written.
pub fn draw_ranked_list(list: &RankedList, out: &Path) -> Result<(), VisualizeError> {
    let cell_w = THUMB_W + 2 * BORDER;
    let cell_h = THUMB_H + 2 * BORDER;
    let n = list.gallery.len() as u32;
    let width = GAP + cell_w + QUERY_GAP + n * (cell_w + GAP);
    let height = GAP + cell_h + 2 * LINE_H + 2 * GAP;
    let mut canvas = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
    let text_y = GAP + cell_h + GAP;
    paste_with_border(
        &mut canvas,
        &thumbnail(&list.query_image)?,
        GAP,
        GAP,
        Rgb([128, 128, 128]),
    );
    let ap = list
        .average_precision
        .map_or("AP -".to_string(), |ap| format!("AP {ap:.3}"));
    draw_text(&mut canvas, &ap, GAP, text_y, cell_w);
    draw_text(
        &mut canvas,
        &format!("id {}", list.query_pid),
        GAP,
        text_y + LINE_H,
        cell_w,
    );
    for (r, item) in list.gallery.iter().enumerate() {
        let colour = if item.is_match {
            Rgb([0, 170, 0])
        } else {
            Rgb([220, 0, 0])
        };
        let x = GAP + cell_w + QUERY_GAP + r as u32 * (cell_w + GAP);
        paste_with_border(&mut canvas, &thumbnail(&item.path)?, x, GAP, colour);
        let label = format!("#{} {:.3}", r + 1, item.distance);
        draw_text(&mut canvas, &label, x, text_y, cell_w);
        draw_text(
            &mut canvas,
            &format!("id {}", item.pid),
            x,
            text_y + LINE_H,
            cell_w,
        );
    }
    let write_err = |message: String| VisualizeError::Write {
        path: out.to_path_buf(),
        message,
    };
    let mut bytes = Vec::new();
    canvas
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| write_err(format!("encoding PNG: {e}")))?;
    crate::io::write_atomic(out, &bytes).map_err(|e| write_err(e.to_string()))
}

/// One side of a ranking (the queries or the gallery), row-aligned with its features: image
/// paths (already resolved against the dataset root), person ids and camera ids.
#[derive(Clone, Copy, Debug)]
pub struct RankSide<'a> {
    pub paths: &'a [PathBuf],
    pub pids: &'a [i64],
    pub camids: &'a [i64],
}

/// Which queries to draw: `count` spread evenly over the query set (the same queries for every
/// model of the same data, so pictures before and after training compare), or with `worst_first`
/// the `count` lowest-AP valid queries.
pub fn pick_queries(result: &EvalResult, count: usize, worst_first: bool) -> Vec<usize> {
    let n = result.num_queries;
    if worst_first {
        let mut scored: Vec<(usize, f64)> = result
            .per_query
            .iter()
            .enumerate()
            .filter_map(|(q, s)| s.map(|s| (q, s.average_precision)))
            .collect();
        scored.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        scored.into_iter().take(count).map(|(q, _)| q).collect()
    } else {
        let count = count.min(n);
        (0..count).map(|s| s * n / count).collect()
    }
}

/// The ranked list of query `q` from its distance row `dist` ([num_gallery], smaller = closer):
/// the first `top` valid gallery images (Market protocol: junk and same-camera true matches
/// removed, see [`top_ranked`]).
pub fn ranked_list(
    q: usize,
    dist: &[f32],
    query: &RankSide<'_>,
    gallery: &RankSide<'_>,
    result: &EvalResult,
    top: usize,
) -> RankedList {
    let ranked = top_ranked(
        dist,
        query.pids[q],
        query.camids[q],
        gallery.pids,
        gallery.camids,
        top,
    );
    RankedList {
        query_index: q,
        query_image: query.paths[q].clone(),
        query_pid: query.pids[q],
        average_precision: result
            .per_query
            .get(q)
            .copied()
            .flatten()
            .map(|s| s.average_precision),
        gallery: ranked
            .iter()
            .map(|&(j, is_match)| RankedImage {
                path: gallery.paths[j].clone(),
                is_match,
                distance: dist[j],
                pid: gallery.pids[j],
            })
            .collect(),
    }
}

/// Draws the ranked lists (top 10) of `picks` into `dir` as `NNN_<query file stem>.png`, with
/// distances from `rows(first_query, count, out)` (the evaluation's own distance rows). Returns
/// the files written and one message per picture that failed: pictures are an optional output
/// and never abort what the caller already produced.
pub fn draw_ranked_lists(
    picks: &[usize],
    query: &RankSide<'_>,
    gallery: &RankSide<'_>,
    result: &EvalResult,
    rows: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
    dir: &Path,
) -> (Vec<PathBuf>, Vec<String>) {
    let mut written = Vec::new();
    let mut errors = Vec::new();
    let mut dist = vec![0f32; gallery.pids.len()];
    for (order, &q) in picks.iter().enumerate() {
        rows(q, 1, &mut dist);
        let list = ranked_list(q, &dist, query, gallery, result, 10);
        let stem = query.paths[q]
            .file_stem()
            .map_or(format!("query_{q}"), |s| s.to_string_lossy().into_owned());
        let out = dir.join(format!("{order:03}_{stem}.png"));
        match draw_ranked_list(&list, &out) {
            Ok(()) => written.push(out),
            Err(e) => errors.push(format!(
                "query {q} ({}): {e}",
                crate::io::shown(&query.paths[q])
            )),
        }
    }
    (written, errors)
}
