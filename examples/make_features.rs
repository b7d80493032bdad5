//! Writes a synthetic features file with re-ID-like structure, for timing `unreid cluster` and
//! `unreid evaluate` without a dataset:
//!
//!     cargo run --release --example make_features -- N DIM IDS CAMS SEED OUT.safetensors [NOISE]
//!
//! Each identity has a random unit centre (fixed by SEED alone, so a query and a
//! gallery file made with the same SEED share identities), each camera a small offset, and each image
//! noise on top; rows are L2-normalised. Row i draws from its own stream (`SAMPLE = SEED + 1 + i`
//! mixed with the file's N), so different N give different images.

use rayon::prelude::*;
use unreid::features::FeatureSet;
use unreid::random::Rng;

fn unit(rng: &mut Rng, dim: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..dim).map(|_| rng.normal() as f32).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 6 && args.len() != 7 {
        anyhow::bail!("usage: make_features N DIM IDS CAMS SEED OUT.safetensors [NOISE]");
    }
    // Image noise relative to the identity signal: 1 is easy, 4 gives Market-like overlap.
    let noise_scale: f32 = args.get(6).map(|s| s.parse()).transpose()?.unwrap_or(1.0);
    let n: usize = args[0].parse()?;
    let dim: usize = args[1].parse()?;
    let ids: usize = args[2].parse()?;
    let cams: usize = args[3].parse()?;
    let seed: u64 = args[4].parse()?;
    let out = &args[5];
    let mut rng = Rng::new(seed);
    let centres: Vec<Vec<f32>> = (0..ids).map(|_| unit(&mut rng, dim)).collect();
    let cam_offsets: Vec<Vec<f32>> = (0..cams).map(|_| unit(&mut rng, dim)).collect();
    let rows: Vec<(Vec<f32>, i64, i64)> = (0..n)
        .into_par_iter()
        .map(|i| {
            let mut r =
                Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ ((n as u64) << 32) ^ i as u64);
            let pid = r.below(ids);
            let cam = r.below(cams);
            // Noise scale per image: most images are clean, some hard.
            let noise = noise_scale * (0.6 + 0.8 * r.next_f64() as f32);
            let s = noise / (dim as f32).sqrt();
            let mut v: Vec<f32> = (0..dim)
                .map(|d| centres[pid][d] + 0.3 * cam_offsets[cam][d] + s * r.normal() as f32)
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            (v, pid as i64, cam as i64)
        })
        .collect();
    let mut set = FeatureSet {
        num: n,
        dim,
        ..Default::default()
    };
    set.features.reserve(n * dim);
    let (mut pids, mut camids) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for (i, (v, pid, cam)) in rows.into_iter().enumerate() {
        set.features.extend_from_slice(&v);
        pids.push(pid);
        camids.push(cam);
        set.paths
            .push(format!("synthetic/{pid:05}_c{cam}_{i:07}.jpg"));
    }
    set.pids = Some(pids);
    set.camids = Some(camids);
    set.save(out)?;
    println!("wrote {n} x {dim} features ({ids} ids, {cams} cameras) to {out}");
    Ok(())
}
