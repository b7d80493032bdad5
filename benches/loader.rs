//! Loader throughput: decode JPEGs from disk + the full training augmentation into a 64 x 3 x 256 x 128 batch.
//!
//! Two inputs: Market-sized 128x64 JPEGs (the common case: bicubic upscale to 256x128) and JPEGs already at
//! 256x128 (no resize). The images are rendered by the synthetic benchmark so the JPEGs have realistic content.
//! Run: `cargo bench --bench loader`; criterion prints images/s ("elem/s").

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::PathBuf;
use unreid::data::loader::{load_batch, LoaderConfig, LoaderStats};
use unreid::data::synth::{encode_jpeg, plan_domain, render_image, Domain, SynthConfig};
use unreid::data::transforms::AugmentConfig;
use unreid::data::ReidItem;

const BATCH: usize = 64;

fn write_jpegs(dir: &std::path::Path, height: usize, width: usize, count: usize) -> Vec<ReidItem> {
    std::fs::create_dir_all(dir).expect("bench temp dir");
    let cfg = SynthConfig {
        height,
        width,
        ..SynthConfig::default()
    };
    plan_domain(&cfg, Domain::Source)
        .iter()
        .filter(|p| p.pid > 0)
        .take(count)
        .map(|p| {
            let path: PathBuf = dir.join(p.file_name());
            let bytes = encode_jpeg(&render_image(&cfg, p), 90).expect("encode");
            std::fs::write(&path, bytes).expect("write bench JPEG");
            ReidItem {
                path,
                pid: p.pid,
                raw_pid: p.pid,
                camid: p.camid,
                domain: 0,
            }
        })
        .collect()
}

fn bench_loader(c: &mut Criterion) {
    let root = std::env::temp_dir().join(format!("unreid-bench-loader-{}", std::process::id()));
    let cfg = LoaderConfig::new(AugmentConfig::train(256, 128), 0);
    let mut group = c.benchmark_group("loader");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(BATCH as u64));
    for (h, w) in [(128, 64), (256, 128)] {
        let items = write_jpegs(&root.join(format!("{h}x{w}")), h, w, 4 * BATCH);
        let stats = LoaderStats::default();
        let mut step = 0usize;
        group.bench_function(
            format!("decode+augment batch 64 to 256x128 from {h}x{w} JPEG"),
            |b| {
                b.iter(|| {
                    let start = (step % 4) * BATCH;
                    let indices: Vec<usize> = (start..start + BATCH).collect();
                    step += 1;
                    load_batch(&items, &indices, 0, step, &cfg, &stats)
                })
            },
        );
        assert_eq!(stats.skipped(), 0);
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&root);
}

criterion_group!(benches, bench_loader);
criterion_main!(benches);
