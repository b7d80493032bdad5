//! Reference 2-D convolution (NCHW, grouped): per image and group, host im2col then the `gemm`
//! crate; the input gradient scatters columns back (col2im), the weight gradient is one GEMM per
//! chunk of images. Independent of the WGSL kernels (which gather instead of scatter).

use rayon::prelude::*;

use super::matmul::gemm_into;
use super::Float;

/// Geometry of one convolution: input [n, c, h, w], weight [cout, c/groups, kh, kw],
/// output [n, cout, ho, wo].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub groups: usize,
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub ho: usize,
    pub wo: usize,
}

impl ConvGeom {
    pub fn cin_g(&self) -> usize {
        self.c / self.groups
    }
    pub fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    /// Rows of one group's column matrix: (c/groups) * kh * kw.
    pub fn kg(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    pub fn p(&self) -> usize {
        self.ho * self.wo
    }
    /// Multiply-adds of the forward pass.
    pub fn macs(&self) -> usize {
        self.n * self.cout * self.p() * self.kg()
    }
    /// Input row/column read by output `o` at tap `k`, or None in the padding.
    fn src(
        &self,
        o: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
        size: usize,
    ) -> Option<usize> {
        let i = (o * stride + k * dil) as isize - pad as isize;
        (i >= 0 && (i as usize) < size).then_some(i as usize)
    }
}

/// One image's group `grp` as columns [kg, p].
fn im2col<T: Float>(x: &[T], g: &ConvGeom, img: usize, grp: usize, cols: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    for cg in 0..g.cin_g() {
        let plane = &x[(img * g.c + grp * g.cin_g() + cg) * hw..][..hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &mut cols[((cg * g.kh + ki) * g.kw + kj) * p..][..p];
                for oy in 0..g.ho {
                    let iy = g.src(oy, ki, g.stride.0, g.padding.0, g.dilation.0, g.h);
                    for ox in 0..g.wo {
                        let ix = g.src(ox, kj, g.stride.1, g.padding.1, g.dilation.1, g.w);
                        row[oy * g.wo + ox] = match (iy, ix) {
                            (Some(iy), Some(ix)) => plane[iy * g.w + ix],
                            _ => T::zero(),
                        };
                    }
                }
            }
        }
    }
}

/// Adds columns [kg, p] back into one image's group of the input gradient.
fn col2im<T: Float>(cols: &[T], g: &ConvGeom, grp: usize, dx_img: &mut [T]) {
    let (p, hw) = (g.p(), g.h * g.w);
    for cg in 0..g.cin_g() {
        let plane = &mut dx_img[(grp * g.cin_g() + cg) * hw..][..hw];
        for ki in 0..g.kh {
            for kj in 0..g.kw {
                let row = &cols[((cg * g.kh + ki) * g.kw + kj) * p..][..p];
                for oy in 0..g.ho {
                    let Some(iy) = g.src(oy, ki, g.stride.0, g.padding.0, g.dilation.0, g.h) else {
                        continue;
                    };
                    for ox in 0..g.wo {
                        if let Some(ix) = g.src(ox, kj, g.stride.1, g.padding.1, g.dilation.1, g.w)
                        {
                            plane[iy * g.w + ix] = plane[iy * g.w + ix] + row[oy * g.wo + ox];
                        }
                    }
                }
            }
        }
    }
}

/// y [n, cout, ho, wo] from x [n, c, h, w] and weight [cout, c/groups, kh, kw] (no bias).
pub fn forward<T: Float>(x: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    let (p, kg, cog) = (g.p(), g.kg(), g.cout_g());
    let mut out = vec![T::zero(); g.n * g.cout * p];
    if out.is_empty() {
        return out;
    }
    let inner_par = g.n == 1;
    out.par_chunks_mut(g.cout * p)
        .enumerate()
        .for_each(|(img, y)| {
            let mut cols = vec![T::zero(); kg * p];
            for grp in 0..g.groups {
                im2col(x, g, img, grp, &mut cols);
                gemm_into(
                    &mut y[grp * cog * p..][..cog * p],
                    &w[grp * cog * kg..][..cog * kg],
                    &cols,
                    (cog, kg, p),
                    false,
                    false,
                    false,
                    inner_par,
                );
            }
        });
    out
}

/// dL/dx [n, c, h, w] from dL/dy [n, cout, ho, wo].
pub fn backward_input<T: Float>(dy: &[T], w: &[T], g: &ConvGeom) -> Vec<T> {
    let (p, kg, cog) = (g.p(), g.kg(), g.cout_g());
    let mut dx = vec![T::zero(); g.n * g.c * g.h * g.w];
    if dx.is_empty() {
        return dx;
    }
    let inner_par = g.n == 1;
    dx.par_chunks_mut(g.c * g.h * g.w)
        .enumerate()
        .for_each(|(img, dx_img)| {
            let mut cols = vec![T::zero(); kg * p];
            for grp in 0..g.groups {
                // cols = W_g^T dY_g: [kg, cog] x [cog, p]
                gemm_into(
                    &mut cols,
                    &w[grp * cog * kg..][..cog * kg],
                    &dy[(img * g.cout + grp * cog) * p..][..cog * p],
                    (kg, cog, p),
                    true,
                    false,
                    false,
                    inner_par,
                );
                col2im(&cols, g, grp, dx_img);
            }
        });
    dx
}

/// dL/dW [cout, c/groups, kh, kw] from dL/dy and x: a sum over images of dY_g cols^T, added in
/// image order (deterministic).
pub fn backward_weight<T: Float>(dy: &[T], x: &[T], g: &ConvGeom) -> Vec<T> {
    let (p, kg, cog) = (g.p(), g.kg(), g.cout_g());
    let mut dw = vec![T::zero(); g.cout * kg];
    if dw.is_empty() || p == 0 {
        return dw;
    }
    // Per group (in parallel), images in order.
    dw.par_chunks_mut(cog * kg)
        .enumerate()
        .for_each(|(grp, dw_g)| {
            let mut cols = vec![T::zero(); kg * p];
            for img in 0..g.n {
                im2col(x, g, img, grp, &mut cols);
                gemm_into(
                    dw_g,
                    &dy[(img * g.cout + grp * cog) * p..][..cog * p],
                    &cols,
                    (cog, p, kg),
                    false,
                    true,
                    true,
                    g.groups == 1,
                );
            }
        });
    dw
}
