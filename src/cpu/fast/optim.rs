//! The CPU device's Adam step (f32): the same arithmetic as `cpu::optim::adam` (the plain
//! reference), element for element and in the same order, so the results are bitwise equal; it
//! runs out of place (the tensors are shared, so the reference path first copies all four) and
//! in parallel over fixed-size chunks.

use rayon::prelude::*;

use crate::cpu::optim::AdamHyper;

/// Elements per rayon task (large enough that a task is worth scheduling).
const CHUNK: usize = 1 << 15;

/// One Adam step (Kingma & Ba, Algorithm 1, with PyTorch's L2 weight decay added to the
/// gradient): returns (param, m, v) after the step. Every slice has the parameter's length.
pub fn adam(p: &[f32], g: &[f32], m: &[f32], v: &[f32], h: AdamHyper) -> [Vec<f32>; 3] {
    let n = p.len();
    assert!(g.len() == n && m.len() == n && v.len() == n);
    // The constants exactly as the reference converts them (f64 -> f32).
    let c = |x: f64| x as f32;
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2_sqrt = (1.0 - h.beta2.powi(h.step as i32)).sqrt();
    let (wd, b1, one_b1, b2, one_b2) = (
        c(h.weight_decay),
        c(h.beta1),
        c(1.0 - h.beta1),
        c(h.beta2),
        c(1.0 - h.beta2),
    );
    let (bc2s, eps, step) = (c(bc2_sqrt), c(h.eps), c(h.lr / bc1));
    let mut out = [vec![0f32; n], vec![0f32; n], vec![0f32; n]];
    let [po, mo, vo] = &mut out;
    po.par_chunks_mut(CHUNK)
        .zip(mo.par_chunks_mut(CHUNK))
        .zip(vo.par_chunks_mut(CHUNK))
        .enumerate()
        .for_each(|(chunk, ((po, mo), vo))| {
            let off = chunk * CHUNK;
            let len = po.len();
            let (p, g, m, v) = (
                &p[off..off + len],
                &g[off..off + len],
                &m[off..off + len],
                &v[off..off + len],
            );
            for i in 0..len {
                let gi = g[i] + wd * p[i];
                let mi = b1 * m[i] + one_b1 * gi;
                let vi = b2 * v[i] + one_b2 * gi * gi;
                let denom = vi.sqrt() / bc2s + eps;
                po[i] = p[i] - step * mi / denom;
                mo[i] = mi;
                vo[i] = vi;
            }
        });
    out
}
