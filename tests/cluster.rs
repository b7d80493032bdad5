//! Clustering kernels against straightforward dense references written here, on seeded feature
//! sets with cluster structure: tight and loose clusters, outliers, duplicates (exact ties).

// The references index like the Python they transcribe, so they are easy to check against it.
#![allow(clippy::needless_range_loop)]

mod synthetic;

use synthetic::{dot64, make, same_partition, Layout};
use unreid::cluster::jaccard::half_list_len;
use unreid::cluster::knn::knn_tiled;
use unreid::cluster::{
    dbscan, dbscan_many, jaccard_graph, kmeans, knn, radius_graph, self_paced_labels, Backend,
    Features, JaccardParams, KmeansParams, PlainDistance, SparseGraph,
};

const CPU: Backend = Backend::Cpu;

fn layouts() -> Vec<(&'static str, Layout)> {
    let base = Layout {
        n: 600,
        dim: 32,
        clusters: 20,
        spread: 0.15,
        outliers: 0.05,
        duplicates: 0.05,
        quantize: true,
        seed: 1,
    };
    vec![
        ("tight", base),
        (
            "loose",
            Layout {
                n: 700,
                dim: 48,
                clusters: 10,
                spread: 0.7,
                outliers: 0.1,
                duplicates: 0.02,
                seed: 2,
                ..base
            },
        ),
        (
            "ties",
            Layout {
                n: 400,
                dim: 16,
                clusters: 8,
                spread: 0.3,
                outliers: 0.05,
                duplicates: 0.3,
                seed: 3,
                ..base
            },
        ),
        (
            "outliers",
            Layout {
                n: 500,
                dim: 24,
                clusters: 5,
                spread: 0.2,
                outliers: 0.4,
                duplicates: 0.0,
                seed: 4,
                ..base
            },
        ),
    ]
}

// ---------------------------------------------------------------- dense references

/// Squared Euclidean distances in f64 (exact for quantised features).
fn ref_distances(x: &[f32], n: usize, dim: usize) -> Vec<Vec<f64>> {
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    let norms: Vec<f64> = (0..n).map(|i| dot64(row(i), row(i))).collect();
    (0..n)
        .map(|i| {
            (0..n)
                .map(|j| norms[i] + norms[j] - 2.0 * dot64(row(i), row(j)))
                .collect()
        })
        .collect()
}

/// Full ranking of every row by (distance, index), truncated to k.
fn ref_knn(dist: &[Vec<f64>], k: usize) -> Vec<Vec<usize>> {
    dist.iter()
        .map(|d| {
            let mut order: Vec<usize> = (0..d.len()).collect();
            order.sort_by(|&a, &b| d[a].partial_cmp(&d[b]).unwrap().then(a.cmp(&b)));
            order.truncate(k);
            order
        })
        .collect()
}

fn numpy_around(v: f64) -> f64 {
    let f = v.floor();
    if v - f == 0.5 {
        if f % 2.0 == 0.0 {
            f
        } else {
            f + 1.0
        }
    } else {
        v.round()
    }
}

fn k_reciprocal(rank: &[Vec<usize>], i: usize, k: usize) -> Vec<usize> {
    rank[i][..k]
        .iter()
        .copied()
        .filter(|&j| rank[j][..k].contains(&i))
        .collect()
}

/// Dense N x N Jaccard distance, step by step as SpCL's compute_jaccard_distance.
fn ref_jaccard(x: &[f32], n: usize, dim: usize, k1: usize, k2: usize) -> Vec<Vec<f32>> {
    let rank = ref_knn(&ref_distances(x, n, dim), k1);
    let kh = (numpy_around(k1 as f64 / 2.0) as usize + 1).min(k1);
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    let mut v = vec![vec![0f32; n]; n];
    for i in 0..n {
        let r = k_reciprocal(&rank, i, k1);
        let mut exp = r.clone();
        for &c in &r {
            let cand = k_reciprocal(&rank, c, kh);
            let inter = cand.iter().filter(|j| r.contains(j)).count();
            if inter as f64 > 2.0 / 3.0 * cand.len() as f64 {
                exp.extend(cand);
            }
        }
        exp.sort();
        exp.dedup();
        let logits: Vec<f64> = exp
            .iter()
            .map(|&j| -(2.0 - 2.0 * dot64(row(i), row(j))))
            .collect();
        let mx = logits.iter().cloned().fold(f64::MIN, f64::max);
        let sum: f64 = logits.iter().map(|l| (l - mx).exp()).sum();
        for (&j, l) in exp.iter().zip(&logits) {
            v[i][j] = ((l - mx).exp() / sum) as f32;
        }
    }
    if k2 != 1 {
        let mut qe = vec![vec![0f32; n]; n];
        for i in 0..n {
            for j in 0..n {
                qe[i][j] = rank[i][..k2].iter().map(|&r| v[r][j]).sum::<f32>() / k2 as f32;
            }
        }
        v = qe;
    }
    let inv: Vec<Vec<usize>> = (0..n)
        .map(|c| (0..n).filter(|&r| v[r][c] != 0.0).collect())
        .collect();
    let mut jac = vec![vec![0f32; n]; n];
    for i in 0..n {
        let mut temp_min = vec![0f32; n];
        for c in (0..n).filter(|&c| v[i][c] != 0.0) {
            for &j in &inv[c] {
                temp_min[j] += v[i][c].min(v[j][c]);
            }
        }
        for j in 0..n {
            jac[i][j] = (1.0 - temp_min[j] / (2.0 - temp_min[j])).max(0.0);
        }
    }
    jac
}

/// sklearn's dbscan_inner on a dense distance matrix, literally.
fn ref_dbscan(dist: &[Vec<f32>], eps: f32, min_samples: usize) -> Vec<i64> {
    let n = dist.len();
    let hoods: Vec<Vec<usize>> = dist
        .iter()
        .map(|d| (0..n).filter(|&j| d[j] <= eps).collect())
        .collect();
    let core: Vec<bool> = hoods.iter().map(|h| h.len() >= min_samples).collect();
    let mut labels = vec![-1i64; n];
    let mut label = 0;
    for start in 0..n {
        if labels[start] != -1 || !core[start] {
            continue;
        }
        let mut stack = Vec::new();
        let mut i = start;
        loop {
            if labels[i] == -1 {
                labels[i] = label;
                if core[i] {
                    stack.extend(hoods[i].iter().copied().filter(|&v| labels[v] == -1));
                }
            }
            match stack.pop() {
                Some(v) => i = v,
                None => break,
            }
        }
        label += 1;
    }
    labels
}

fn graph_value(g: &SparseGraph, i: usize, j: usize) -> Option<f32> {
    let (nb, d) = g.row(i);
    nb.binary_search(&(j as u32)).ok().map(|p| d[p])
}

/// Moves eps away from any reference distance closer than `margin`, so f32 rounding differences
/// between two correct implementations cannot flip a neighbourhood.
fn safe_eps(dist: &[Vec<f32>], mut eps: f32, margin: f32) -> f32 {
    while dist.iter().flatten().any(|&d| (d - eps).abs() < margin) {
        eps += 2.0 * margin;
    }
    eps
}

// ---------------------------------------------------------------- kNN

#[test]
fn knn_matches_dense_reference_exactly_with_ties() {
    for (name, layout) in layouts() {
        let (x, _) = make(layout);
        let feats = Features::new(&x, layout.n, layout.dim).unwrap();
        let reference = ref_knn(&ref_distances(&x, layout.n, layout.dim), 30);
        // Default tile, and a small odd tile so lists are merged across many block seams.
        for tile in [768, 97] {
            let nb = knn_tiled(CPU, feats, 30, tile).unwrap();
            for i in 0..layout.n {
                let got: Vec<usize> = nb.row(i).iter().map(|&j| j as usize).collect();
                assert_eq!(got, reference[i], "{name}: row {i} differs (tile {tile})");
            }
        }
    }
}

#[test]
fn knn_has_ties_and_breaks_them_by_index() {
    // Guard that the tie test above really sees ties: duplicates of a point must follow it.
    let layout = layouts()[2].1;
    let (x, _) = make(layout);
    let nb = knn(CPU, Features::new(&x, layout.n, layout.dim).unwrap(), 10).unwrap();
    let mut ties = 0;
    for i in 0..layout.n {
        let d = nb.row_distances(i);
        for p in 1..10 {
            if d[p] == d[p - 1] {
                ties += 1;
                assert!(
                    nb.row(i)[p] > nb.row(i)[p - 1],
                    "row {i}: tie not broken by index"
                );
            }
        }
    }
    assert!(ties > 50, "expected many exact ties, saw {ties}");
}

#[test]
fn knn_on_unquantised_features_has_reference_distances() {
    let layout = Layout {
        n: 1500,
        dim: 64,
        clusters: 30,
        spread: 0.3,
        outliers: 0.1,
        duplicates: 0.0,
        quantize: false,
        seed: 9,
    };
    let (x, _) = make(layout);
    let dist = ref_distances(&x, layout.n, layout.dim);
    let reference = ref_knn(&dist, 20);
    let nb = knn_tiled(
        CPU,
        Features::new(&x, layout.n, layout.dim).unwrap(),
        20,
        256,
    )
    .unwrap();
    for i in 0..layout.n {
        for p in 0..20 {
            let got = dist[i][nb.row(i)[p] as usize];
            let want = dist[i][reference[i][p]];
            assert!(
                (got - want).abs() < 1e-5,
                "row {i} rank {p}: distance {got} vs {want}"
            );
        }
    }
}

#[test]
fn knn_rejects_bad_input() {
    let x = vec![0.0f32; 12];
    assert!(Features::new(&x, 5, 3).is_err());
    let feats = Features::new(&x, 4, 3).unwrap();
    assert!(knn(CPU, feats, 5).is_err());
    assert!(knn(CPU, feats, 0).is_err());
    let mut bad = x.clone();
    bad[7] = f32::NAN;
    assert!(matches!(
        Features::new(&bad, 4, 3),
        Err(unreid::cluster::ClusterError::NonFinite { row: 2 })
    ));
}

// ---------------------------------------------------------------- Jaccard

#[test]
fn half_list_length_rounds_like_numpy() {
    assert_eq!(half_list_len(30), 16);
    assert_eq!(half_list_len(20), 11);
    assert_eq!(half_list_len(5), 3); // around(2.5) = 2
    assert_eq!(half_list_len(7), 5); // around(3.5) = 4
    assert_eq!(half_list_len(1), 1); // capped at k1
}

#[test]
fn jaccard_matches_dense_reference() {
    for (name, layout) in layouts() {
        let (x, _) = make(layout);
        let (n, dim) = (layout.n, layout.dim);
        let feats = Features::new(&x, n, dim).unwrap();
        for params in [
            JaccardParams { k1: 30, k2: 6 },
            JaccardParams { k1: 13, k2: 1 },
        ] {
            let dense = ref_jaccard(&x, n, dim, params.k1, params.k2);
            let nb = knn(CPU, feats, params.k1).unwrap();
            let graph = jaccard_graph(feats, &nb, params, 1.0).unwrap();
            let mut shared = 0;
            for i in 0..n {
                for j in 0..n {
                    if i == j {
                        continue;
                    }
                    match graph_value(&graph, i, j) {
                        Some(v) => {
                            shared += 1;
                            assert!(
                                (v - dense[i][j]).abs() <= 1e-5,
                                "{name} {params:?}: J({i},{j}) {v} vs {}",
                                dense[i][j]
                            );
                        }
                        // Absent means no shared support: exactly 1 in the reference too.
                        None => assert_eq!(
                            dense[i][j], 1.0,
                            "{name} {params:?}: pair ({i},{j}) missing"
                        ),
                    }
                }
            }
            assert!(
                shared > n,
                "{name}: too few pairs with shared support ({shared})"
            );
            // A smaller eps_max keeps exactly the pairs under it.
            let small = jaccard_graph(feats, &nb, params, 0.5).unwrap();
            for i in 0..n {
                let (nbrs, d) = small.row(i);
                assert!(d.iter().all(|&v| v <= 0.5));
                let want = (0..n)
                    .filter(|&j| j != i && graph_value(&graph, i, j).is_some_and(|v| v <= 0.5))
                    .count();
                assert_eq!(nbrs.len(), want, "{name}: row {i} of the eps 0.5 graph");
            }
        }
    }
}

#[test]
fn jaccard_rejects_bad_parameters() {
    let (x, _) = make(layouts()[0].1);
    let feats = Features::new(&x, 600, 32).unwrap();
    let nb = knn(CPU, feats, 10).unwrap();
    assert!(jaccard_graph(feats, &nb, JaccardParams { k1: 20, k2: 6 }, 0.6).is_err());
    assert!(jaccard_graph(feats, &nb, JaccardParams { k1: 10, k2: 11 }, 0.6).is_err());
    assert!(jaccard_graph(feats, &nb, JaccardParams { k1: 10, k2: 6 }, 1.5).is_err());
}

// ---------------------------------------------------------------- DBSCAN

#[test]
fn dbscan_on_jaccard_graph_equals_sklearn_reference() {
    for (name, layout) in layouts() {
        let (x, _) = make(layout);
        let (n, dim) = (layout.n, layout.dim);
        let feats = Features::new(&x, n, dim).unwrap();
        let params = JaccardParams { k1: 20, k2: 6 };
        let dense = ref_jaccard(&x, n, dim, params.k1, params.k2);
        let nb = knn(CPU, feats, params.k1).unwrap();
        let graph = jaccard_graph(feats, &nb, params, 0.8).unwrap();
        let eps: Vec<f32> = [0.5f32, 0.58, 0.6, 0.62, 0.75]
            .iter()
            .map(|&e| safe_eps(&dense, e, 2e-5))
            .collect();
        for min_samples in [2, 4, 7] {
            let many = dbscan_many(&graph, &eps, min_samples).unwrap();
            for (&e, got) in eps.iter().zip(&many) {
                let want = ref_dbscan(&dense, e, min_samples);
                assert!(
                    same_partition(&got.labels, &want),
                    "{name}: partition differs at eps {e}, min_samples {min_samples}"
                );
                assert_eq!(
                    got.labels, want,
                    "{name}: sklearn numbering differs at eps {e}"
                );
                assert_eq!(got.num_outliers, want.iter().filter(|&&l| l < 0).count());
                assert_eq!(
                    got.num_clusters as i64,
                    want.iter().max().map_or(0, |m| m + 1)
                );
            }
        }
    }
}

#[test]
fn dbscan_finds_clusters_and_handles_eps_at_or_above_one() {
    let layout = layouts()[0].1;
    let (x, _) = make(layout);
    let feats = Features::new(&x, layout.n, layout.dim).unwrap();
    let nb = knn(CPU, feats, 20).unwrap();
    let graph = jaccard_graph(feats, &nb, JaccardParams { k1: 20, k2: 6 }, 0.6).unwrap();
    let r = dbscan(&graph, 0.6, 4).unwrap();
    assert!(
        r.num_clusters >= 10 && r.num_clusters <= 40,
        "{} clusters",
        r.num_clusters
    );
    assert!(
        dbscan(&graph, 0.7, 4).is_err(),
        "eps above the graph's eps_max must be refused"
    );
    let all = dbscan(&graph, 1.0, 4).unwrap();
    assert_eq!((all.num_clusters, all.num_outliers), (1, 0));
    assert!(all.labels.iter().all(|&l| l == 0));
}

#[test]
fn dbscan_on_plain_distances_equals_sklearn_reference() {
    for (name, layout) in layouts() {
        let (x, _) = make(layout);
        let (n, dim) = (layout.n, layout.dim);
        let feats = Features::new(&x, n, dim).unwrap();
        let sq = ref_distances(&x, n, dim);
        let row = |i: usize| &x[i * dim..(i + 1) * dim];
        let euclid: Vec<Vec<f32>> = sq
            .iter()
            .map(|r| r.iter().map(|&d| d.max(0.0).sqrt() as f32).collect())
            .collect();
        let cosine: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                (0..n)
                    .map(|j| {
                        (1.0 - dot64(row(i), row(j))
                            / (dot64(row(i), row(i)) * dot64(row(j), row(j))).sqrt())
                            as f32
                    })
                    .collect()
            })
            .collect();
        for (kind, dense) in [
            (PlainDistance::Euclidean, &euclid),
            (PlainDistance::Cosine, &cosine),
        ] {
            // An eps at which about half the points are core (median distance to the 4th neighbour).
            let mut fourth: Vec<f32> = dense
                .iter()
                .map(|r| {
                    let mut r = r.clone();
                    r.sort_by(|a, b| a.partial_cmp(b).unwrap());
                    r[3]
                })
                .collect();
            fourth.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let eps = safe_eps(dense, fourth[n / 2], 1e-4);
            let graph = radius_graph(CPU, feats, kind, eps).unwrap();
            let got = dbscan(&graph, eps, 4).unwrap();
            let want = ref_dbscan(dense, eps, 4);
            assert_eq!(got.labels, want, "{name} {kind:?} eps {eps}");
            assert!(
                got.num_clusters > 0,
                "{name} {kind:?}: degenerate test, no clusters"
            );
        }
    }
}

// ---------------------------------------------------------------- k-means

/// Plain Lloyd: assign to nearest (lowest index on ties), recompute means, stop when labels repeat.
fn ref_lloyd(
    x: &[f32],
    n: usize,
    dim: usize,
    mut centres: Vec<f32>,
    max_iter: usize,
) -> (Vec<i64>, Vec<f32>) {
    let k = centres.len() / dim;
    let assign = |c: &[f32]| -> Vec<i64> {
        (0..n)
            .map(|i| {
                let xi = &x[i * dim..(i + 1) * dim];
                let d: Vec<f64> = (0..k)
                    .map(|t| {
                        xi.iter()
                            .zip(&c[t * dim..(t + 1) * dim])
                            .map(|(&a, &b)| ((a - b) as f64).powi(2))
                            .sum()
                    })
                    .collect();
                (0..k)
                    .min_by(|&a, &b| d[a].partial_cmp(&d[b]).unwrap().then(a.cmp(&b)))
                    .unwrap() as i64
            })
            .collect()
    };
    let mut labels: Vec<i64> = Vec::new();
    for _ in 0..max_iter {
        let new = assign(&centres);
        if new == labels {
            break;
        }
        labels = new;
        for t in 0..k {
            let members: Vec<usize> = (0..n).filter(|&i| labels[i] == t as i64).collect();
            assert!(
                !members.is_empty(),
                "reference does not handle empty clusters"
            );
            for d in 0..dim {
                centres[t * dim + d] = (members.iter().map(|&i| x[i * dim + d] as f64).sum::<f64>()
                    / members.len() as f64) as f32;
            }
        }
    }
    (assign(&centres), centres)
}

#[test]
fn lloyd_matches_dense_reference() {
    let layout = Layout {
        n: 900,
        dim: 24,
        clusters: 12,
        spread: 0.5,
        outliers: 0.1,
        duplicates: 0.0,
        quantize: false,
        seed: 21,
    };
    let (x, _) = make(layout);
    let feats = Features::new(&x, layout.n, layout.dim).unwrap();
    let k = 15;
    let init = unreid::cluster::kmeans::kmeans_plus_plus(feats, k, 5).unwrap();
    let centres: Vec<f32> = init
        .iter()
        .flat_map(|&p| x[p * 24..(p + 1) * 24].to_vec())
        .collect();
    let got = unreid::cluster::kmeans::lloyd(CPU, feats, centres.clone(), 100, 0.0).unwrap();
    let (labels, want_centres) = ref_lloyd(&x, layout.n, 24, centres, 100);
    assert_eq!(got.labels, labels);
    for (a, b) in got.centers.iter().zip(&want_centres) {
        assert!((a - b).abs() < 1e-4, "centre value {a} vs {b}");
    }
    assert!(got.iterations > 1);
}

#[test]
fn kmeans_is_seeded_and_recovers_separated_blobs() {
    let layout = Layout {
        n: 800,
        dim: 32,
        clusters: 8,
        spread: 0.1,
        outliers: 0.0,
        duplicates: 0.0,
        quantize: false,
        seed: 33,
    };
    let (x, truth) = make(layout);
    let feats = Features::new(&x, layout.n, layout.dim).unwrap();
    let params = KmeansParams {
        k: 8,
        max_iter: 100,
        tol: 1e-4,
        seed: 7,
    };
    let a = kmeans(CPU, feats, params).unwrap();
    let b = kmeans(CPU, feats, params).unwrap();
    assert_eq!(a, b, "same seed, same result");
    assert!(
        same_partition(&a.labels, &truth),
        "k-means did not recover 8 well-separated blobs"
    );
    let init = unreid::cluster::kmeans::kmeans_plus_plus(feats, 8, 7).unwrap();
    let mut distinct = init.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 8);
    let other = unreid::cluster::kmeans::kmeans_plus_plus(feats, 8, 8).unwrap();
    assert_ne!(init, other, "different seeds should pick different centres");
    assert!(kmeans(CPU, feats, KmeansParams { k: 801, ..params }).is_err());
}

// ---------------------------------------------------------------- self-paced reliability

/// SpCL's training-script computation with dense N x N label masks.
fn ref_self_paced(normal: &[i64], tight: &[i64], loose: &[i64]) -> Vec<i64> {
    let pseudo = |l: &[i64]| -> Vec<i64> {
        let num = l.iter().filter(|&&v| v >= 0).max().map_or(0, |m| m + 1);
        let mut out = 0;
        l.iter()
            .map(|&v| {
                if v >= 0 {
                    v
                } else {
                    out += 1;
                    num + out - 1
                }
            })
            .collect()
    };
    let (p, pt, pl) = (pseudo(normal), pseudo(tight), pseudo(loose));
    let n = p.len();
    let score = |other: &[i64], i: usize| -> f32 {
        let (mut mn, mut mx) = (0f32, 0f32);
        for j in 0..n {
            let a = (p[i] == p[j]) as i32 as f32;
            let b = (other[i] == other[j]) as i32 as f32;
            mn += a.min(b);
            mx += a.max(b);
        }
        1.0 - mn / mx
    };
    let comp: Vec<f32> = (0..n).map(|i| score(&pt, i)).collect();
    let indep: Vec<f32> = (0..n).map(|i| score(&pl, i)).collect();
    let nl = (*p.iter().max().unwrap() + 1) as usize;
    let mut c_comp = vec![f32::MAX; nl];
    let mut c_indep = vec![f32::MAX; nl];
    let mut size = vec![0; nl];
    for i in 0..n {
        let c = p[i] as usize;
        c_comp[c] = c_comp[c].min(comp[i]);
        c_indep[c] = c_indep[c].min(indep[i]);
        size[c] += 1;
    }
    let mut noins: Vec<f32> = (0..nl)
        .filter(|&c| size[c] > 1)
        .map(|c| c_indep[c])
        .collect();
    noins.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let thres = noins[(numpy_around(noins.len() as f64 * 0.9) as usize).min(noins.len() - 1)];
    let mut out = 0;
    (0..n)
        .map(|i| {
            let c = p[i] as usize;
            if c_indep[c] <= thres && comp[i] <= c_comp[c] {
                c as i64
            } else {
                out += 1;
                (nl + out - 1) as i64
            }
        })
        .collect()
}

#[test]
fn self_paced_labels_match_dense_reference() {
    let layout = Layout {
        n: 500,
        dim: 32,
        clusters: 25,
        spread: 0.5,
        outliers: 0.1,
        duplicates: 0.02,
        quantize: false,
        seed: 44,
    };
    let (x, _) = make(layout);
    let feats = Features::new(&x, layout.n, layout.dim).unwrap();
    let nb = knn(CPU, feats, 20).unwrap();
    let graph = jaccard_graph(feats, &nb, JaccardParams { k1: 20, k2: 6 }, 0.7).unwrap();
    let runs = dbscan_many(&graph, &[0.55, 0.6, 0.65], 4).unwrap();
    let (tight, normal, loose) = (&runs[0].labels, &runs[1].labels, &runs[2].labels);
    assert_ne!(
        tight, loose,
        "degenerate test: eps change made no difference"
    );
    let got = self_paced_labels(normal, tight, loose, None).unwrap();
    assert_eq!(got.labels, ref_self_paced(normal, tight, loose));
    let rejected = got
        .labels
        .iter()
        .zip(normal)
        .filter(|(&a, &b)| b >= 0 && a != b)
        .count();
    assert!(rejected > 0, "degenerate test: nothing rejected");

    // Random labelings too (not nested like DBSCAN's).
    let mut rng = unreid::random::Rng::new(3);
    let mut random = |m: usize| -> Vec<i64> {
        let mut l: Vec<i64> = (0..300)
            .map(|_| rng.below(m + 3) as i64 - 3)
            .map(|v| v.max(-1))
            .collect();
        // Make ids contiguous like DBSCAN's.
        let mut ids: Vec<i64> = l.iter().copied().filter(|&v| v >= 0).collect();
        ids.sort();
        ids.dedup();
        l.iter_mut()
            .filter(|v| **v >= 0)
            .for_each(|v| *v = ids.binary_search(v).unwrap() as i64);
        l
    };
    let (a, b, c) = (random(40), random(60), random(25));
    assert_eq!(
        self_paced_labels(&a, &b, &c, None).unwrap().labels,
        ref_self_paced(&a, &b, &c)
    );
}

#[test]
fn gpu_tiles_give_the_same_neighbours_and_radius_graph() {
    // Quantised features make every dot product exact in f32, so the GPU matmul and the CPU GEMM
    // must agree bit for bit and the lists must be identical, ties included.
    let device = match unreid::Device::gpu() {
        Ok(d) => d,
        Err(e) => panic!("the GPU tests need an adapter (lavapipe in CI): {e}"),
    };
    let layout = Layout {
        n: 300,
        ..layouts()[2].1
    };
    let (x, _) = make(layout);
    let feats = Features::new(&x, layout.n, layout.dim).unwrap();
    let gpu = Backend::from_device(&device);
    assert!(matches!(gpu, Backend::Gpu(_)));
    let want = knn_tiled(CPU, feats, 12, 64).unwrap();
    let got = knn_tiled(gpu.clone(), feats, 12, 64).unwrap();
    assert_eq!(got.indices, want.indices);
    let a = radius_graph(CPU, feats, PlainDistance::Euclidean, 0.6).unwrap();
    let b = radius_graph(gpu, feats, PlainDistance::Euclidean, 0.6).unwrap();
    assert_eq!((a.offsets, a.neighbours), (b.offsets, b.neighbours));
}

#[test]
fn gpu_lloyd_matches_the_cpu_path() {
    // Separated blobs: no point is near a tie, so the two GEMMs' rounding cannot flip a label.
    let device =
        unreid::Device::gpu().unwrap_or_else(|e| panic!("the GPU tests need an adapter: {e}"));
    let layout = Layout {
        n: 700,
        dim: 20,
        clusters: 9,
        spread: 0.1,
        outliers: 0.0,
        duplicates: 0.0,
        quantize: false,
        seed: 41,
    };
    let (x, _) = make(layout);
    let feats = Features::new(&x, layout.n, layout.dim).unwrap();
    let params = KmeansParams {
        k: 9,
        max_iter: 50,
        tol: 0.0,
        seed: 3,
    };
    let want = kmeans(CPU, feats, params).unwrap();
    let got = kmeans(Backend::from_device(&device), feats, params).unwrap();
    assert_eq!(got.labels, want.labels);
    assert_eq!(got.iterations, want.iterations);
    for (a, b) in got.centers.iter().zip(&want.centers) {
        assert!((a - b).abs() < 1e-4, "centre value {a} vs {b}");
    }
    assert!((got.inertia - want.inertia).abs() < 1e-3 * want.inertia.max(1.0));
}
