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
    let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
    let mut y = vec![0f32; g.n * g.cout * p];
    if y.is_empty() {
        return y;
    }
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
    let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
    let mut dx = vec![0f32; g.n * g.c * hw];
    if dx.is_empty() {
        return dx;
    }
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
/// `dot`'s 16 lanes or strided; there the padded phases are used (the padding adds ±0 terms,
/// which change no sum beyond the sign of a zero, and `part` starts at +0). Longer stride-1
/// rows keep `dot`'s 16-lane order, row by row over the valid columns.
pub(crate) fn backward_weight(dy: &[f32], x: &[f32], g: &ConvGeom) -> Vec<f32> {
    let (p, hw, taps) = (g.p(), g.h * g.w, g.kh * g.kw);
    let mut dw = vec![0f32; g.cout * taps];
    if dw.is_empty() {
        return dw;
    }
    if g.stride.1 == 1 && g.wo >= super::conv2d::DOT_LANES {
        return backward_weight_rows(dy, x, g);
    }
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
