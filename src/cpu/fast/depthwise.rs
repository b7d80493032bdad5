//! Depthwise convolution (groups = channels, one filter per channel: MobileNetV2's 3x3 layers)
//! on the CPU device, plane by plane.
//!
//! MobileNetV2's deep planes are tiny (8x4, 4x2 at 128x64 input), so a loop per output row and
//! tap spends its time on bounds and call overhead. Instead each input plane is zero-padded once
//! and split into its stride phases (`PhasePlanes`): phase (a, b) holds the padded pixels
//! (i * sh + a, j * sw + b), so tap (ki, kj) reads one phase at a fixed offset for every output,
//! and a whole tap is one contiguous multiply-add over a "wide" output plane whose rows are as
//! long as the phase rows (the extra columns are computed and dropped).
//!
//! The results are bit-for-bit those of the per-row loops this replaced (and, up to f32
//! rounding, of the reference `cpu::conv2d`): each output (or input-gradient) value still
//! starts at +0 and adds its taps' products in (ki, kj) order, multiply then add. The padding
//! and the dropped columns only add products with a zero factor, ±0, and a sum that starts at +0
//! is never -0 (x + y is -0 only when both are -0), so adding ±0 leaves it unchanged. The weight
//! gradient keeps its summation order too (see `backward_weight`).
//!
//! Small planes (and short-row weight gradients) run eight images of a channel side by side, the
//! planes interleaved position by position (`Lanes`), so each multiply-add advances eight planes
//! in one vector; every lane does exactly the per-plane arithmetic, so the values are the same.

use rayon::prelude::*;

use crate::cpu::conv2d::ConvGeom;

/// Whether `g` is depthwise: one input and one output channel per group.
pub(crate) fn is_depthwise(g: &ConvGeom) -> bool {
    g.groups > 1 && g.cin_g() == 1 && g.cout_g() == 1
}

/// The stride phases of one zero-padded plane, or of an input-gradient plane being assembled.
struct PhasePlanes {
    /// Strides (rows, columns): the number of phases along each axis.
    stride: (usize, usize),
    /// Padding (rows, columns) of the input plane.
    pad: (usize, usize),
    /// Columns of one phase.
    wq: usize,
    /// Values per phase: `hq + 1` rows, the spare row for the wide output's last row, whose
    /// dropped columns read past the phase's end.
    len: usize,
}

impl PhasePlanes {
    fn new(g: &ConvGeom) -> PhasePlanes {
        let (hp, wp) = (g.h + 2 * g.padding.0, g.w + 2 * g.padding.1);
        let (hq, wq) = (hp.div_ceil(g.stride.0), wp.div_ceil(g.stride.1));
        PhasePlanes {
            stride: g.stride,
            pad: g.padding,
            wq,
            len: (hq + 1) * wq,
        }
    }

    /// Values of all phases together.
    fn total(&self) -> usize {
        self.stride.0 * self.stride.1 * self.len
    }

    /// Where tap (ki, kj) reads: the start of its phase plus its offset inside the phase, so that
    /// wide output `o = oy * wq + ox` reads value `o` of the returned start.
    fn tap_start(&self, g: &ConvGeom, ki: usize, kj: usize) -> usize {
        let (ry, rx) = (ki * g.dilation.0, kj * g.dilation.1);
        let (sh, sw) = self.stride;
        let phase = (ry % sh) * sw + rx % sw;
        phase * self.len + (ry / sh) * self.wq + rx / sw
    }

    /// Calls `f(phase_start, ix0)` for each column phase of input row `iy`: input columns
    /// `ix0, ix0 + sw, ..` lie side by side in the phase row that starts at `phase_start`.
    #[inline(always)]
    fn row_phases(&self, iy: usize, mut f: impl FnMut(usize, usize)) {
        let (sh, sw) = self.stride;
        let y = iy + self.pad.0;
        for b in 0..sw {
            // The first input column of phase b: (ix0 + pad) % sw == b.
            let ix0 = (b + sw - self.pad.1 % sw) % sw;
            let start =
                ((y % sh) * sw + b) * self.len + (y / sh) * self.wq + (ix0 + self.pad.1) / sw;
            f(start, ix0);
        }
    }

    /// Writes the zero-padded phases of input plane `src` [h, w] into `dst` (`total()` values).
    fn fill(&self, src: &[f32], g: &ConvGeom, dst: &mut [f32]) {
        if self.stride == (1, 1) {
            // One phase, the padded plane: copy the rows, zero only the gaps between them.
            let mut end = 0;
            for (iy, row) in src.chunks_exact(g.w).enumerate() {
                self.row_phases(iy, |start, _| {
                    dst[end..start].fill(0.0);
                    dst[start..start + g.w].copy_from_slice(row);
                    end = start + g.w;
                });
            }
            dst[end..].fill(0.0);
            return;
        }
        dst.fill(0.0);
        let sw = self.stride.1;
        for (iy, row) in src.chunks_exact(g.w).enumerate() {
            self.row_phases(iy, |start, ix0| {
                for (d, &v) in dst[start..]
                    .iter_mut()
                    .zip(row.iter().skip(ix0).step_by(sw))
                {
                    *d = v;
                }
            });
        }
    }

    /// The phase position of each input pixel `iy * w + ix`: where `fill` writes it and
    /// `gather` reads it.
    fn pixel_positions(&self, g: &ConvGeom) -> Vec<usize> {
        let mut positions = vec![0; g.h * g.w];
        for (iy, row) in positions.chunks_exact_mut(g.w).enumerate() {
            self.row_phases(iy, |start, ix0| {
                let pixels = row.iter_mut().skip(ix0).step_by(self.stride.1);
                for (j, position) in pixels.enumerate() {
                    *position = start + j;
                }
            });
        }
        positions
    }

    /// Reads input-gradient plane `dst` [h, w] out of the phases `src`.
    fn gather(&self, src: &[f32], g: &ConvGeom, dst: &mut [f32]) {
        let sw = self.stride.1;
        for (iy, row) in dst.chunks_exact_mut(g.w).enumerate() {
            self.row_phases(iy, |start, ix0| {
                if sw == 1 {
                    row.copy_from_slice(&src[start..start + g.w]);
                    return;
                }
                for (d, &v) in row.iter_mut().skip(ix0).step_by(sw).zip(&src[start..]) {
                    *d = v;
                }
            });
        }
    }
}

/// Images side by side in the small-plane kernels: value `[l]` of a position belongs to image
/// `i0 + l` of the group, so one 8-wide vector (AVX2) advances eight planes at once.
const IMAGE_LANES: usize = 8;

/// One position of [`IMAGE_LANES`] interleaved planes.
type Lanes = [f32; IMAGE_LANES];

/// Output planes at most this large run the forward and input gradient [`IMAGE_LANES`] images
/// at a time: there a plane's own loops are too short to vectorise or to pay for their setup
/// (MobileNetV2's 16x8, 8x4 and 4x2 planes ran 2-5x slower than PyTorch's kernels one plane at a
/// time; at 32x16 and above the per-plane kernels are as fast). The weight gradient runs
/// image-interleaved whenever its rows are short or strided (see `backward_weight`).
const LANE_MAX_PLANE: usize = 128;

/// Whether the forward and input gradient of `g` run image-interleaved.
fn lanes_for(g: &ConvGeom) -> bool {
    g.p() <= LANE_MAX_PLANE
}

/// `dst[o][l] += w * src[o][l]`, multiply then add, lane by lane (each lane as [`axpy`]).
#[inline(always)]
fn axpy_lanes(dst: &mut [Lanes], w: f32, src: &[Lanes]) {
    for (d, s) in dst.iter_mut().zip(src) {
        for l in 0..IMAGE_LANES {
            d[l] += w * s[l];
        }
    }
}

/// Work buffers of one channel task of the image-interleaved kernels.
struct LaneWork {
    /// The zero-padded phases of the group's input (or input-gradient) planes.
    phases: Vec<Lanes>,
    /// The group's output (or output-gradient) planes: wide (`ho * wq`) or plain (`ho * wo`).
    out: Vec<Lanes>,
}

impl LaneWork {
    fn new(ph: &PhasePlanes, out_len: usize) -> LaneWork {
        LaneWork {
            phases: vec![[0.0; IMAGE_LANES]; ph.total()],
            out: vec![[0.0; IMAGE_LANES]; out_len],
        }
    }

    /// The phases of the group's input planes (`planes[l]` into lane l; missing lanes zero).
    fn fill_phases<'a>(&mut self, planes: impl Iterator<Item = &'a [f32]>, positions: &[usize]) {
        self.phases.fill([0.0; IMAGE_LANES]);
        for (l, plane) in planes.enumerate() {
            for (&v, &at) in plane.iter().zip(positions) {
                self.phases[at][l] = v;
            }
        }
    }
}

/// What the image-interleaved kernels of one geometry share.
struct LaneGeometry {
    ph: PhasePlanes,
    /// Where each input pixel lies in the phases (`PhasePlanes::pixel_positions`).
    positions: Vec<usize>,
    /// Where each tap (ki, kj) starts reading the phases (`PhasePlanes::tap_start`).
    starts: Vec<usize>,
    /// Values of the wide output plane (`ho` rows of `wq`).
    wide_len: usize,
}

impl LaneGeometry {
    fn new(g: &ConvGeom) -> LaneGeometry {
        let ph = PhasePlanes::new(g);
        let starts = (0..g.kh * g.kw)
            .map(|t| ph.tap_start(g, t / g.kw, t % g.kw))
            .collect();
        LaneGeometry {
            positions: ph.pixel_positions(g),
            starts,
            wide_len: g.ho * ph.wq,
            ph,
        }
    }
}

/// The image groups of one channel: `(first image, images in the group)`.
fn image_groups(n: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..n)
        .step_by(IMAGE_LANES)
        .map(move |i0| (i0, IMAGE_LANES.min(n - i0)))
}

/// [`forward`] for small planes: per channel, [`IMAGE_LANES`] images at a time, the same
/// products added in the same order per output (bit-for-bit `forward`'s values).
fn forward_lanes(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
    let mut y = super::zeros(g.n * g.cout * p);
    let LaneGeometry {
        ph,
        positions,
        starts,
        wide_len,
    } = LaneGeometry::new(g);
    super::planes_by_channel_mut(&mut y, g.n, g.cout, p)
        .par_chunks_mut(g.n)
        .enumerate()
        .for_each_init(
            || LaneWork::new(&ph, wide_len),
            |work, (ch, outs)| {
                let wk = &w[ch * taps..][..taps];
                for ((i0, count), outs) in image_groups(g.n).zip(outs.chunks_mut(IMAGE_LANES)) {
                    let planes = (i0..i0 + count).map(|i| &x[(i * g.c + ch) * hw..][..hw]);
                    work.fill_phases(planes, &positions);
                    let LaneWork { phases, out } = work;
                    super::vectorized(
                        #[inline(always)]
                        || {
                            out.fill([0.0; IMAGE_LANES]);
                            for (&start, &wt) in starts.iter().zip(wk) {
                                axpy_lanes(out, wt, &phases[start..start + wide_len]);
                            }
                        },
                    );
                    for (l, plane) in outs.iter_mut().enumerate() {
                        for (row, wrow) in plane.chunks_exact_mut(g.wo).zip(out.chunks_exact(ph.wq))
                        {
                            for (v, wide) in row.iter_mut().zip(wrow) {
                                *v = wide[l];
                            }
                        }
                    }
                }
            },
        );
    y
}

/// [`backward_input`] for small planes: per channel, [`IMAGE_LANES`] images at a time, each
/// input-gradient value getting the same products in the same order (bit-for-bit).
fn backward_input_lanes(dy: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
    let mut dx = super::zeros(g.n * g.c * hw);
    let LaneGeometry {
        ph,
        positions,
        starts,
        wide_len,
    } = LaneGeometry::new(g);
    super::planes_by_channel_mut(&mut dx, g.n, g.c, hw)
        .par_chunks_mut(g.n)
        .enumerate()
        .for_each_init(
            || LaneWork::new(&ph, wide_len),
            |work, (ch, dsts)| {
                let wk = &w[ch * taps..][..taps];
                for ((i0, _), dsts) in image_groups(g.n).zip(dsts.chunks_mut(IMAGE_LANES)) {
                    let LaneWork { phases, out: wide } = work;
                    wide.fill([0.0; IMAGE_LANES]);
                    for (l, i) in (i0..i0 + dsts.len()).enumerate() {
                        let rows = dy[(i * g.cout + ch) * p..][..p].chunks_exact(g.wo);
                        for (wrow, row) in wide.chunks_exact_mut(ph.wq).zip(rows) {
                            for (wide, &v) in wrow.iter_mut().zip(row) {
                                wide[l] = v;
                            }
                        }
                    }
                    super::vectorized(
                        #[inline(always)]
                        || {
                            phases.fill([0.0; IMAGE_LANES]);
                            for (&start, &wt) in starts.iter().zip(wk) {
                                axpy_lanes(&mut phases[start..start + wide_len], wt, wide);
                            }
                        },
                    );
                    for (l, dst) in dsts.iter_mut().enumerate() {
                        for (v, &at) in dst.iter_mut().zip(&positions) {
                            *v = phases[at][l];
                        }
                    }
                }
            },
        );
    dx
}

/// [`backward_weight`]'s short-row order, [`IMAGE_LANES`] images at a time: per image, tap and
/// output row the f32 running sum over the row, added into the image's f32 sum per tap (both
/// from +0), then the images' sums added in f64 in image order (bit-for-bit the same values).
fn backward_weight_lanes(dy: &[f32], x: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
    let mut dw = vec![0f32; g.cout * taps];
    let LaneGeometry {
        ph,
        positions,
        starts,
        ..
    } = LaneGeometry::new(g);
    dw.par_chunks_mut(taps).enumerate().for_each_init(
        || (LaneWork::new(&ph, p), vec![[0f32; IMAGE_LANES]; taps]),
        |(work, part), (ch, dwk)| {
            let mut acc = vec![0f64; taps];
            for (i0, count) in image_groups(g.n) {
                let planes = (i0..i0 + count).map(|i| &x[(i * g.c + ch) * hw..][..hw]);
                work.fill_phases(planes, &positions);
                let LaneWork { phases, out: gy } = work;
                gy.fill([0.0; IMAGE_LANES]);
                for (l, i) in (i0..i0 + count).enumerate() {
                    for (v, &d) in gy.iter_mut().zip(&dy[(i * g.cout + ch) * p..][..p]) {
                        v[l] = d;
                    }
                }
                super::vectorized(
                    #[inline(always)]
                    || {
                        part.fill([0.0; IMAGE_LANES]);
                        for (oy, grow) in gy.chunks_exact(g.wo).enumerate() {
                            for (t, &start) in starts.iter().enumerate() {
                                let xrow = &phases[start + oy * ph.wq..][..g.wo];
                                let mut r = [0f32; IMAGE_LANES];
                                for (a, b) in grow.iter().zip(xrow) {
                                    for l in 0..IMAGE_LANES {
                                        r[l] += a[l] * b[l];
                                    }
                                }
                                for l in 0..IMAGE_LANES {
                                    part[t][l] += r[l];
                                }
                            }
                        }
                    },
                );
                for l in 0..count {
                    for (a, s) in acc.iter_mut().zip(part.iter()) {
                        *a += s[l] as f64;
                    }
                }
            }
            for (d, &a) in dwk.iter_mut().zip(&acc) {
                *d = a as f32;
            }
        },
    );
    dw
}

/// `dst += w * src`, multiply then add (never fused), element by element.
#[inline(always)]
fn axpy(dst: &mut [f32], w: f32, src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d += w * *s;
    }
}

/// Depthwise forward: y [n, c, ho, wo] from x [n, c, h, w] and weight [c, 1, kh, kw].
/// Per plane: pad and split into phases, one contiguous multiply-add per tap into the wide
/// output, then the valid columns copied out.
pub(crate) fn forward(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    if g.n * g.cout * g.p() == 0 {
        return Vec::new();
    }
    if lanes_for(g) {
        return forward_lanes(x, w, g);
    }
    forward_planes(x, w, g)
}

/// [`forward`] one plane at a time.
fn forward_planes(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
    let mut y = super::zeros(g.n * g.cout * p);
    let ph = PhasePlanes::new(g);
    let wide_len = g.ho * ph.wq;
    y.par_chunks_mut(p).enumerate().for_each_init(
        || (vec![0f32; ph.total()], vec![0f32; wide_len]),
        |(phases, wide), (plane, out)| {
            let ch = plane % g.cout;
            ph.fill(&x[plane * hw..][..hw], g, phases);
            wide.fill(0.0);
            let wk = &w[ch * taps..][..taps];
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let start = ph.tap_start(g, ki, kj);
                    axpy(wide, wk[ki * g.kw + kj], &phases[start..start + wide_len]);
                }
            }
            for (row, wrow) in out.chunks_exact_mut(g.wo).zip(wide.chunks_exact(ph.wq)) {
                row.copy_from_slice(&wrow[..g.wo]);
            }
        },
    );
    y
}

/// Depthwise input gradient: dx [n, c, h, w] from dy [n, c, ho, wo]. Per plane: dy laid out
/// wide (zero extra columns), each tap's products added into its phase at the tap's offset (the
/// forward's reads, scattered back), then the unpadded pixels read out of the phases.
pub(crate) fn backward_input(dy: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    if g.n * g.c * g.h * g.w == 0 {
        return Vec::new();
    }
    if lanes_for(g) {
        return backward_input_lanes(dy, w, g);
    }
    backward_input_planes(dy, w, g)
}

/// [`backward_input`] one plane at a time.
fn backward_input_planes(dy: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
    let mut dx = super::zeros(g.n * g.c * hw);
    let ph = PhasePlanes::new(g);
    let wide_len = g.ho * ph.wq;
    dx.par_chunks_mut(hw).enumerate().for_each_init(
        || (vec![0f32; ph.total()], vec![0f32; wide_len]),
        |(phases, wide), (plane, dst)| {
            let ch = plane % g.c;
            for (wrow, row) in wide
                .chunks_exact_mut(ph.wq)
                .zip(dy[plane * p..][..p].chunks_exact(g.wo))
            {
                wrow[..g.wo].copy_from_slice(row);
                wrow[g.wo..].fill(0.0);
            }
            phases.fill(0.0);
            let wk = &w[ch * taps..][..taps];
            for ki in 0..g.kh {
                for kj in 0..g.kw {
                    let start = ph.tap_start(g, ki, kj);
                    axpy(
                        &mut phases[start..start + wide_len],
                        wk[ki * g.kw + kj],
                        wide,
                    );
                }
            }
            ph.gather(phases, g, dst);
        },
    );
    dx
}

/// Depthwise weight gradient: dW [c, 1, kh, kw] from dy [n, c, ho, wo] and x [n, c, h, w].
///
/// Summation order (fixed, thread-count independent): per channel and tap, an f64 sum over
/// images in order of f32 per-image sums, each the f32 sum over output rows of the row's f32
/// dot product. A row's dot product is a plain running sum when the rows are shorter than
/// `dot`'s 16 lanes or strided; there the padded phases are used, eight images at a time
/// (`backward_weight_lanes`; the padding adds ±0 terms, which change no sum beyond the sign of
/// a zero, and `part` starts at +0). Longer stride-1 rows keep `dot`'s 16-lane order, row by row
/// over the valid columns.
pub(crate) fn backward_weight(dy: &[f32], x: &[f32], g: &ConvGeom) -> Vec<f32> {
    if g.cout * g.kh * g.kw == 0 {
        return Vec::new();
    }
    if g.stride.1 == 1 && g.wo >= super::conv2d::DOT_LANES {
        return backward_weight_rows(dy, x, g);
    }
    backward_weight_lanes(dy, x, g)
}

/// The weight gradient row by row over each tap's valid columns, with `dot`'s 16-lane order:
/// stride-1 planes whose rows fill those lanes (MobileNetV2's first two stages).
fn backward_weight_rows(dy: &[f32], x: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
    let mut dw = vec![0f32; g.cout * taps];
    dw.par_chunks_mut(taps).enumerate().for_each(|(ch, dwk)| {
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let mut acc = 0f64;
                for img in 0..g.n {
                    let gy = &dy[(img * g.cout + ch) * p..][..p];
                    let src = &x[(img * g.c + ch) * hw..][..hw];
                    let mut part = 0f32;
                    super::conv2d::for_tap_rows(g, ki, kj, |oy, iy, xlo, xhi, ix0| {
                        let a = &gy[oy * g.wo + xlo..oy * g.wo + xhi];
                        let s = &src[iy * g.w + ix0..(iy + 1) * g.w];
                        part += super::conv2d::dot(a, &s[..a.len()]);
                    });
                    acc += part as f64;
                }
                dwk[ki * g.kw + kj] = acc as f32;
            }
        }
    });
    dw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(
        n: usize,
        c: usize,
        (h, w): (usize, usize),
        k: usize,
        stride: (usize, usize),
    ) -> ConvGeom {
        let (pad, dil) = ((k / 2, k / 2), (1, 1));
        let ho = (h + 2 * pad.0 - k) / stride.0 + 1;
        let wo = (w + 2 * pad.1 - k) / stride.1 + 1;
        ConvGeom {
            n,
            c,
            h,
            w,
            cout: c,
            kh: k,
            kw: k,
            groups: c,
            stride,
            padding: pad,
            dilation: dil,
            ho,
            wo,
        }
    }

    /// The short-row order of `backward_weight` written plainly, one image at a time: the
    /// oracle of the image-interleaved kernel.
    fn backward_weight_planes(dy: &[f32], x: &[f32], g: &ConvGeom) -> Vec<f32> {
        let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
        let mut dw = vec![0f32; g.cout * taps];
        let ph = PhasePlanes::new(g);
        let starts: Vec<usize> = (0..taps)
            .map(|t| ph.tap_start(g, t / g.kw, t % g.kw))
            .collect();
        dw.par_chunks_mut(taps).enumerate().for_each_init(
            || (vec![0f32; ph.total()], vec![0f32; taps], vec![0f64; taps]),
            |(phases, part, acc), (ch, dwk)| {
                acc.fill(0.0);
                for img in 0..g.n {
                    let plane = img * g.c + ch;
                    ph.fill(&x[plane * hw..][..hw], g, phases);
                    let gy = &dy[plane * p..][..p];
                    part.fill(0.0);
                    for (oy, grow) in gy.chunks_exact(g.wo).enumerate() {
                        for (t, &start) in starts.iter().enumerate() {
                            let xrow = &phases[start + oy * ph.wq..][..g.wo];
                            let mut r = 0f32;
                            for (a, b) in grow.iter().zip(xrow) {
                                r += a * b;
                            }
                            part[t] += r;
                        }
                    }
                    for (a, &s) in acc.iter_mut().zip(part.iter()) {
                        *a += s as f64;
                    }
                }
                for (d, &a) in dwk.iter_mut().zip(acc.iter()) {
                    *d = a as f32;
                }
            },
        );
        dw
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104729) % 2003) as f32 / 1001.0 - 1.0) * 1.7)
            .collect()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// The image-interleaved kernels give bit-for-bit the per-plane kernels' values (the quick
    /// demo's result moves with last-bit changes): partial and whole image groups, batch 1,
    /// strides 1 and 2 (and mixed), 3x3 and 5x5, odd and tiny planes, rows under and over 16.
    #[test]
    fn image_lanes_match_the_per_plane_kernels_bit_for_bit() {
        for (n, c, hw, k, stride) in [
            (1, 2, (4, 2), 3, (1, 1)),
            (3, 3, (5, 3), 3, (2, 2)),
            (8, 2, (8, 4), 3, (1, 1)),
            (9, 4, (7, 5), 3, (1, 2)),
            (17, 3, (16, 8), 3, (2, 2)),
            (5, 2, (9, 6), 5, (2, 1)),
            (2, 3, (6, 20), 3, (1, 1)),
            (4, 2, (1, 1), 3, (1, 1)),
        ] {
            let g = geom(n, c, hw, k, stride);
            let x = values(g.n * g.c * g.h * g.w, 1);
            let w = values(g.c * k * k, 2);
            let dy = values(g.n * g.c * g.p(), 3);
            let what = format!("n {n} c {c} {hw:?} k {k} stride {stride:?}");
            assert_eq!(
                bits(&forward_lanes(&x, &w, &g)),
                bits(&forward_planes(&x, &w, &g)),
                "forward, {what}"
            );
            assert_eq!(
                bits(&backward_input_lanes(&dy, &w, &g)),
                bits(&backward_input_planes(&dy, &w, &g)),
                "input gradient, {what}"
            );
            assert_eq!(
                bits(&backward_weight_lanes(&dy, &x, &g)),
                bits(&backward_weight_planes(&dy, &x, &g)),
                "weight gradient, {what}"
            );
        }
    }
}
