//! Seeded synthetic feature sets shared by the clustering and evaluation tests.
#![allow(dead_code)]

use unreid::random::Rng;

/// How the points of a synthetic set are laid out.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub n: usize,
    pub dim: usize,
    pub clusters: usize,
    /// Noise scale around each centre (centres are unit vectors).
    pub spread: f64,
    /// Fraction of points drawn uniformly on the sphere (outliers).
    pub outliers: f64,
    /// Fraction of points that are exact copies of an earlier point (ties).
    pub duplicates: f64,
    /// Round every coordinate to a multiple of 1/64: all dot products become exact in f32, so
    /// rankings are identical across summation orders and exact ties are plentiful.
    pub quantize: bool,
    pub seed: u64,
}

fn normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
}

/// Row-major n x dim features, L2-normalised (approximately so when quantised), and the true
/// cluster of each point (-1 for outliers).
pub fn make(layout: Layout) -> (Vec<f32>, Vec<i64>) {
    let Layout {
        n,
        dim,
        clusters,
        spread,
        outliers,
        duplicates,
        quantize,
        seed,
    } = layout;
    let mut rng = Rng::new(seed);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| {
            let mut c: Vec<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
            normalize(&mut c);
            c
        })
        .collect();
    let mut data = Vec::with_capacity(n * dim);
    let mut truth = Vec::with_capacity(n);
    for i in 0..n {
        let u = rng.next_f64();
        let mut v: Vec<f32>;
        if i > 0 && u < duplicates {
            let src = rng.below(i);
            v = data[src * dim..(src + 1) * dim].to_vec();
            truth.push(truth[src]);
        } else if u < duplicates + outliers {
            v = (0..dim).map(|_| rng.normal() as f32).collect();
            normalize(&mut v);
            truth.push(-1);
        } else {
            let c = rng.below(clusters);
            let s = spread / (dim as f64).sqrt();
            v = centres[c]
                .iter()
                .map(|&x| x + (rng.normal() * s) as f32)
                .collect();
            normalize(&mut v);
            truth.push(c as i64);
        }
        if quantize && !(i > 0 && u < duplicates) {
            v.iter_mut().for_each(|x| *x = (*x * 64.0).round() / 64.0);
        }
        data.extend_from_slice(&v);
    }
    (data, truth)
}

pub fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum()
}

/// True when two labelings define the same partition and the same outlier set.
pub fn same_partition(a: &[i64], b: &[i64]) -> bool {
    use std::collections::HashMap;
    if a.len() != b.len() {
        return false;
    }
    let mut ab: HashMap<i64, i64> = HashMap::new();
    let mut ba: HashMap<i64, i64> = HashMap::new();
    for (&x, &y) in a.iter().zip(b) {
        if (x < 0) != (y < 0) {
            return false;
        }
        if x < 0 {
            continue;
        }
        if *ab.entry(x).or_insert(y) != y || *ba.entry(y).or_insert(x) != x {
            return false;
        }
    }
    true
}
