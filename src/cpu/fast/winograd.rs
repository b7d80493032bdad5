//! Winograd convolution for the CPU device's dense 3x3 stride-1 convolutions (ResNet's basic and
//! bottleneck blocks): F(2x2, 3x3) for the forward and the input gradient, F(3x3, 2x2) for the
//! weight gradient (see `backward_weight`).
//!
//! Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), section 4:
//! each 2x2 output tile is `A^T [(G g G^T) . (B^T d B)] A` for the tile's 4x4 input patch `d`
//! and the 3x3 filter `g`, so the sum over input channels becomes 16 independent GEMMs
//! `M[xi] = U[xi] V[xi]` ([cout x cin] x [cin x tiles]) with 16 multiplies per tile and channel
//! pair instead of 36. The transform matrices (the paper's eq. 7):
//!
//! ```text
//! B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]   G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]
//! A^T = [1 1 1 0; 0 1 -1 -1]
//! ```
//!
//! Their entries are 0, +-1 and +-1/2, so the transforms add exact multiples and the results
//! differ from the direct convolution only by f32 rounding of the reordered sums (tests/cpu_fast.rs
//! checks all three passes against the f64 reference). The input gradient of a stride-1 3x3
//! convolution is itself one: dy convolved with the filters rotated by 180 degrees and their
//! input/output channels swapped, padding `2 - pad`.
//!
//! Layout: images are grouped into units of at least `MIN_TILES` tiles (whole images; the unit
//! depends only on the shape, so results do not depend on the thread count) and units run in
//! parallel. A unit's input is transposed to channels-last ([h, w, c]) so that both transforms
//! run along the channels, a contiguous vector loop of `c` values per patch position, whatever
//! the plane's size (deep layers have one or two tiles per row). Its tiles are transformed in
//! blocks of tile rows into `V` [16][tiles][cin]; the GEMMs `M[xi] = V[xi] U[xi]` ([tiles x
//! cin] x [cin x cout]) give `M` [16][tiles][cout], and the output transform writes each tile's
//! 2x2 outputs straight into the [cout, ho, wo] planes.

use rayon::prelude::*;

use crate::cpu::conv2d::ConvGeom;
use crate::cpu::matmul::{gemm_into, transpose_into};

use super::conv2d::Scratch;

/// Tiles (columns of the 16 GEMMs) a unit of whole images reaches at least, where the batch
/// allows: narrower GEMMs waste the microkernel's 16-wide vectors and repack `U` more often.
const MIN_TILES: usize = 64;
/// Values of one tile block's `V` and `M` (16 planes each) above which a unit's tiles are
/// transformed in several blocks of tile rows (about the core's L2).
const BLOCK_FLOATS: usize = 1 << 17;
/// Output tiles per image below which the direct convolution stays faster (ResNet-18's 4x2
/// layer4 at 128x64 input: one tile row per image, and `U` as large as the work).
const MIN_TILES_PER_IMAGE: usize = 4;

/// The convolutions this module computes: dense (one group) 3x3, stride 1, dilation 1,
/// padding at most 2 (so the input gradient's padding `2 - pad` is one too), with at least
/// `MIN_TILES_PER_IMAGE` output tiles per image and at least one channel on each side (the
/// GEMMs' work buffers are only defined where a product writes them).
pub(super) fn applies(g: &ConvGeom) -> bool {
    g.groups == 1
        && g.c > 0
        && g.cout > 0
        && (g.kh, g.kw) == (3, 3)
        && g.stride == (1, 1)
        && g.dilation == (1, 1)
        && g.padding.0 <= 2
        && g.padding.1 <= 2
        && g.ho.div_ceil(2) * g.wo.div_ceil(2) >= MIN_TILES_PER_IMAGE
        && g.h.div_ceil(2) * g.w.div_ceil(2) >= MIN_TILES_PER_IMAGE
}

/// y [n, cout, ho, wo] from x [n, c, h, w] and w [cout, c, 3, 3].
pub(super) fn forward(x: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let u = transform_filters(w, g.c, g.cout, false);
    Plane::forward(g).convolve(x, &u, g.n)
}

/// dx [n, c, h, w] from dy [n, cout, ho, wo] and w [cout, c, 3, 3]: dy convolved (padding
/// `2 - pad`) with `w` rotated by 180 degrees, channels swapped.
pub(super) fn backward_input(dy: &[f32], w: &[f32], g: &ConvGeom) -> Vec<f32> {
    let u = transform_filters(w, g.cout, g.c, true);
    let plane = Plane {
        cin: g.cout,
        h: g.ho,
        w: g.wo,
        cout: g.c,
        ho: g.h,
        wo: g.w,
        pad: (2 - g.padding.0, 2 - g.padding.1),
    };
    plane.convolve(dy, &u, g.n)
}

/// dw [cout, c, 3, 3] from dy [n, cout, ho, wo] and x [n, c, h, w]: Winograd F(3x3, 2x2) over
/// the forward's 2x2 output tiles. Each tile adds the 3x3 correlation of its 4x4 input patch `d`
/// with its 2x2 output gradient `e`, which is `A'^T [(G' e G'^T) . (B^T d B)] A'` with the
/// forward's `B^T` (its `V` is the same input transform), `G' = [1 0; 1 1; 1 -1; 0 1]` and
/// `A'^T = [1 1/2 1/2 0; 0 1/2 -1/2 0; 0 1/2 1/2 -1]` (the same points 0, 1, -1 and infinity,
/// roles of the filter and output swapped; Lavin & Gray section 4 builds both from them). The
/// sum over tiles is taken before `A'`: 16 GEMMs `S[xi] += E[xi]^T V[xi]` ([cout x tiles] x
/// [tiles x c]) per block, `WEIGHT_GRAD_PARTS` image ranges in parallel, partial sums added in
/// range order (the same for every thread count).
pub(super) fn backward_weight(dy: &[f32], x: &[f32], g: &ConvGeom) -> Vec<f32> {
    let s = Plane::forward(g).correlate(x, dy, g.n);
    let (k, c) = (g.cout, g.c);
    let mut dw = vec![0f32; k * c * 9];
    dw.par_chunks_mut(c * 9).enumerate().for_each(|(ko, dw_k)| {
        for (ci, out) in dw_k.chunks_exact_mut(9).enumerate() {
            let t: [f32; 16] = std::array::from_fn(|xi| s[(xi * k + ko) * c + ci]);
            out.copy_from_slice(&gradient_tile(&t));
        }
    });
    dw
}

/// `A'^T S A'` (3x3, row-major) of one summed 4x4 tile `s` (see `backward_weight`).
fn gradient_tile(s: &[f32; 16]) -> [f32; 9] {
    let a_of = |r: [f32; 4]| {
        let (h1, h2) = (0.5 * r[1], 0.5 * r[2]);
        [r[0] + h1 + h2, h1 - h2, h1 + h2 - r[3]]
    };
    // A'^T S: combine the rows (column by column); then the columns of each row.
    let cols: [[f32; 3]; 4] = std::array::from_fn(|q| a_of([s[q], s[4 + q], s[8 + q], s[12 + q]]));
    let mut out = [0f32; 9];
    for i in 0..3 {
        out[i * 3..i * 3 + 3]
            .copy_from_slice(&a_of([cols[0][i], cols[1][i], cols[2][i], cols[3][i]]));
    }
    out
}

/// Image ranges the Winograd weight gradient is split into (fixed, so the summation order and
/// the result do not depend on the thread count).
const WEIGHT_GRAD_PARTS: usize = 4;

/// `U[xi][i][o] = (G f G^T)[xi]` ([16][ins][outs]) for the 16 positions `xi` of the 4x4
/// transformed filter, `f` the 3x3 filter from input channel `i` to output channel `o`: `w[o][i]`
/// for `w` [outs, ins, 3, 3], or with `swap` (the input gradient's filters, `w` [ins, outs, 3, 3])
/// `w[i][o]` rotated by 180 degrees.
fn transform_filters(w: &[f32], ins: usize, outs: usize, swap: bool) -> Vec<f32> {
    let mut u = vec![0f32; 16 * ins * outs];
    // Tasks by input channel: U's rows [xi][i] for all xi (16 runs of `outs` values).
    let mut by_input: Vec<Vec<f32>> = (0..ins).map(|_| vec![0f32; 16 * outs]).collect();
    by_input.par_iter_mut().enumerate().for_each(|(i, out)| {
        for o in 0..outs {
            let k = if swap {
                &w[(i * outs + o) * 9..][..9]
            } else {
                &w[(o * ins + i) * 9..][..9]
            };
            let f: [[f32; 3]; 3] = std::array::from_fn(|a| {
                std::array::from_fn(|b| {
                    if swap {
                        k[(2 - a) * 3 + 2 - b]
                    } else {
                        k[a * 3 + b]
                    }
                })
            });
            for (xi, v) in filter_tile(&f).iter().enumerate() {
                out[xi * outs + o] = *v;
            }
        }
    });
    for (i, out) in by_input.iter().enumerate() {
        for xi in 0..16 {
            u[(xi * ins + i) * outs..][..outs].copy_from_slice(&out[xi * outs..][..outs]);
        }
    }
    u
}

/// `G f G^T` (4x4, row-major) for one 3x3 filter `f`.
fn filter_tile(f: &[[f32; 3]; 3]) -> [f32; 16] {
    let g_of = |r: [f32; 3]| {
        [
            r[0],
            0.5 * (r[0] + r[1] + r[2]),
            0.5 * (r[0] - r[1] + r[2]),
            r[2],
        ]
    };
    // G f: combine the filter's rows (column by column).
    let cols: [[f32; 4]; 3] = std::array::from_fn(|b| g_of([f[0][b], f[1][b], f[2][b]]));
    // (G f) G^T: combine the columns of each row.
    let mut t = [0f32; 16];
    for a in 0..4 {
        t[a * 4..a * 4 + 4].copy_from_slice(&g_of([cols[0][a], cols[1][a], cols[2][a]]));
    }
    t
}

/// One convolution's planes: `cin` x [h, w] in, `cout` x [ho, wo] out, `ho = h + 2 pad - 2`.
struct Plane {
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    ho: usize,
    wo: usize,
    pad: (usize, usize),
}

/// A block of tiles: tile rows `ty0..ty0+rows` of `images` images (`tiles` in all, ordered
/// image, tile row, tile column).
struct Block {
    images: usize,
    ty0: usize,
    rows: usize,
    tiles: usize,
}

/// Work buffers of one unit: its channels-last input, `V`, `M`.
struct Buffers {
    x: Scratch,
    v: Scratch,
    m: Scratch,
}

impl Buffers {
    fn new() -> Buffers {
        Buffers {
            x: Scratch::overwritten(0),
            v: Scratch::overwritten(0),
            m: Scratch::overwritten(0),
        }
    }
}

/// `images` consecutive [channels, plane] images of `src` into `dst` as [plane, channels] each
/// (channels-last, for the transforms' channel lanes).
fn channels_last(src: &[f32], images: usize, channels: usize, plane: usize, dst: &mut [f32]) {
    let image = channels * plane;
    for (src, dst) in src[..images * image]
        .chunks_exact(image)
        .zip(dst[..images * image].chunks_exact_mut(image))
    {
        transpose_into(src, channels, plane, dst);
    }
}

impl Plane {
    /// The forward convolution's planes.
    fn forward(g: &ConvGeom) -> Plane {
        Plane {
            cin: g.c,
            h: g.h,
            w: g.w,
            cout: g.cout,
            ho: g.ho,
            wo: g.wo,
            pad: g.padding,
        }
    }

    /// Tile rows and tiles per row of one output plane.
    fn tiles(&self) -> (usize, usize) {
        (self.ho.div_ceil(2), self.wo.div_ceil(2))
    }

    /// How `n` images are worked through: images per unit (whole images, at least `MIN_TILES`
    /// tiles where the batch allows), the number of units, and the tile rows per block (a whole
    /// unit when it has several images, else as many rows of one image as `BLOCK_FLOATS` holds).
    fn layout(&self, n: usize) -> (usize, usize, usize) {
        let (th, tw) = self.tiles();
        let unit_images = MIN_TILES.div_ceil(th * tw).clamp(1, n.max(1));
        let block_rows = if unit_images > 1 {
            th
        } else {
            (BLOCK_FLOATS / (16 * (self.cin + self.cout) * tw).max(1)).clamp(1, th)
        };
        (unit_images, n.div_ceil(unit_images), block_rows)
    }

    /// The blocks of a unit of `images` images, `block_rows` tile rows each (fewer in the last).
    fn blocks(&self, images: usize, block_rows: usize) -> impl Iterator<Item = Block> {
        let (th, tw) = self.tiles();
        (0..th).step_by(block_rows).map(move |ty0| {
            let rows = block_rows.min(th - ty0);
            Block {
                images,
                ty0,
                rows,
                tiles: images * rows * tw,
            }
        })
    }

    /// y [n, cout, ho, wo] from x [n, cin, h, w] and `U` [16][cin][cout].
    fn convolve(&self, x: &[f32], u: &[f32], n: usize) -> Vec<f32> {
        let (unit_images, units, block_rows) = self.layout(n);
        let (in_image, out_image) = (self.cin * self.h * self.w, self.cout * self.ho * self.wo);
        let mut y = super::zeros(n * out_image);
        if y.is_empty() {
            return y;
        }
        y.par_chunks_mut(unit_images * out_image)
            .enumerate()
            .for_each_init(Buffers::new, |buf, (unit, y_unit)| {
                let images = y_unit.len() / out_image;
                let x_unit = &x[unit * unit_images * in_image..];
                buf.x.resize(images * in_image);
                channels_last(x_unit, images, self.cin, self.h * self.w, &mut buf.x);
                for block in self.blocks(images, block_rows) {
                    self.convolve_block(u, &block, buf, y_unit, units == 1);
                }
            });
        y
    }

    /// `S[xi][cout][cin] = sum over tiles of E[xi]^T V[xi]`, `E` the transformed output
    /// gradient tiles of dy [n, cout, ho, wo] and `V` the transformed input tiles of x.
    fn correlate(&self, x: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
        let (unit_images, units, block_rows) = self.layout(n);
        let (in_image, out_image) = (self.cin * self.h * self.w, self.cout * self.ho * self.wo);
        let s_len = 16 * self.cout * self.cin;
        if units == 0 {
            return vec![0f32; s_len];
        }
        let parts = WEIGHT_GRAD_PARTS.min(units);
        let per_part = units.div_ceil(parts);
        let partials: Vec<Vec<f32>> = (0..parts)
            .into_par_iter()
            .map(|part| {
                let mut s = vec![0f32; s_len];
                let mut buf = Buffers::new();
                let mut dyt = Scratch::overwritten(0);
                // The part's first block overwrites S: accumulating onto zeros reads S (16 x cout
                // x cin) once more per part, measurably slower at ResNet-18's 8x4 layer3.
                let mut first = true;
                for unit in part * per_part..((part + 1) * per_part).min(units) {
                    let img0 = unit * unit_images;
                    let images = unit_images.min(n - img0);
                    buf.x.resize(images * in_image);
                    dyt.resize(images * out_image);
                    let (x, dy) = (&x[img0 * in_image..], &dy[img0 * out_image..]);
                    channels_last(x, images, self.cin, self.h * self.w, &mut buf.x);
                    channels_last(dy, images, self.cout, self.ho * self.wo, &mut dyt);
                    for block in self.blocks(images, block_rows) {
                        self.correlate_block(&dyt, &block, &mut buf, &mut s, !first, parts == 1);
                        first = false;
                    }
                }
                s
            })
            .collect();
        super::sum_in_order(partials)
    }

    /// One block of the weight gradient: `V` (input transform of `buf.x`), `E` [16][tiles][cout]
    /// (output-gradient transform of the channels-last `dy`) into `buf.m`, then
    /// `S[xi] (+)= E[xi]^T V[xi]` (`add`: onto S, else overwriting it). `parallel` (one part: a
    /// single image range) lets the GEMMs use the thread pool.
    fn correlate_block(
        &self,
        dy: &[f32],
        b: &Block,
        buf: &mut Buffers,
        s: &mut [f32],
        add: bool,
        parallel: bool,
    ) {
        let (t, ci, co) = (b.tiles, self.cin, self.cout);
        let (vp, ep) = (plane_stride(t * ci), plane_stride(t * co));
        buf.v.resize(16 * vp);
        buf.m.resize(16 * ep);
        super::vectorized(
            #[inline(always)]
            || {
                self.transform_input(&buf.x, b, &mut buf.v);
                self.transform_gradient(dy, b, &mut buf.m);
            },
        );
        for xi in 0..16 {
            gemm_into(
                &mut s[xi * co * ci..][..co * ci],
                &buf.m[xi * ep..][..t * co],
                &buf.v[xi * vp..][..t * ci],
                (co, t, ci),
                true,
                false,
                add,
                parallel,
            );
        }
    }

    /// `E[xi][t][k] = (G' e G'^T)[xi]` for every tile `t` of the block and output channel `k`,
    /// `e` the tile's 2x2 output gradient (zero past the plane's last row or column), from the
    /// channels-last `dy` [images, ho, wo, cout].
    #[inline(always)]
    fn transform_gradient(&self, dy: &[f32], b: &Block, e: &mut [f32]) {
        let (_, tw) = self.tiles();
        let (k, t, p) = (self.cout, b.tiles, self.ho * self.wo);
        let zeros = vec![0f32; k];
        let mut tile = 0;
        for img in 0..b.images {
            let plane = &dy[img * p * k..][..p * k];
            for ty in b.ty0..b.ty0 + b.rows {
                for tx in 0..tw {
                    let mut g: [&[f32]; 4] = [&zeros[..]; 4];
                    for (q, at) in g.iter_mut().enumerate() {
                        let (oy, ox) = (2 * ty + q / 2, 2 * tx + q % 2);
                        if oy < self.ho && ox < self.wo {
                            *at = &plane[(oy * self.wo + ox) * k..][..k];
                        }
                    }
                    gradient_input_tile(&g, e, plane_stride(t * k), tile * k, k);
                    tile += 1;
                }
            }
        }
    }

    /// One block: input transform into `V` [16][tiles][cin], the 16 GEMMs into `M`
    /// [16][tiles][cout], output transform into the unit's output planes `y`.
    fn convolve_block(
        &self,
        u: &[f32],
        b: &Block,
        buf: &mut Buffers,
        y: &mut [f32],
        parallel: bool,
    ) {
        let (t, ci, co) = (b.tiles, self.cin, self.cout);
        let (vp, mp) = (plane_stride(t * ci), plane_stride(t * co));
        buf.v.resize(16 * vp);
        buf.m.resize(16 * mp);
        super::vectorized(
            #[inline(always)]
            || self.transform_input(&buf.x, b, &mut buf.v),
        );
        for xi in 0..16 {
            gemm_into(
                &mut buf.m[xi * mp..][..t * co],
                &buf.v[xi * vp..][..t * ci],
                &u[xi * ci * co..][..ci * co],
                (t, ci, co),
                false,
                false,
                false,
                parallel,
            );
        }
        super::vectorized(
            #[inline(always)]
            || self.transform_output(&buf.m, b, y),
        );
    }

    /// `V[xi][t][c] = (B^T d B)[xi]` for every tile `t` of the block and channel `c`, from the
    /// channels-last input `x` [images, h, w, cin] (zero outside the plane).
    #[inline(always)]
    fn transform_input(&self, x: &[f32], b: &Block, v: &mut [f32]) {
        let (_, tw) = self.tiles();
        let (c, t) = (self.cin, b.tiles);
        let zeros = vec![0f32; c];
        let mut tile = 0;
        for img in 0..b.images {
            let plane = &x[img * self.h * self.w * c..][..self.h * self.w * c];
            for ty in b.ty0..b.ty0 + b.rows {
                for tx in 0..tw {
                    // The 16 channel vectors of the tile's 4x4 patch.
                    let mut d: [[&[f32]; 4]; 4] = [[&zeros[..]; 4]; 4];
                    for (i, row) in d.iter_mut().enumerate() {
                        let iy = (2 * ty + i)
                            .checked_sub(self.pad.0)
                            .filter(|&iy| iy < self.h);
                        for (j, at) in row.iter_mut().enumerate() {
                            let ix = (2 * tx + j)
                                .checked_sub(self.pad.1)
                                .filter(|&ix| ix < self.w);
                            if let (Some(iy), Some(ix)) = (iy, ix) {
                                *at = &plane[(iy * self.w + ix) * c..][..c];
                            }
                        }
                    }
                    input_tile(&d, v, plane_stride(t * c), tile * c, c);
                    tile += 1;
                }
            }
        }
    }

    /// `y[tile] = A^T M A` for every tile of the block and output channel, into the unit's
    /// output [images, cout, ho, wo], clipped at the plane's last row and column
    /// when ho or wo is odd.
    #[inline(always)]
    fn transform_output(&self, m: &[f32], b: &Block, y: &mut [f32]) {
        let (_, tw) = self.tiles();
        let (k, t, p) = (self.cout, b.tiles, self.ho * self.wo);
        let mut tile = 0;
        for img in 0..b.images {
            for ty in b.ty0..b.ty0 + b.rows {
                for tx in 0..tw {
                    // Where output (2 ty + a, 2 tx + b) of the tile goes, if inside the plane.
                    let mut dst = [None; 4];
                    for (q, at) in dst.iter_mut().enumerate() {
                        let (oy, ox) = (2 * ty + q / 2, 2 * tx + q % 2);
                        if oy < self.ho && ox < self.wo {
                            *at = Some(img * p * k + oy * self.wo + ox);
                        }
                    }
                    output_tile(m, plane_stride(t * k), tile * k, k, y, p, &dst);
                    tile += 1;
                }
            }
        }
    }
}

/// Distance between the 16 planes of `V` (or `M`) holding `len` values each: `len` rounded up to
/// a whole number of 4 KiB pages plus one cache line, so that a tile's 16 values (one per plane)
/// fall in 16 different L1 sets. With `len` a multiple of 4 KiB (64 tiles x 64 channels) they
/// all map to one set, and the input transform's stores waited on the conflicts (half its time).
fn plane_stride(len: usize) -> usize {
    const PAGE: usize = 1024;
    const LINE: usize = 16;
    len.div_ceil(PAGE) * PAGE + LINE
}

/// Channels a transform handles at once: one AVX-512 register of f32 (the fixed-size arrays
/// below compile to whole-register operations, and narrower sets to several per array).
const LANES: usize = 16;
type Lanes = [f32; LANES];

/// `src[..width]` into `l` (the rest zero); a full set is a fixed-size copy.
#[inline(always)]
fn load(src: &[f32], width: usize, l: &mut Lanes) {
    if width == LANES {
        l.copy_from_slice(&src[..LANES]);
    } else {
        l.fill(0.0);
        for (d, s) in l.iter_mut().zip(&src[..width]) {
            *d = *s;
        }
    }
}

/// The first `width` lanes of `l` into `dst`.
#[inline(always)]
fn store(dst: &mut [f32], l: &Lanes, width: usize) {
    if width == LANES {
        dst[..LANES].copy_from_slice(l);
    } else {
        for (d, s) in dst[..width].iter_mut().zip(l) {
            *d = *s;
        }
    }
}

/// `B^T d B` of one tile along the channels: `d[i][j]` is patch position (i, j)'s `c` channel
/// values; position `xi` of the result goes to `v[xi * plane + at..][..c]`. Plain loops over
/// fixed-size arrays only: everything here inlines into `vectorized`'s instruction set (a closure
/// or `array::from_fn` compiled apart runs baseline SSE code).
#[inline(always)]
fn input_tile(d: &[[&[f32]; 4]; 4], v: &mut [f32], plane: usize, at: usize, c: usize) {
    let mut p = [[0f32; LANES]; 16];
    let mut out = [[0f32; LANES]; 16];
    let mut ch = 0;
    while ch < c {
        let width = LANES.min(c - ch);
        for (q, lanes) in p.iter_mut().enumerate() {
            load(&d[q / 4][q % 4][ch..], width, lanes);
        }
        // One lane at a time, every value named: the compiler turns the lane loop into
        // whole-register operations (nested array indexing made it emit gathers and scatters).
        for l in 0..LANES {
            // B^T d: rows d0 - d2, d1 + d2, d2 - d1, d1 - d3 of each column j.
            let mut t = [0f32; 16];
            for j in 0..4 {
                let (d0, d1, d2, d3) = (p[j][l], p[4 + j][l], p[8 + j][l], p[12 + j][l]);
                t[j] = d0 - d2;
                t[4 + j] = d1 + d2;
                t[8 + j] = d2 - d1;
                t[12 + j] = d1 - d3;
            }
            // (.) B: the same combination of each row's columns.
            for r in 0..4 {
                let (a0, a1, a2, a3) = (t[4 * r], t[4 * r + 1], t[4 * r + 2], t[4 * r + 3]);
                out[4 * r][l] = a0 - a2;
                out[4 * r + 1][l] = a1 + a2;
                out[4 * r + 2][l] = a2 - a1;
                out[4 * r + 3][l] = a1 - a3;
            }
        }
        for (xi, lanes) in out.iter().enumerate() {
            store(&mut v[xi * plane + at + ch..], lanes, width);
        }
        ch += width;
    }
}

/// `A^T M A` of one tile along the output channels: `M[xi]` is `m[xi * plane + at..][..k]`;
/// output row a, column b of channel `ch` goes to `y[dst[2 a + b] + ch * p]` (`None`: outside
/// the plane).
#[inline(always)]
fn output_tile(
    m: &[f32],
    plane: usize,
    at: usize,
    k: usize,
    y: &mut [f32],
    p: usize,
    dst: &[Option<usize>; 4],
) {
    let mut mm = [[0f32; LANES]; 16];
    let mut out = [[0f32; LANES]; 4];
    let mut ch = 0;
    while ch < k {
        let width = LANES.min(k - ch);
        for (xi, lanes) in mm.iter_mut().enumerate() {
            load(&m[xi * plane + at + ch..], width, lanes);
        }
        for l in 0..LANES {
            // A^T M: rows m0 + m1 + m2 and m1 - m2 - m3 of each column j.
            let mut z = [0f32; 8];
            for j in 0..4 {
                let (m0, m1, m2, m3) = (mm[j][l], mm[4 + j][l], mm[8 + j][l], mm[12 + j][l]);
                z[j] = m0 + m1 + m2;
                z[4 + j] = m1 - m2 - m3;
            }
            // (.) A: the same combination of each row's columns.
            for a in 0..2 {
                let (z0, z1, z2, z3) = (z[4 * a], z[4 * a + 1], z[4 * a + 2], z[4 * a + 3]);
                out[2 * a][l] = z0 + z1 + z2;
                out[2 * a + 1][l] = z1 - z2 - z3;
            }
        }
        for (q, lanes) in out.iter().enumerate() {
            if let Some(at) = dst[q] {
                // Channel planes `p` apart: one value per plane (no transpose pass after).
                for (l, v) in lanes[..width].iter().enumerate() {
                    y[at + (ch + l) * p] = *v;
                }
            }
        }
        ch += width;
    }
}

/// `G' e G'^T` of one output-gradient tile along the channels: `e[2 a + b]` is position (a, b)'s
/// `k` channel values; position `xi` of the result goes to `out[xi * plane + at..][..k]`
/// (`G' = [1 0; 1 1; 1 -1; 0 1]`, see `backward_weight`).
#[inline(always)]
fn gradient_input_tile(e: &[&[f32]; 4], out: &mut [f32], plane: usize, at: usize, k: usize) {
    let mut p = [[0f32; LANES]; 4];
    let mut res = [[0f32; LANES]; 16];
    let mut ch = 0;
    while ch < k {
        let width = LANES.min(k - ch);
        for (q, lanes) in p.iter_mut().enumerate() {
            load(&e[q][ch..], width, lanes);
        }
        for l in 0..LANES {
            let (e00, e01, e10, e11) = (p[0][l], p[1][l], p[2][l], p[3][l]);
            // G' e: rows e0, e0 + e1, e0 - e1, e1 of each column.
            let rows = [
                (e00, e01),
                (e00 + e10, e01 + e11),
                (e00 - e10, e01 - e11),
                (e10, e11),
            ];
            // (.) G'^T: the same of each row's two columns.
            for (r, (c0, c1)) in rows.iter().enumerate() {
                res[4 * r][l] = *c0;
                res[4 * r + 1][l] = c0 + c1;
                res[4 * r + 2][l] = c0 - c1;
                res[4 * r + 3][l] = *c1;
            }
        }
        for (xi, lanes) in res.iter().enumerate() {
            store(&mut out[xi * plane + at + ch..], lanes, width);
        }
        ch += width;
    }
}
