//! Clustering and evaluation kernels on the CPU path at realistic shapes (2048-d features):
//! blocked kNN (GFLOP/s of the symmetric GEMM), sparse Jaccard, DBSCAN, streamed evaluation.
//! Full Market-size timings come from `unreid cluster` / `unreid evaluate` on files made by
//! `examples/make_features.rs` (see the cluster module docs).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::hint::black_box;
use unreid::cluster::{dbscan, jaccard_graph, knn, Backend, Features, JaccardParams};
use unreid::eval::{evaluate, LabeledFeatures};
use unreid::random::Rng;

/// n L2-normalised rows around `ids` random identity centres, plus pids/camids.
fn features(n: usize, dim: usize, ids: usize, seed: u64) -> (Vec<f32>, Vec<i64>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let centres: Vec<f32> = (0..ids * dim).map(|_| rng.normal() as f32).collect();
    let (mut x, mut pids, mut cams) = (Vec::with_capacity(n * dim), Vec::new(), Vec::new());
    for _ in 0..n {
        let id = rng.below(ids);
        let row: Vec<f32> = (0..dim)
            .map(|d| centres[id * dim + d] + 2.5 * rng.normal() as f32)
            .collect();
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        x.extend(row.iter().map(|v| v / norm));
        pids.push(id as i64);
        cams.push(rng.below(6) as i64);
    }
    (x, pids, cams)
}

fn bench(c: &mut Criterion) {
    let (n, dim) = (4096, 2048);
    let (x, pids, cams) = features(n, dim, 240, 1);
    let feats = Features::new(&x, n, dim).unwrap();
    let mut group = c.benchmark_group("cluster");
    group.sample_size(10);

    // Only the upper triangle is computed: N^2 D multiply-adds in all.
    group.throughput(Throughput::Elements((n * n * dim) as u64));
    group.bench_function("knn_k30_4096x2048", |b| {
        b.iter(|| black_box(knn(Backend::Cpu, feats, 30).unwrap()))
    });

    let nb = knn(Backend::Cpu, feats, 30).unwrap();
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("jaccard_k30_k6_4096", |b| {
        b.iter(|| black_box(jaccard_graph(feats, &nb, JaccardParams::default(), 0.62).unwrap()))
    });
    let graph = jaccard_graph(feats, &nb, JaccardParams::default(), 0.62).unwrap();
    group.bench_function("dbscan_eps0.6_4096", |b| {
        b.iter(|| black_box(dbscan(&graph, 0.6, 4).unwrap()))
    });

    let (nq, ng) = (1024, n - 1024);
    let q = LabeledFeatures::new(
        Features::new(&x[..nq * dim], nq, dim).unwrap(),
        &pids[..nq],
        &cams[..nq],
    )
    .unwrap();
    let g = LabeledFeatures::new(
        Features::new(&x[nq * dim..], ng, dim).unwrap(),
        &pids[nq..],
        &cams[nq..],
    )
    .unwrap();
    group.throughput(Throughput::Elements(nq as u64));
    group.bench_function("evaluate_1024x3072x2048", |b| {
        b.iter(|| black_box(evaluate(Backend::Cpu, q, g, 50).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
