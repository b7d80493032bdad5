//! Reference 2-D max / average pooling over [n*c planes, h, w] (floor mode, no dilation); the
//! backward passes scatter into the input (the kernels gather).

use rayon::prelude::*;

use super::Float;

/// Pooling window geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub kernel: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub ho: usize,
    pub wo: usize,
}

impl PoolGeom {
    /// In-range input positions of output (oy, ox)'s window, in scan order.
    fn window(&self, oy: usize, ox: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let y0 = (oy * self.stride.0) as isize - self.padding.0 as isize;
        let x0 = (ox * self.stride.1) as isize - self.padding.1 as isize;
        (0..self.kernel.0 as isize).flat_map(move |ki| {
            (0..self.kernel.1 as isize).filter_map(move |kj| {
                let (iy, ix) = (y0 + ki, x0 + kj);
                (iy >= 0 && ix >= 0 && (iy as usize) < self.h && (ix as usize) < self.w)
                    .then_some((iy as usize, ix as usize))
            })
        })
    }
}

/// Max pooling: values and the argmax (iy * w + ix within the plane; first maximum wins).
pub fn max_pool<T: Float>(x: &[T], g: &PoolGeom) -> (Vec<T>, Vec<i32>) {
    let po = g.ho * g.wo;
    let (hw, w) = (g.h * g.w, g.w);
    (0..g.planes * po)
        .into_par_iter()
        .map(|t| {
            let (plane, oy, ox) = (t / po, (t % po) / g.wo, t % g.wo);
            let mut best: Option<(T, usize)> = None;
            for (iy, ix) in g.window(oy, ox) {
                let v = x[plane * hw + iy * w + ix];
                if best.is_none_or(|(b, _)| v > b) {
                    best = Some((v, iy * w + ix));
                }
            }
            let (v, i) = best.expect("every window overlaps the input");
            (v, i as i32)
        })
        .unzip()
}

pub fn max_pool_backward<T: Float>(g_out: &[T], idx: &[i32], g: &PoolGeom) -> Vec<T> {
    let (hw, po) = (g.h * g.w, g.ho * g.wo);
    let mut dx = vec![T::zero(); g.planes * hw];
    dx.par_chunks_mut(hw.max(1))
        .enumerate()
        .for_each(|(plane, d)| {
            for o in 0..po {
                let i = idx[plane * po + o] as usize;
                d[i] = d[i] + g_out[plane * po + o];
            }
        });
    dx
}

/// Average pooling; padding counts in the divisor (PyTorch's count_include_pad=True).
pub fn avg_pool<T: Float>(x: &[T], g: &PoolGeom) -> Vec<T> {
    let po = g.ho * g.wo;
    let div = T::from_usize(g.kernel.0 * g.kernel.1).unwrap();
    (0..g.planes * po)
        .into_par_iter()
        .map(|t| {
            let (plane, oy, ox) = (t / po, (t % po) / g.wo, t % g.wo);
            g.window(oy, ox).fold(T::zero(), |a, (iy, ix)| {
                a + x[plane * g.h * g.w + iy * g.w + ix]
            }) / div
        })
        .collect()
}

pub fn avg_pool_backward<T: Float>(g_out: &[T], g: &PoolGeom) -> Vec<T> {
    let (hw, po) = (g.h * g.w, g.ho * g.wo);
    let div = T::from_usize(g.kernel.0 * g.kernel.1).unwrap();
    let mut dx = vec![T::zero(); g.planes * hw];
    dx.par_chunks_mut(hw.max(1))
        .enumerate()
        .for_each(|(plane, d)| {
            for oy in 0..g.ho {
                for ox in 0..g.wo {
                    let v = g_out[plane * po + oy * g.wo + ox] / div;
                    for (iy, ix) in g.window(oy, ox) {
                        d[iy * g.w + ix] = d[iy * g.w + ix] + v;
                    }
                }
            }
        });
    dx
}
