//! Training and evaluation transforms, matching the reference toolboxes' torchvision pipeline on PIL images:
//!
//! ```text
//! Resize((H, W), BICUBIC) -> RandomHorizontalFlip(0.5) -> Pad(10) -> RandomCrop((H, W))
//!   -> ToTensor -> Normalize(ImageNet) -> RandomErasing(p=0.5, sl=0.02, sh=0.4, r1=0.3, mean=ImageNet mean)
//! ```
//!
//! Resizing follows Pillow's `Image.resize` step for step (libImaging/Resample.c: 8-bit images, 22-bit fixed-point
//! weights, a separable convolution with the filter widened when downscaling, horizontal pass first with the
//! intermediate rounded to u8; bicubic uses a = -0.5), because torchvision's `Resize` on a PIL image calls exactly
//! that. The tests check a hand-computed Pillow case and a float reference of the same convolution (within one
//! level); no Pillow output was available to compare against byte for byte. It is *not* `torch.nn.functional.interpolate`
//! (a = -0.75, no antialiasing), which only applies to tensor inputs.
//!
//! Random erasing follows the reference `RandomErasing` class of MMT/SpCL: it runs on the already normalised
//! tensor and writes the raw ImageNet mean (0.485, 0.456, 0.406) into it, so the erased patch is not the mean
//! colour after normalisation. That quirk is kept because trained models and reported numbers depend on it.
//!
//! Flip, pad and crop are fused into one index mapping while the normalised CHW output is written.
//! Every random decision comes from a generator keyed by (seed, epoch, sample position, view), so a batch is
//! reproducible regardless of thread scheduling, and two views of one image are independent (MMT).

use super::rng::Rng;
use image::RgbImage;
use rayon::prelude::*;

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Resampling filter for `resize` (Pillow's BILINEAR = 2 and BICUBIC = 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Interpolation {
    Bilinear,
    Bicubic,
}

/// The augmentation settings (defaults: shared/ALGORITHMS.md section 1).
#[derive(Clone, Debug, PartialEq)]
pub struct AugmentConfig {
    pub height: usize,
    pub width: usize,
    pub interpolation: Interpolation,
    /// Probability of a horizontal flip.
    pub flip_p: f64,
    /// Zero padding on every side before the random crop back to (height, width); 0 disables pad + crop.
    pub pad: usize,
    /// Probability of random erasing.
    pub erase_p: f64,
    /// Erased area as a fraction of the image, drawn uniformly in [min, max].
    pub erase_area: (f64, f64),
    /// Aspect ratio of the erased box drawn uniformly in [r1, 1/r1].
    pub erase_min_aspect: f64,
    /// Value written into the normalised tensor for each channel (the reference writes the raw ImageNet mean).
    pub erase_fill: [f32; 3],
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl AugmentConfig {
    /// The training pipeline of MMT/SpCL/Cluster Contrast at the given size (256x128 in the papers).
    pub fn train(height: usize, width: usize) -> Self {
        AugmentConfig {
            height,
            width,
            interpolation: Interpolation::Bicubic,
            flip_p: 0.5,
            pad: 10,
            erase_p: 0.5,
            erase_area: (0.02, 0.4),
            erase_min_aspect: 0.3,
            erase_fill: IMAGENET_MEAN,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
        }
    }

    /// Evaluation: resize and normalise only.
    pub fn eval(height: usize, width: usize) -> Self {
        AugmentConfig {
            flip_p: 0.0,
            pad: 0,
            erase_p: 0.0,
            ..Self::train(height, width)
        }
    }

    /// Floats per image in the output (3 x height x width).
    pub fn image_len(&self) -> usize {
        3 * self.height * self.width
    }
}

/// The random decisions for one sample, drawn in torchvision's order (flip, crop, erase).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentParams {
    pub flip: bool,
    /// Offset of the crop window inside the padded image, each in [0, 2 * pad].
    pub crop_top: usize,
    pub crop_left: usize,
    /// Erased box (top, left, height, width) in output coordinates.
    pub erase: Option<(usize, usize, usize, usize)>,
}

/// Identifies one augmented sample: the same key always gives the same augmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SampleKey {
    pub seed: u64,
    pub epoch: u64,
    /// Position of the sample in the epoch's stream (so an image drawn twice gets two augmentations).
    pub index: u64,
    /// 0 for the first augmentation, 1 for MMT's second independent one.
    pub view: u64,
}

impl SampleKey {
    pub fn rng(&self) -> Rng {
        Rng::keyed(&[self.seed, self.epoch, self.index, self.view])
    }
}

pub fn draw_params(cfg: &AugmentConfig, rng: &mut Rng) -> AugmentParams {
    let flip = cfg.flip_p > 0.0 && rng.next_f64() < cfg.flip_p;
    let (crop_top, crop_left) = if cfg.pad > 0 {
        (rng.below(2 * cfg.pad + 1), rng.below(2 * cfg.pad + 1))
    } else {
        (0, 0)
    };
    let erase = if cfg.erase_p > 0.0 {
        draw_erase_box(cfg, rng)
    } else {
        None
    };
    AugmentParams {
        flip,
        crop_top,
        crop_left,
        erase,
    }
}

/// The reference `RandomErasing.__call__`: up to 100 attempts to fit a box; Python's `round` (ties to even).
fn draw_erase_box(cfg: &AugmentConfig, rng: &mut Rng) -> Option<(usize, usize, usize, usize)> {
    if rng.next_f64() >= cfg.erase_p {
        return None;
    }
    let (img_h, img_w) = (cfg.height as f64, cfg.width as f64);
    for _ in 0..100 {
        let target_area = rng.uniform(cfg.erase_area.0, cfg.erase_area.1) * img_h * img_w;
        let aspect = rng.uniform(cfg.erase_min_aspect, 1.0 / cfg.erase_min_aspect);
        let h = (target_area * aspect).sqrt().round_ties_even() as usize;
        let w = (target_area / aspect).sqrt().round_ties_even() as usize;
        if w < cfg.width && h < cfg.height {
            let top = rng.range_inclusive(0, (cfg.height - h) as i64) as usize;
            let left = rng.range_inclusive(0, (cfg.width - w) as i64) as usize;
            return Some((top, left, h, w));
        }
    }
    None
}

/// Resizes (when needed), then flips, pads, crops, normalises and erases into `out` (CHW, `cfg.image_len()`).
pub fn augment_into(
    cfg: &AugmentConfig,
    image: &RgbImage,
    params: &AugmentParams,
    out: &mut [f32],
) {
    let resized;
    let img = if image.height() as usize == cfg.height && image.width() as usize == cfg.width {
        image
    } else {
        resized = resize(image, cfg.height, cfg.width, cfg.interpolation);
        &resized
    };
    write_normalised(cfg, img, params, out);
    if let Some((top, left, h, w)) = params.erase {
        erase(
            out,
            cfg.height,
            cfg.width,
            (top, left, h, w),
            cfg.erase_fill,
        );
    }
}

/// Augments one decoded image for a sample key (draws the parameters from the key's stream).
pub fn augment_keyed(
    cfg: &AugmentConfig,
    image: &RgbImage,
    key: SampleKey,
    out: &mut [f32],
) -> AugmentParams {
    let params = draw_params(cfg, &mut key.rng());
    augment_into(cfg, image, &params, out);
    params
}

/// Augments a batch in parallel into one NCHW buffer (`images.len() * cfg.image_len()` floats).
pub fn augment_batch(
    cfg: &AugmentConfig,
    images: &[&RgbImage],
    keys: &[SampleKey],
    out: &mut [f32],
) {
    assert_eq!(images.len(), keys.len());
    assert_eq!(out.len(), images.len() * cfg.image_len());
    out.par_chunks_mut(cfg.image_len())
        .zip(images.par_iter().zip(keys.par_iter()))
        .for_each(|(dst, (img, key))| {
            augment_keyed(cfg, img, *key, dst);
        });
}

/// Flip + pad + crop as one index map, writing `(x / 255 - mean) / std` per channel.
fn write_normalised(cfg: &AugmentConfig, img: &RgbImage, p: &AugmentParams, out: &mut [f32]) {
    let (h, w) = (cfg.height, cfg.width);
    assert_eq!(
        out.len(),
        3 * h * w,
        "output slice must hold 3 x {h} x {w} floats"
    );
    let mut lut = [[0f32; 256]; 3];
    for (c, table) in lut.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            *slot = (v as f32 / 255.0 - cfg.mean[c]) / cfg.std[c];
        }
    }
    let zero = [lut[0][0], lut[1][0], lut[2][0]]; // padding is black before normalisation
    let src = img.as_raw();
    let plane = h * w;
    for y in 0..h {
        // Row in the un-padded (flipped) image; outside means padding.
        let sy = (y + p.crop_top) as isize - cfg.pad as isize;
        for x in 0..w {
            let sx = (x + p.crop_left) as isize - cfg.pad as isize;
            let o = y * w + x;
            if sy < 0 || sy >= h as isize || sx < 0 || sx >= w as isize {
                for c in 0..3 {
                    out[c * plane + o] = zero[c];
                }
            } else {
                let sx = if p.flip {
                    w - 1 - sx as usize
                } else {
                    sx as usize
                };
                let i = (sy as usize * w + sx) * 3;
                for c in 0..3 {
                    out[c * plane + o] = lut[c][src[i + c] as usize];
                }
            }
        }
    }
}

fn erase(
    out: &mut [f32],
    h: usize,
    w: usize,
    (top, left, eh, ew): (usize, usize, usize, usize),
    fill: [f32; 3],
) {
    for (c, &value) in fill.iter().enumerate() {
        for y in top..(top + eh).min(h) {
            let row = c * h * w + y * w;
            out[row + left..row + (left + ew).min(w)].fill(value);
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Pillow-exact resampling (libImaging/Resample.c).

/// Pillow's fixed-point precision for 8-bit images.
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bilinear_filter(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5; // Pillow's choice (PyTorch's interpolate uses -0.75)
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

impl Interpolation {
    fn support(self) -> f64 {
        match self {
            Interpolation::Bilinear => 1.0,
            Interpolation::Bicubic => 2.0,
        }
    }

    /// The continuous filter kernel (exposed for reference implementations in tests).
    pub fn kernel(self, x: f64) -> f64 {
        match self {
            Interpolation::Bilinear => bilinear_filter(x),
            Interpolation::Bicubic => bicubic_filter(x),
        }
    }
}

/// Per output position: the first input index, the number of taps, and normalised weights (f64).
#[derive(Clone, Debug)]
pub struct ResampleWeights {
    pub ksize: usize,
    pub bounds: Vec<(usize, usize)>,
    pub weights: Vec<f64>,
}

/// Pillow's `precompute_coeffs`: the filter is widened by the scale when downscaling (antialiasing).
pub fn resample_weights(in_size: usize, out_size: usize, interp: Interpolation) -> ResampleWeights {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = interp.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0.0; out_size * ksize];
    for xx in 0..out_size {
        let center = (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // `as i64` truncates toward zero like C's `(int)` cast.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let taps = xmax.saturating_sub(xmin);
        let k = &mut weights[xx * ksize..xx * ksize + taps];
        let mut total = 0.0;
        for (x, kx) in k.iter_mut().enumerate() {
            *kx = interp.kernel((x as f64 + xmin as f64 - center + 0.5) * ss);
            total += *kx;
        }
        if total != 0.0 {
            k.iter_mut().for_each(|v| *v /= total);
        }
        bounds.push((xmin, taps));
    }
    ResampleWeights {
        ksize,
        bounds,
        weights,
    }
}

/// Pillow's `normalize_coeffs_8bpc`: round the weights to fixed point, away from zero at .5.
fn fixed_point(weights: &[f64]) -> Vec<i32> {
    let one = (1u32 << PRECISION_BITS) as f64;
    weights
        .iter()
        .map(|&k| {
            if k < 0.0 {
                (-0.5 + k * one) as i32
            } else {
                (0.5 + k * one) as i32
            }
        })
        .collect()
}

#[inline]
fn clip8(v: i32) -> u8 {
    if v >= (1 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Resizes an RGB image to (out_h, out_w) exactly as Pillow's `Image.resize(size, BILINEAR|BICUBIC)` does.
pub fn resize(img: &RgbImage, out_h: usize, out_w: usize, interp: Interpolation) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    assert!(
        out_h > 0 && out_w > 0 && in_w > 0 && in_h > 0,
        "resize needs non-empty images"
    );
    let mut current: Vec<u8> = img.as_raw().clone();
    let mut cur_w = in_w;
    if out_w != in_w {
        let rw = resample_weights(in_w, out_w, interp);
        let k = fixed_point(&rw.weights);
        let mut next = vec![0u8; in_h * out_w * 3];
        next.chunks_mut(out_w * 3).enumerate().for_each(|(y, row)| {
            let src = &current[y * in_w * 3..(y + 1) * in_w * 3];
            for ((xx, &(xmin, taps)), out) in
                rw.bounds.iter().enumerate().zip(row.chunks_exact_mut(3))
            {
                let kk = &k[xx * rw.ksize..xx * rw.ksize + taps];
                let mut ss = [1i32 << (PRECISION_BITS - 1); 3];
                for (px, &w) in src[xmin * 3..(xmin + taps) * 3].chunks_exact(3).zip(kk) {
                    ss[0] += px[0] as i32 * w;
                    ss[1] += px[1] as i32 * w;
                    ss[2] += px[2] as i32 * w;
                }
                out[0] = clip8(ss[0]);
                out[1] = clip8(ss[1]);
                out[2] = clip8(ss[2]);
            }
        });
        current = next;
        cur_w = out_w;
    }
    if out_h != in_h {
        let rw = resample_weights(in_h, out_h, interp);
        let k = fixed_point(&rw.weights);
        let mut next = vec![0u8; out_h * cur_w * 3];
        let stride = cur_w * 3;
        // Accumulate whole rows tap by tap: the same sums as Pillow's per-pixel loop, in a vectorisable order.
        let mut acc = vec![0i32; stride];
        next.chunks_mut(stride).enumerate().for_each(|(yy, row)| {
            let (ymin, taps) = rw.bounds[yy];
            let kk = &k[yy * rw.ksize..yy * rw.ksize + taps];
            acc.fill(1 << (PRECISION_BITS - 1));
            for (t, &w) in kk.iter().enumerate() {
                let src = &current[(ymin + t) * stride..(ymin + t + 1) * stride];
                for (a, &v) in acc.iter_mut().zip(src) {
                    *a += v as i32 * w;
                }
            }
            for (out, &a) in row.iter_mut().zip(&acc) {
                *out = clip8(a);
            }
        });
        current = next;
    }
    RgbImage::from_raw(out_w as u32, out_h as u32, current)
        .expect("buffer size matches the output size")
}

/// CHW floats of an 8-bit RGB image: x/255, then (x - mean) / std (ToTensor + Normalize(ImageNet)).
pub fn to_normalised_chw(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let raw = img.as_raw();
    let mut out = vec![0f32; 3 * w * h];
    for c in 0..3 {
        for i in 0..w * h {
            out[c * w * h + i] =
                (raw[i * 3 + c] as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    out
}

/// torchvision's ImageNet evaluation input: Resize(256) (shorter side, bilinear with antialias),
/// CenterCrop(224), ToTensor, Normalize. Returns [3, 224, 224] as CHW floats.
pub fn imagenet_input(path: &std::path::Path) -> Result<Vec<f32>, super::DataError> {
    let img = super::decode::decode_rgb(path)?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (nw, nh) = if w <= h {
        (256, (256.0 * h as f64 / w as f64) as usize)
    } else {
        ((256.0 * w as f64 / h as f64) as usize, 256)
    };
    let r = resize(&img, nh, nw, Interpolation::Bilinear);
    let top = ((nh as f64 - 224.0) / 2.0).round_ties_even() as u32;
    let left = ((nw as f64 - 224.0) / 2.0).round_ties_even() as u32;
    let crop = image::imageops::crop_imm(&r, left, top, 224, 224).to_image();
    Ok(to_normalised_chw(&crop))
}

/// The re-ID test transform of the reference toolboxes: Resize((height, width)) bicubic, ToTensor,
/// Normalize(ImageNet). Returns [3, height, width] as CHW floats.
pub fn test_input(
    path: &std::path::Path,
    height: usize,
    width: usize,
) -> Result<Vec<f32>, super::DataError> {
    Ok(to_normalised_chw(&resize(
        &super::decode::decode_rgb(path)?,
        height,
        width,
        Interpolation::Bicubic,
    )))
}
