//! The CPU device's max pooling (f32): the same values and argmax as `cpu::pool::max_pool` (the
//! plain reference: the first maximum in scan order wins, padding never does), with each
//! window's in-range rows and columns computed once instead of filtering every tap.

use rayon::prelude::*;

use crate::cpu::pool::PoolGeom;

/// In-range input indices `lo..hi` of the window starting at `start` (may be negative).
fn span(start: isize, kernel: usize, len: usize) -> (usize, usize) {
    let lo = start.max(0) as usize;
    let hi = (start + kernel as isize).clamp(0, len as isize) as usize;
    (lo, hi.max(lo))
}

/// Max pooling of x [planes, h, w]: (values [planes, ho, wo], argmax iy * w + ix per output).
///
/// Panics if a window lies wholly in the padding (the op's geometry check rules it out).
pub fn max_pool(x: &[f32], g: &PoolGeom) -> (Vec<f32>, Vec<i32>) {
    let (po, hw) = (g.ho * g.wo, g.h * g.w);
    let mut out = super::zeros(g.planes * po);
    let mut idx = vec![0i32; g.planes * po];
    if po == 0 {
        return (out, idx);
    }
    out.par_chunks_mut(po)
        .zip(idx.par_chunks_mut(po))
        .enumerate()
        .for_each(|(plane, (out, idx))| {
            let src = &x[plane * hw..][..hw];
            for oy in 0..g.ho {
                let (ylo, yhi) = span(
                    (oy * g.stride.0) as isize - g.padding.0 as isize,
                    g.kernel.0,
                    g.h,
                );
                for ox in 0..g.wo {
                    let (xlo, xhi) = span(
                        (ox * g.stride.1) as isize - g.padding.1 as isize,
                        g.kernel.1,
                        g.w,
                    );
                    assert!(ylo < yhi && xlo < xhi, "every window overlaps the input");
                    let mut best_i = ylo * g.w + xlo;
                    let mut best = src[best_i];
                    for iy in ylo..yhi {
                        for (ix, &v) in src[iy * g.w + xlo..iy * g.w + xhi].iter().enumerate() {
                            if v > best {
                                best = v;
                                best_i = iy * g.w + xlo + ix;
                            }
                        }
                    }
                    out[oy * g.wo + ox] = best;
                    idx[oy * g.wo + ox] = best_i as i32;
                }
            }
        });
    (out, idx)
}
