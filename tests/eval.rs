//! Evaluation: hand-computed cases (no valid match, same-camera exclusions, junk, ties), a random
//! case against a brute-force full-sort reference, and re-ranking against a dense reference.

mod synthetic;

use synthetic::{dot64, make, Layout};
use unreid::cluster::{Backend, Features};
use unreid::eval::{
    evaluate, evaluate_with, score_query, top_ranked, LabeledFeatures, RerankParams, Reranker,
};
use unreid::random::Rng;

const CPU: Backend = Backend::Cpu;

#[test]
fn hand_computed_query_with_exclusions_and_junk() {
    // Query: pid 1, camera 0.
    let dist = [0.1f32, 0.2, 0.3, 0.4, 0.5, 0.05];
    let pids = [1i64, 2, 1, 3, 1, -1];
    let cams = [0i64, 1, 1, 2, 2, 1];
    // Item 0 (same pid, same camera) and item 5 (junk) are removed. Valid order: pid2, pid1 (hit at
    // rank 2), pid3, pid1 (hit at rank 4): AP = (1/2 + 2/4) / 2.
    let s = score_query(&dist, 1, 0, &pids, &cams).unwrap();
    assert_eq!(s.first_match, 1);
    assert!((s.average_precision - 0.5).abs() < 1e-12);
    // The same pid in the same camera is still a distractor for other queries' pids: query pid 2.
    let s2 = score_query(&dist, 2, 0, &pids, &cams).unwrap();
    assert_eq!(
        s2.first_match, 1,
        "item 0 (pid 1, cam 0) ranks before the pid-2 match"
    );
    assert!((s2.average_precision - 0.5).abs() < 1e-12);
    assert_eq!(
        top_ranked(&dist, 1, 0, &pids, &cams, 3),
        vec![(1, false), (2, true), (3, false)]
    );
}

#[test]
fn query_without_valid_match_is_skipped_and_counted() {
    let gp = [4i64, 5, 5];
    let gc = [0i64, 1, 2];
    // pid 4 only appears in the query's own camera; pid -1 queries cannot be scored.
    assert!(score_query(&[0.1, 0.2, 0.3], 4, 0, &gp, &gc).is_none());
    assert!(score_query(&[0.1, 0.2, 0.3], -1, 0, &gp, &gc).is_none());
    let dist = [[0.1f32, 0.2, 0.3], [0.3, 0.2, 0.1], [0.1, 0.2, 0.3]];
    let r = evaluate_with((&[4, 5, -1], &[0, 0, 0]), (&gp, &gc), 3, |q0, n, out| {
        for t in 0..n {
            out[t * 3..(t + 1) * 3].copy_from_slice(&dist[q0 + t]);
        }
    })
    .unwrap();
    assert_eq!(
        (r.num_queries, r.num_valid_queries, r.num_skipped_queries),
        (3, 1, 2)
    );
    // The one valid query (pid 5) has both matches first.
    assert!((r.map - 1.0).abs() < 1e-12);
    assert_eq!(r.cmc, vec![1.0, 1.0, 1.0]);
}

#[test]
fn ties_go_to_the_lower_gallery_index() {
    let cams = [1i64, 1];
    let a = score_query(&[0.3, 0.3], 1, 0, &[2, 1], &cams).unwrap();
    assert_eq!(a.first_match, 1);
    assert!((a.average_precision - 0.5).abs() < 1e-12);
    let b = score_query(&[0.3, 0.3], 1, 0, &[1, 2], &cams).unwrap();
    assert_eq!(b.first_match, 0);
    assert!((b.average_precision - 1.0).abs() < 1e-12);
}

#[test]
fn evaluate_on_features_hand_case() {
    // 2-d unit vectors: the query at angle 0, gallery at growing angles.
    let q = [1.0f32, 0.0];
    let angles = [0.1f32, 0.2, 0.3, 0.4];
    let g: Vec<f32> = angles.iter().flat_map(|a| [a.cos(), a.sin()]).collect();
    let qf = LabeledFeatures::new(Features::new(&q, 1, 2).unwrap(), &[7], &[0]).unwrap();
    let gf = LabeledFeatures::new(
        Features::new(&g, 4, 2).unwrap(),
        &[3, 7, 3, 7],
        &[1, 1, 1, 2],
    )
    .unwrap();
    let r = evaluate(CPU, qf, gf, 4).unwrap();
    // Ranking: pid3, pid7 (hit at 2), pid3, pid7 (hit at 4).
    assert!((r.map - 0.5).abs() < 1e-9, "mAP {}", r.map);
    assert_eq!(r.cmc, vec![0.0, 1.0, 1.0, 1.0]);
}

/// Full stable sort of each row, the textbook way.
fn brute_force(
    dist: &[Vec<f64>],
    qp: &[i64],
    qc: &[i64],
    gp: &[i64],
    gc: &[i64],
    max_rank: usize,
) -> (f64, Vec<f64>, usize) {
    let mut aps = Vec::new();
    let mut cmc = vec![0f64; max_rank];
    for (i, row) in dist.iter().enumerate() {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[a].partial_cmp(&row[b]).unwrap());
        let kept: Vec<bool> = order
            .iter()
            .filter(|&&j| gp[j] >= 0 && !(gp[j] == qp[i] && gc[j] == qc[i]))
            .map(|&j| gp[j] == qp[i])
            .collect();
        if !kept.iter().any(|&m| m) {
            continue;
        }
        let first = kept.iter().position(|&m| m).unwrap();
        for c in cmc.iter_mut().skip(first) {
            *c += 1.0;
        }
        let (mut hits, mut sum) = (0, 0.0);
        for (r, &m) in kept.iter().enumerate() {
            if m {
                hits += 1;
                sum += hits as f64 / (r + 1) as f64;
            }
        }
        aps.push(sum / hits as f64);
    }
    let n = aps.len();
    (
        aps.iter().sum::<f64>() / n as f64,
        cmc.iter().map(|c| c / n as f64).collect(),
        n,
    )
}

fn random_labels(
    rng: &mut Rng,
    n: usize,
    ids: usize,
    cams: usize,
    junk: f64,
) -> (Vec<i64>, Vec<i64>) {
    let pids = (0..n)
        .map(|_| {
            if rng.next_f64() < junk {
                -1
            } else {
                rng.below(ids) as i64
            }
        })
        .collect();
    let camids = (0..n).map(|_| rng.below(cams) as i64).collect();
    (pids, camids)
}

#[test]
fn random_case_matches_brute_force() {
    // Quantised features: exact distances, so the f32 ranking equals the f64 one, ties included.
    let lay = Layout {
        n: 460,
        dim: 16,
        clusters: 15,
        spread: 0.6,
        outliers: 0.1,
        duplicates: 0.1,
        quantize: true,
        seed: 5,
    };
    let (x, _) = make(lay);
    let (nq, ng) = (160, 300);
    let mut rng = Rng::new(11);
    let (qp, qc) = random_labels(&mut rng, nq, 25, 4, 0.0);
    let (gp, gc) = random_labels(&mut rng, ng, 25, 4, 0.05);
    let (qx, gx) = (&x[..nq * 16], &x[nq * 16..]);
    let dist: Vec<Vec<f64>> = (0..nq)
        .map(|i| {
            let q = &qx[i * 16..(i + 1) * 16];
            (0..ng)
                .map(|j| {
                    let g = &gx[j * 16..(j + 1) * 16];
                    dot64(q, q) + dot64(g, g) - 2.0 * dot64(q, g)
                })
                .collect()
        })
        .collect();
    let (map, cmc, valid) = brute_force(&dist, &qp, &qc, &gp, &gc, 20);
    // Exact distances on the GPU too, so both backends must give the brute-force figures exactly.
    let gpu =
        unreid::Device::gpu().unwrap_or_else(|e| panic!("the GPU tests need an adapter: {e}"));
    for backend in [CPU, Backend::Gpu(gpu)] {
        let name = format!("{backend:?}");
        let r = evaluate(
            backend,
            LabeledFeatures::new(Features::new(qx, nq, 16).unwrap(), &qp, &qc).unwrap(),
            LabeledFeatures::new(Features::new(gx, ng, 16).unwrap(), &gp, &gc).unwrap(),
            20,
        )
        .unwrap();
        assert_eq!(r.num_valid_queries, valid, "{name}");
        assert!(
            r.num_skipped_queries < nq && valid > 100,
            "degenerate: {valid} valid"
        );
        assert!(
            (r.map - map).abs() < 1e-12,
            "{name}: mAP {} vs {map}",
            r.map
        );
        for (a, b) in r.cmc.iter().zip(&cmc) {
            assert!((a - b).abs() < 1e-12, "{name}: CMC");
        }
    }
}

/// `re_ranking` from the re-ID codebases, literally, on dense matrices.
fn ref_rerank(
    q: &[f32],
    g: &[f32],
    dim: usize,
    k1: usize,
    k2: usize,
    lambda: f32,
) -> Vec<Vec<f32>> {
    let all: Vec<&[f32]> = q.chunks(dim).chain(g.chunks(dim)).collect();
    let (nq, m) = (q.len() / dim, all.len());
    let sq = |a: &[f32], b: &[f32]| (dot64(a, a) + dot64(b, b) - 2.0 * dot64(a, b)) as f32;
    let a: Vec<Vec<f32>> = (0..m)
        .map(|i| (0..m).map(|j| sq(all[i], all[j]).powi(2)).collect())
        .collect();
    let colmax: Vec<f32> = (0..m)
        .map(|j| (0..m).map(|r| a[r][j]).fold(f32::MIN, f32::max))
        .collect();
    let o: Vec<Vec<f32>> = (0..m)
        .map(|i| (0..m).map(|j| a[j][i] / colmax[i]).collect())
        .collect();
    let rank: Vec<Vec<usize>> = o
        .iter()
        .map(|row| {
            let mut idx: Vec<usize> = (0..m).collect();
            idx.sort_by(|&x, &y| row[x].partial_cmp(&row[y]).unwrap());
            idx
        })
        .collect();
    let recip = |i: usize, k: usize| -> Vec<usize> {
        rank[i][..k]
            .iter()
            .copied()
            .filter(|&j| rank[j][..k].contains(&i))
            .collect()
    };
    let kh = {
        let h = k1 as f64 / 2.0;
        (if h.fract() == 0.5 && (h.floor() as i64) % 2 == 0 {
            h.floor()
        } else {
            h.round()
        }) as usize
            + 1
    };
    let mut v = vec![vec![0f32; m]; m];
    for i in 0..m {
        let r = recip(i, k1 + 1);
        let mut exp = r.clone();
        for &c in &r {
            let cand = recip(c, kh);
            if cand.iter().filter(|j| r.contains(j)).count() as f64 > 2.0 / 3.0 * cand.len() as f64
            {
                exp.extend(cand);
            }
        }
        exp.sort();
        exp.dedup();
        let w: Vec<f32> = exp.iter().map(|&j| (-o[i][j]).exp()).collect();
        let s: f32 = w.iter().sum();
        for (&j, &wj) in exp.iter().zip(&w) {
            v[i][j] = wj / s;
        }
    }
    if k2 != 1 {
        v = (0..m)
            .map(|i| {
                (0..m)
                    .map(|c| rank[i][..k2].iter().map(|&r| v[r][c]).sum::<f32>() / k2 as f32)
                    .collect()
            })
            .collect();
    }
    let inv: Vec<Vec<usize>> = (0..m)
        .map(|c| (0..m).filter(|&r| v[r][c] != 0.0).collect())
        .collect();
    (0..nq)
        .map(|i| {
            let mut t = vec![0f32; m];
            for c in (0..m).filter(|&c| v[i][c] != 0.0) {
                for &j in &inv[c] {
                    t[j] += v[i][c].min(v[j][c]);
                }
            }
            (nq..m)
                .map(|j| (1.0 - t[j] / (2.0 - t[j])) * (1.0 - lambda) + o[i][j] * lambda)
                .collect()
        })
        .collect()
}

#[test]
fn rerank_matches_dense_reference() {
    let lay = Layout {
        n: 220,
        dim: 24,
        clusters: 12,
        spread: 0.5,
        outliers: 0.1,
        duplicates: 0.05,
        quantize: true,
        seed: 8,
    };
    let (x, _) = make(lay);
    let (nq, ng, dim) = (40, 180, 24);
    let (q, g) = (&x[..nq * dim], &x[nq * dim..]);
    for params in [
        RerankParams::default(),
        RerankParams {
            k1: 7,
            k2: 1,
            lambda: 0.5,
        },
    ] {
        let want = ref_rerank(q, g, dim, params.k1, params.k2, params.lambda);
        let rr = Reranker::new(
            CPU,
            Features::new(q, nq, dim).unwrap(),
            Features::new(g, ng, dim).unwrap(),
            params,
        )
        .unwrap();
        let mut got = vec![0f32; 7 * ng];
        let mut below_one = 0;
        for q0 in (0..nq).step_by(7) {
            let n = 7.min(nq - q0);
            rr.rows(q0, n, &mut got[..n * ng]);
            for t in 0..n {
                for j in 0..ng {
                    let (a, b) = (got[t * ng + j], want[q0 + t][j]);
                    assert!(
                        (a - b).abs() <= 1e-5,
                        "{params:?}: query {} gallery {j}: {a} vs {b}",
                        q0 + t
                    );
                    below_one += usize::from(b < params.lambda * 0.999 + (1.0 - params.lambda));
                }
            }
        }
        assert!(
            below_one > nq,
            "degenerate: too few pairs with shared support"
        );
    }
}

#[test]
fn rerank_improves_or_keeps_a_clustered_retrieval() {
    // Sanity on structured data: re-ranked evaluation runs through the streaming evaluator.
    let lay = Layout {
        n: 600,
        dim: 32,
        clusters: 30,
        spread: 0.8,
        outliers: 0.0,
        duplicates: 0.0,
        quantize: false,
        seed: 12,
    };
    let (x, truth) = make(lay);
    let (nq, ng) = (100, 500);
    let pids: Vec<i64> = truth.clone();
    let cams: Vec<i64> = (0..600).map(|i| (i % 5) as i64).collect();
    let (qx, gx) = (
        Features::new(&x[..nq * 32], nq, 32).unwrap(),
        Features::new(&x[nq * 32..], ng, 32).unwrap(),
    );
    let plain = evaluate(
        CPU,
        LabeledFeatures::new(qx, &pids[..nq], &cams[..nq]).unwrap(),
        LabeledFeatures::new(gx, &pids[nq..], &cams[nq..]).unwrap(),
        10,
    )
    .unwrap();
    let rr = Reranker::new(CPU, qx, gx, RerankParams::default()).unwrap();
    let re = evaluate_with(
        (&pids[..nq], &cams[..nq]),
        (&pids[nq..], &cams[nq..]),
        10,
        |q0, n, out| rr.rows(q0, n, out),
    )
    .unwrap();
    assert_eq!(plain.num_valid_queries, re.num_valid_queries);
    assert!(
        re.map > plain.map - 0.02,
        "re-ranking mAP {} vs plain {}",
        re.map,
        plain.map
    );
    assert!(
        plain.map > 0.2 && plain.map < 0.999,
        "degenerate plain mAP {}",
        plain.map
    );
}
