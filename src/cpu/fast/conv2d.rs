//! The CPU device's convolution (f32): the same results as `cpu::conv2d` (the plain reference),
//! organised for speed on a few cores.
//!
//! - Wide outputs (`ho*wo >= DIRECT_MIN_P`): one GEMM per image, images in parallel, each with a
//!   thread-local column buffer; 1x1 stride-1 unpadded convolutions multiply the input as it lies.
//! - Small outputs (deep layers, where one image's GEMM would be a few columns wide): the images
//!   of a chunk side by side in one column matrix `[kg, chunk * P]`, one multi-threaded GEMM.
//! - Weight gradient: a fixed number of image ranges in parallel, each `dW += dY_chunk
//!   cols_chunk^T` over chunks with K = chunk * P, partial sums added in range order, so the sum
//!   order never depends on the thread count (bitwise reproducible).
//! - im2col / col2im compute each output row's valid range once and copy contiguous runs
//!   (no per-element bounds tests); depthwise convolutions run per plane (`depthwise`).
//! - Dense 3x3 stride-1 convolutions (ResNet's blocks) compute all three passes with Winograd
//!   (`winograd`: F(2x2, 3x3) for the forward and the input gradient, F(3x3, 2x2) for the weight
//!   gradient): 16 multiplies per 2x2 output tile and channel pair instead of 36.
//! - Other grouped convolutions use the reference (no model here has them).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

use crate::cpu::conv2d::ConvGeom;
use crate::cpu::matmul::gemm_into;

use super::depthwise::{self, is_depthwise};
use super::winograd;

/// Output pixels per image from which the forward and the input gradient run one GEMM per image
/// (images in parallel, each image's columns still in the core's cache when its GEMM packs them)
/// rather than one GEMM over a chunk of images side by side (whose column matrix, tens of MB,
/// goes through memory twice). Measured on the 2-core AVX-512 machine, forward / input gradient:
/// ResNet-18's 16x8 3x3 128->128 at batch 32 8.4 / 8.5 ms side by side, 6.4 / 6.4 per image;
/// its 8x4 256->256 8.0 / 9.0 -> 6.9 / 6.8; ResNet-50's 16x8 3x3 512->512 at batch 16 53 / 55 ->
/// 46 / 46; MobileNetV2's 8x4 1x1 576->96 1.5 / 1.5 -> 0.6 / 0.6. At 4x2 (8 pixels) per image
/// is 1.7-2x slower. The quick demo's figures did not move with it.
const DIRECT_MIN_P: usize = 32;
/// The same choice for the weight gradient, which stays at 256 pixels: there the layout sets how
/// the images' products are grouped into partial sums (per image, or per chunk), so moving it
/// changes results in the last bits, and the quick demo's small run amplifies those into other
/// figures (direct transfer 15.9% -> SpCL 22.7% instead of 19.2% -> 35.9%). Per image would be
/// 0-25% faster for these weight gradients (ResNet-50's 16x8 1x1 1024->256: 7.9 -> 6.0 ms).
const WEIGHT_GRAD_DIRECT_MIN_P: usize = 256;
/// Floats of one chunk's column matrix (32 MiB by default): bounds the extra memory of batched
/// GEMMs.
static CHUNK_FLOATS: AtomicUsize = AtomicUsize::new(8 << 20);

/// Changes the chunk bound (floats); tests use a tiny one so several chunks run on small tensors.
/// Chunking changes only the grouping of the work, never a result beyond f32 rounding of dW.
#[doc(hidden)]
pub fn set_chunk_floats(floats: usize) {
    CHUNK_FLOATS.store(floats.max(1), Ordering::Relaxed);
}

/// Work buffers given back by `Scratch` for the next call (column matrices, gathered
/// gradients): a training step needs the same few sizes again and again, and a fresh zeroed
/// allocation of a column matrix (up to `CHUNK_FLOATS` values) costs a full `memset` each time.
static SCRATCH_POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// Buffers the pool keeps (more are freed): what one call holds at once on a few cores (the
/// Winograd path holds three per thread: channels-last input, `V`, `M`).
const SCRATCH_KEEP: usize = 8;

/// A work buffer from `SCRATCH_POOL`, returned to it on drop.
pub(super) struct Scratch(Vec<f32>);

impl Scratch {
    /// `len` values with unspecified contents (what an earlier call left): only for buffers
    /// the caller overwrites completely before reading them (GEMM outputs with `accumulate`
    /// false, `fill_row` columns, `gather_chunk` copies).
    pub(super) fn overwritten(len: usize) -> Scratch {
        let reused = {
            let mut pool = SCRATCH_POOL.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest buffer that is large enough, else the largest (it grows).
            let fit = (0..pool.len())
                .filter(|&i| pool[i].capacity() >= len)
                .min_by_key(|&i| pool[i].capacity());
            let pick = fit.or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].capacity()));
            pick.map(|i| pool.swap_remove(i))
        };
        let mut v = reused.unwrap_or_default();
        v.resize(len, 0.0);
        Scratch(v)
    }

    /// Changes the length to `len` (contents unspecified, as `overwritten`'s).
    pub(super) fn resize(&mut self, len: usize) {
        self.0.resize(len, 0.0);
    }
}

impl Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut pool = SCRATCH_POOL.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < SCRATCH_KEEP {
            pool.push(std::mem::take(&mut self.0));
        }
    }
}

/// Outputs `o` in `lo..hi` read input index `o * stride + off` inside `0..len`.
#[inline(always)]
fn valid_range(outs: usize, len: usize, stride: usize, off: isize) -> (usize, usize) {
    let lo = if off >= 0 {
        0
    } else {
        ((-off) as usize).div_ceil(stride)
    };
    let last = len as isize - 1 - off;
    let hi = if last < 0 {
        0
    } else {
        (last as usize / stride + 1).min(outs)
    };
    (lo.min(hi), hi)
}

/// Offsets (row, column) of tap (ki, kj): input = output * stride + offset.
fn tap_offsets(g: &ConvGeom, ki: usize, kj: usize) -> (isize, isize) {
    (
        (ki * g.dilation.0) as isize - g.padding.0 as isize,
        (kj * g.dilation.1) as isize - g.padding.1 as isize,
    )
}

/// Zeroes a few values (the 1-3 padding columns of a row) without a `memset` call per row.
#[inline]
fn zero_few(s: &mut [f32]) {
    match s.len() {
        0 => {}
        1 => s[0] = 0.0,
        2 => s.copy_from_slice(&[0.0; 2]),
        3 => s.copy_from_slice(&[0.0; 3]),
        _ => s.fill(0.0),
    }
}

/// Stride-1 convolutions whose output rows are as long as the input rows (the usual 3x3 pad 1):
/// a tap's valid outputs then read one contiguous run of the input plane, so im2col and col2im
/// move whole blocks instead of row after row.
fn row_aligned(g: &ConvGeom) -> bool {
    g.stride == (1, 1) && g.wo == g.w
}

/// Valid output rows `ylo..yhi` and columns `xlo..xhi` of tap (ki, kj), and the tap's offsets.
#[inline(always)]
fn tap_window(g: &ConvGeom, ki: usize, kj: usize) -> (usize, usize, usize, usize, isize, isize) {
    let (offy, offx) = tap_offsets(g, ki, kj);
    let (ylo, yhi) = valid_range(g.ho, g.h, g.stride.0, offy);
    let (xlo, xhi) = valid_range(g.wo, g.w, g.stride.1, offx);
    (ylo, yhi, xlo, xhi, offy, offx)
}

/// Writes row `r` = (cg, ki, kj) of one image's columns: `dst[oy * wo + ox]` =
/// `plane[iy * w + ix]`, zero in the padding.
fn fill_row(plane: &[f32], g: &ConvGeom, ki: usize, kj: usize, dst: &mut [f32]) {
    let (ylo, yhi, xlo, xhi, offy, offx) = tap_window(g, ki, kj);
    let wo = g.wo;
    if ylo >= yhi || xlo >= xhi {
        dst.fill(0.0);
        return;
    }
    dst[..ylo * wo].fill(0.0);
    dst[yhi * wo..].fill(0.0);
    if row_aligned(g) {
        // One copy from the first valid output to the last; the columns it wraps into (outside
        // xlo..xhi) are zeroed after.
        let (d0, d1) = (ylo * wo + xlo, (yhi - 1) * wo + xhi);
        let s0 = (ylo as isize + offy) as usize * g.w + (xlo as isize + offx) as usize;
        dst[d0..d1].copy_from_slice(&plane[s0..s0 + (d1 - d0)]);
        for out in dst[ylo * wo..yhi * wo].chunks_exact_mut(wo) {
            zero_few(&mut out[..xlo]);
            zero_few(&mut out[xhi..]);
        }
        return;
    }
    let sw = g.stride.1;
    for (oy, out) in dst[ylo * wo..yhi * wo].chunks_exact_mut(wo).enumerate() {
        let iy = ((ylo + oy) * g.stride.0) as isize + offy;
        let src = &plane[iy as usize * g.w..][..g.w];
        zero_few(&mut out[..xlo]);
        zero_few(&mut out[xhi..]);
        let start = (xlo * sw) as isize + offx;
        copy_every(&mut out[xlo..xhi], &src[start as usize..], sw);
    }
}

/// `dst[i] = src[i * stride]` for every `i` of `dst` (`src` holds at least
/// `(dst.len() - 1) * stride + 1` values). Stride 2 (every strided convolution of the models
/// here) takes pairs, which the compiler turns into vector shuffles; `step_by`'s iterator stays
/// one scalar load and a bounds test per value (half of im2col's time in a ResNet step).
#[inline(always)]
fn copy_every(dst: &mut [f32], src: &[f32], stride: usize) {
    match stride {
        1 => dst.copy_from_slice(&src[..dst.len()]),
        2 => {
            let pairs = (src.len() / 2).min(dst.len());
            for (d, pair) in dst[..pairs].iter_mut().zip(src.chunks_exact(2)) {
                *d = pair[0];
            }
            for (i, d) in dst.iter_mut().enumerate().skip(pairs) {
                *d = src[2 * i];
            }
        }
        _ => {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = src[i * stride];
            }
        }
    }
}

/// `dst[i * stride] += src[i]` for every `i` of `src` (`dst` holds at least
/// `(src.len() - 1) * stride + 1` values); stride 2 by pairs, as in [`copy_every`].
#[inline(always)]
fn add_every(dst: &mut [f32], src: &[f32], stride: usize) {
    match stride {
        1 => {
            for (d, v) in dst[..src.len()].iter_mut().zip(src) {
                *d += *v;
            }
        }
        2 => {
            let pairs = (dst.len() / 2).min(src.len());
            for (pair, v) in dst.chunks_exact_mut(2).zip(&src[..pairs]) {
                pair[0] += *v;
            }
            for (i, v) in src.iter().enumerate().skip(pairs) {
                dst[2 * i] += *v;
            }
        }
        _ => {
            for (i, v) in src.iter().enumerate() {
                dst[i * stride] += *v;
            }
        }
    }
}

/// Zeroes the values of one image's column-gradient row (tap (ki, kj)) that `add_row`'s block
/// add would carry into a neighbouring input row: the columns outside `xlo..xhi` of the valid
/// output rows. Only needed (and only called) for `row_aligned` geometries.
fn zero_wrapped(src: &mut [f32], g: &ConvGeom, ki: usize, kj: usize) {
    let (ylo, yhi, xlo, xhi, _, _) = tap_window(g, ki, kj);
    if xlo == 0 && xhi == g.wo {
        return;
    }
    for out in src[ylo * g.wo..yhi * g.wo].chunks_exact_mut(g.wo) {
        zero_few(&mut out[..xlo]);
        zero_few(&mut out[xhi..]);
    }
}

/// Adds row `r` = (cg, ki, kj) of one image's column gradient back into its input plane. For
/// `row_aligned` geometries the row must have passed through `zero_wrapped`.
fn add_row(src: &[f32], g: &ConvGeom, ki: usize, kj: usize, plane: &mut [f32]) {
    let (ylo, yhi, xlo, xhi, offy, offx) = tap_window(g, ki, kj);
    if xlo >= xhi || ylo >= yhi {
        return;
    }
    if row_aligned(g) {
        let (d0, d1) = (ylo * g.wo + xlo, (yhi - 1) * g.wo + xhi);
        let s0 = (ylo as isize + offy) as usize * g.w + (xlo as isize + offx) as usize;
        for (d, v) in plane[s0..s0 + (d1 - d0)].iter_mut().zip(&src[d0..d1]) {
            *d += *v;
        }
        return;
    }
    let sw = g.stride.1;
    for oy in ylo..yhi {
        let iy = ((oy * g.stride.0) as isize + offy) as usize;
        let start = (xlo * sw) as isize + offx;
        let dst = &mut plane[iy * g.w + start as usize..(iy + 1) * g.w];
        add_every(dst, &src[oy * g.wo + xlo..oy * g.wo + xhi], sw);
    }
}

/// Adds tap (ki, kj)'s column-gradient row of a chunk of images (`row`: [images, P], the images
/// side by side) into their planes of one channel (`planes`: [images, h*w]), one run of valid
/// outputs per output row. The window is found once for all images; planes of a few pixels
/// (deep layers) would otherwise spend more time on it than on the adds.
fn add_tap_to_planes(row: &[f32], g: &ConvGeom, ki: usize, kj: usize, planes: &mut [f32]) {
    let (p, hw, sw) = (g.p(), g.h * g.w, g.stride.1);
    for_tap_rows(g, ki, kj, |oy, iy, xlo, xhi, ix0| {
        for (src, plane) in row.chunks_exact(p).zip(planes.chunks_exact_mut(hw)) {
            let s = &src[oy * g.wo + xlo..oy * g.wo + xhi];
            add_every(&mut plane[iy * g.w + ix0..(iy + 1) * g.w], s, sw);
        }
    });
}

/// (cg, ki, kj) of column row `r`.
fn row_tap(g: &ConvGeom, r: usize) -> (usize, usize, usize) {
    (r / (g.kh * g.kw), (r / g.kw) % g.kh, r % g.kw)
}

/// One image's columns [kg, P] (group 0), sequentially.
fn im2col_image(x_img: &[f32], g: &ConvGeom, cols: &mut [f32]) {
    let hw = g.h * g.w;
    for (r, row) in cols.chunks_exact_mut(g.p()).enumerate() {
        let (cg, ki, kj) = row_tap(g, r);
        fill_row(&x_img[cg * hw..][..hw], g, ki, kj, row);
    }
}

/// Columns of images `img0..img0+nc` side by side: [kg, nc * P], rows in parallel.
fn im2col_chunk(x: &[f32], g: &ConvGeom, img0: usize, nc: usize, cols: &mut [f32]) {
    let (p, hw) = (g.p(), g.h * g.w);
    cols.par_chunks_mut(nc * p)
        .enumerate()
        .for_each(|(r, row)| {
            let (cg, ki, kj) = row_tap(g, r);
            for (j, part) in row.chunks_exact_mut(p).enumerate() {
                let plane = &x[((img0 + j) * g.c + cg) * hw..][..hw];
                fill_row(plane, g, ki, kj, part);
            }
        });
}

/// `[nc, rows, P]` (images img0.. of `t`) as `[rows, nc * P]`.
fn gather_chunk(t: &[f32], rows: usize, p: usize, img0: usize, nc: usize, out: &mut [f32]) {
    out.par_chunks_mut(nc * p).enumerate().for_each(|(r, row)| {
        for (j, part) in row.chunks_exact_mut(p).enumerate() {
            part.copy_from_slice(&t[((img0 + j) * rows + r) * p..][..p]);
        }
    });
}

fn pointwise(g: &ConvGeom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == (1, 1) && g.padding == (0, 0)
}

/// Images per chunk of a batched GEMM.
fn chunk_images(g: &ConvGeom) -> usize {
    let per_image = (g.kg().max(g.cout)) * g.p();
    (CHUNK_FLOATS.load(Ordering::Relaxed) / per_image.max(1)).clamp(1, g.n.max(1))
}

/// y [n, cout, ho, wo] from x [n, c, h, w] and weight [cout, c/groups, kh, kw] (no bias).
pub fn forward(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    if is_depthwise(g) {
        return depthwise::forward(x, w, g);
    }
    if g.groups != 1 {
        return crate::cpu::conv2d::forward(x, w, g);
    }
    if winograd::applies(g) {
        return winograd::forward(x, w, g);
    }
    let (p, kg, chw) = (g.p(), g.kg(), g.c * g.h * g.w);
    let mut y = super::zeros(g.n * g.cout * p);
    if y.is_empty() {
        return y;
    }
    if p >= DIRECT_MIN_P || g.n == 1 {
        let par = g.n == 1;
        let buf = if pointwise(g) { 0 } else { kg * p };
        y.par_chunks_mut(g.cout * p).enumerate().for_each_init(
            || Scratch::overwritten(buf),
            |cols, (img, y_img)| {
                let x_img = &x[img * chw..][..chw];
                let b = if pointwise(g) {
                    x_img
                } else {
                    im2col_image(x_img, g, cols);
                    &cols[..]
                };
                gemm_into(y_img, w, b, (g.cout, kg, p), false, false, false, par);
            },
        );
        return y;
    }
    let nc = chunk_images(g);
    let mut cols = Scratch::overwritten(kg * nc * p);
    let mut out = Scratch::overwritten(g.cout * nc * p);
    for img0 in (0..g.n).step_by(nc) {
        let c = nc.min(g.n - img0);
        let (cols, out) = (&mut cols[..kg * c * p], &mut out[..g.cout * c * p]);
        im2col_chunk(x, g, img0, c, cols);
        gemm_into(out, w, cols, (g.cout, kg, c * p), false, false, false, true);
        // [cout, c * P] -> images img0.. of [n, cout, P]
        let out = &*out;
        y[img0 * g.cout * p..(img0 + c) * g.cout * p]
            .par_chunks_mut(g.cout * p)
            .enumerate()
            .for_each(|(j, y_img)| {
                for (co, dst) in y_img.chunks_exact_mut(p).enumerate() {
                    dst.copy_from_slice(&out[co * c * p + j * p..][..p]);
                }
            });
    }
    y
}

/// dL/dx [n, c, h, w] from dL/dy [n, cout, ho, wo].
pub fn backward_input(dy: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    if is_depthwise(g) {
        return depthwise::backward_input(dy, w, g);
    }
    if g.groups != 1 {
        return crate::cpu::conv2d::backward_input(dy, w, g);
    }
    if winograd::applies(g) {
        return winograd::backward_input(dy, w, g);
    }
    let (p, kg, chw, hw) = (g.p(), g.kg(), g.c * g.h * g.w, g.h * g.w);
    let mut dx = super::zeros(g.n * chw);
    if dx.is_empty() || p == 0 {
        return dx;
    }
    if p >= DIRECT_MIN_P || g.n == 1 {
        let par = g.n == 1;
        let buf = if pointwise(g) { 0 } else { kg * p };
        dx.par_chunks_mut(chw).enumerate().for_each_init(
            || Scratch::overwritten(buf),
            |dcols, (img, dx_img)| {
                let dy_img = &dy[img * g.cout * p..][..g.cout * p];
                if pointwise(g) {
                    gemm_into(dx_img, w, dy_img, (g.c, g.cout, p), true, false, false, par);
                } else {
                    gemm_into(dcols, w, dy_img, (kg, g.cout, p), true, false, false, par);
                    if row_aligned(g) {
                        for (r, row) in dcols.chunks_exact_mut(p).enumerate() {
                            let (_, ki, kj) = row_tap(g, r);
                            zero_wrapped(row, g, ki, kj);
                        }
                    }
                    for (r, row) in dcols.chunks_exact(p).enumerate() {
                        let (cg, ki, kj) = row_tap(g, r);
                        add_row(row, g, ki, kj, &mut dx_img[cg * hw..][..hw]);
                    }
                }
            },
        );
        return dx;
    }
    let nc = chunk_images(g);
    let mut dyt = Scratch::overwritten(g.cout * nc * p);
    let mut dcols = Scratch::overwritten(kg * nc * p);
    for img0 in (0..g.n).step_by(nc) {
        let c = nc.min(g.n - img0);
        let (dyt, dcols) = (&mut dyt[..g.cout * c * p], &mut dcols[..kg * c * p]);
        gather_chunk(dy, g.cout, p, img0, c, dyt);
        gemm_into(dcols, w, dyt, (kg, g.cout, c * p), true, false, false, true);
        // col2im by input channel: a channel's kh*kw rows are contiguous in `dcols` (read once,
        // in order) and its planes of the chunk's images are contiguous in `dxt` [c, chunk, h*w]
        // (they stay in L1); reading `dcols` image by image instead strides across the whole
        // matrix (megabytes) once per image, and that miss-bound walk cost as much as the GEMM
        // in ResNet-18's 4x2 layer4. Each plane gets its taps in the same order either way.
        let taps = g.kh * g.kw;
        let mut dxt = Scratch::overwritten(g.c * c * hw);
        dcols
            .par_chunks(taps * c * p)
            .zip(dxt.par_chunks_mut(c * hw))
            .enumerate()
            .for_each(|(cg, (rows, planes))| {
                planes.fill(0.0);
                for (t, row) in rows.chunks_exact(c * p).enumerate() {
                    let (_, ki, kj) = row_tap(g, cg * taps + t);
                    add_tap_to_planes(row, g, ki, kj, planes);
                }
            });
        let dxt = &*dxt;
        dx[img0 * chw..(img0 + c) * chw]
            .par_chunks_mut(chw)
            .enumerate()
            .for_each(|(j, dx_img)| {
                for (cg, plane) in dx_img.chunks_exact_mut(hw).enumerate() {
                    plane.copy_from_slice(&dxt[(cg * c + j) * hw..][..hw]);
                }
            });
    }
    dx
}

/// Fixed number of image ranges the weight gradient is split into (independent of the thread
/// count, so the summation order, and so the result, is the same on every machine).
const WEIGHT_GRAD_PARTS: usize = 4;
/// Weight gradients of at least this many values (2 MB; narrow outputs only) are one
/// multi-threaded GEMM instead of `WEIGHT_GRAD_PARTS` single-threaded ones (ResNet-18's 4x2 layer4
/// 3x3 convolutions at 128x64 input; MobileNetV2's largest, 320 -> 1280, keeps the part split).
const PARALLEL_GEMM_MIN_OUT: usize = 1 << 19;

/// dL/dW [cout, c/groups, kh, kw] from dL/dy and x: `WEIGHT_GRAD_PARTS` image ranges in
/// parallel, each a sum of single-threaded GEMMs `dY cols^T` (per image for outputs of at least
/// `WEIGHT_GRAD_DIRECT_MIN_P` pixels, per chunk of images side by side for narrower ones), then
/// the partial sums added in range order.
pub fn backward_weight(dy: &[f32], x: &[f32], g: &ConvGeom) -> Vec<f32> {
    if is_depthwise(g) {
        return depthwise::backward_weight(dy, x, g);
    }
    if g.groups != 1 {
        return crate::cpu::conv2d::backward_weight(dy, x, g);
    }
    if winograd::applies(g) {
        return winograd::backward_weight(dy, x, g);
    }
    let (p, kg) = (g.p(), g.kg());
    if g.cout * kg == 0 || p == 0 || g.n == 0 {
        return vec![0f32; g.cout * kg];
    }
    if p < WEIGHT_GRAD_DIRECT_MIN_P && g.cout * kg >= PARALLEL_GEMM_MIN_OUT {
        // Deep layers: a large dW that the part split below would write (and sum) once per
        // part; one multi-threaded GEMM per chunk of images writes it once. The gemm crate
        // splits over output blocks, so the sum order does not depend on the thread count.
        let mut dw = vec![0f32; g.cout * kg];
        weight_grad_chunks(dy, x, g, 0..g.n, chunk_images(g), &mut dw, true);
        return dw;
    }
    let parts = WEIGHT_GRAD_PARTS.min(g.n);
    let per_part = g.n.div_ceil(parts);
    let nc = (chunk_images(g) / parts).clamp(1, per_part);
    let partials: Vec<Vec<f32>> = (0..parts)
        .into_par_iter()
        .map(|part| {
            let (lo, hi) = (part * per_part, ((part + 1) * per_part).min(g.n));
            let mut dw = vec![0f32; g.cout * kg];
            if p >= WEIGHT_GRAD_DIRECT_MIN_P {
                // Wide outputs: one image's columns at a time (they stay in cache), K = P.
                let chw = g.c * g.h * g.w;
                let mut cols = Scratch::overwritten(if pointwise(g) { 0 } else { kg * p });
                for img in lo..hi {
                    let x_img = &x[img * chw..][..chw];
                    let b = if pointwise(g) {
                        x_img
                    } else {
                        im2col_image(x_img, g, &mut cols);
                        &cols[..]
                    };
                    let dy_img = &dy[img * g.cout * p..][..g.cout * p];
                    gemm_into(
                        &mut dw,
                        dy_img,
                        b,
                        (g.cout, p, kg),
                        false,
                        true,
                        img > lo,
                        false,
                    );
                }
                return dw;
            }
            weight_grad_chunks(dy, x, g, lo..hi, nc, &mut dw, false);
            dw
        })
        .collect();
    super::sum_in_order(partials)
}

/// `dw = dY cols^T` over images `imgs`, `nc` images side by side per GEMM (K = nc * P), the
/// first chunk overwriting `dw` and the others adding to it; `parallel` lets the GEMM use the
/// thread pool (split over output blocks: the same sums whatever the thread count).
fn weight_grad_chunks(
    dy: &[f32],
    x: &[f32],
    g: &ConvGeom,
    imgs: std::ops::Range<usize>,
    nc: usize,
    dw: &mut [f32],
    parallel: bool,
) {
    let (p, kg) = (g.p(), g.kg());
    let mut dyt = Scratch::overwritten(g.cout * nc * p);
    let mut cols = Scratch::overwritten(kg * nc * p);
    for (i, img0) in imgs.clone().step_by(nc).enumerate() {
        let c = nc.min(imgs.end - img0);
        let (dyt, cols) = (&mut dyt[..g.cout * c * p], &mut cols[..kg * c * p]);
        gather_chunk(dy, g.cout, p, img0, c, dyt);
        if pointwise(g) {
            gather_chunk(x, g.c, p, img0, c, cols);
        } else {
            im2col_chunk(x, g, img0, c, cols);
        }
        let dims = (g.cout, c * p, kg);
        gemm_into(dw, dyt, cols, dims, false, true, i > 0, parallel);
    }
}

/// Calls `f(oy, iy, xlo, xhi, ix0)` for every output row of tap (ki, kj) that reads the input:
/// outputs `xlo..xhi` of row `oy` read input row `iy` from column `ix0` on, every stride.
pub(super) fn for_tap_rows(
    g: &ConvGeom,
    ki: usize,
    kj: usize,
    mut f: impl FnMut(usize, usize, usize, usize, usize),
) {
    let (ylo, yhi, xlo, xhi, offy, offx) = tap_window(g, ki, kj);
    if xlo >= xhi {
        return;
    }
    let ix0 = ((xlo * g.stride.1) as isize + offx) as usize;
    for oy in ylo..yhi {
        let iy = ((oy * g.stride.0) as isize + offy) as usize;
        f(oy, iy, xlo, xhi, ix0);
    }
}

/// Lanes of `dot`'s partial sums.
pub(super) const DOT_LANES: usize = 16;

/// Dot product with 16 independent partial sums (vectorises; fixed order).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; DOT_LANES];
    let (ca, cb) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..DOT_LANES {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
