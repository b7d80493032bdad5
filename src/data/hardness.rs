//! A training-free hardness probe for re-ID data: colour-histogram features and a diagonal metric.
//!
//! Used to check that the synthetic benchmark is neither trivial nor hopeless before any network exists, and to
//! put a number on the gap between its domains. The retrieval scores (mAP, rank-1) are computed by `eval`
//! (`eval::hardness`), which sits above `data` in the layering.
//!
//! Feature: the central body region (the middle half of the width, where a detector-centred pedestrian is; the
//! sides are mostly background, which would otherwise dominate) cut into 4 horizontal stripes (head, torso,
//! thighs, legs), each described by an HSV histogram (8 hue x 3 saturation x 3 value bins), square-rooted
//! (Hellinger) and L2-normalised.

use image::RgbImage;

const STRIPES: usize = 4;
const H_BINS: usize = 8;
const S_BINS: usize = 3;
const V_BINS: usize = 3;
pub const FEATURE_DIM: usize = STRIPES * H_BINS * S_BINS * V_BINS;

fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let d = max - min;
    let h = if d <= 0.0 {
        0.0
    } else if max == r {
        ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        (b - r) / d + 2.0
    } else {
        (r - g) / d + 4.0
    } / 6.0;
    let s = if max > 0.0 { d / max } else { 0.0 };
    (h, s, max)
}

/// The colour-histogram feature of one image (`FEATURE_DIM` floats, unit L2 norm).
pub fn histogram_feature(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut feat = vec![0f32; FEATURE_DIM];
    let (x0, x1) = (w / 4, (3 * w).div_ceil(4).max(w / 4 + 1));
    for (y, row) in img.as_raw().chunks(w * 3).enumerate() {
        let stripe = (y * STRIPES / h.max(1)).min(STRIPES - 1);
        for px in row[x0 * 3..x1 * 3].chunks(3) {
            let (hh, s, v) = rgb_to_hsv(
                px[0] as f32 / 255.0,
                px[1] as f32 / 255.0,
                px[2] as f32 / 255.0,
            );
            let hb = ((hh * H_BINS as f32) as usize).min(H_BINS - 1);
            let sb = ((s * S_BINS as f32) as usize).min(S_BINS - 1);
            let vb = ((v * V_BINS as f32) as usize).min(V_BINS - 1);
            feat[((stripe * H_BINS + hb) * S_BINS + sb) * V_BINS + vb] += 1.0;
        }
    }
    feat.iter_mut().for_each(|v| *v = v.sqrt());
    l2_normalise(&mut feat);
    feat
}

pub fn l2_normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 0.0 {
        v.iter_mut().for_each(|x| *x /= n);
    }
}

/// Per-dimension weights that a "trained" diagonal metric learns from labelled features: the Fisher ratio
/// between-identity variance / within-identity variance. Applying weights learned on one domain to another is a
/// tiny, honest stand-in for "train on source, test on target".
pub fn fisher_weights(features: &[&[f32]], pids: &[i32]) -> Vec<f32> {
    let dim = features.first().map_or(0, |f| f.len());
    let mut by_pid: std::collections::BTreeMap<i32, Vec<usize>> = Default::default();
    for (i, &p) in pids.iter().enumerate() {
        by_pid.entry(p).or_default().push(i);
    }
    let n = features.len().max(1) as f64;
    let mut mean = vec![0f64; dim];
    for f in features {
        for (m, &v) in mean.iter_mut().zip(f.iter()) {
            *m += v as f64 / n;
        }
    }
    let (mut within, mut between) = (vec![0f64; dim], vec![0f64; dim]);
    for members in by_pid.values() {
        let k = members.len() as f64;
        for d in 0..dim {
            let m: f64 = members.iter().map(|&i| features[i][d] as f64).sum::<f64>() / k;
            between[d] += k * (m - mean[d]).powi(2);
            within[d] += members
                .iter()
                .map(|&i| (features[i][d] as f64 - m).powi(2))
                .sum::<f64>();
        }
    }
    (0..dim)
        .map(|d| (between[d] / (within[d] + 1e-3 * n)) as f32)
        .collect()
}

/// Applies diagonal metric weights (sqrt, so squared distances are weighted by `w`) and re-normalises.
pub fn weighted(feature: &[f32], weights: &[f32]) -> Vec<f32> {
    let mut v: Vec<f32> = feature
        .iter()
        .zip(weights)
        .map(|(x, w)| x * w.sqrt())
        .collect();
    l2_normalise(&mut v);
    v
}
