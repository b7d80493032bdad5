//! Matmul and a large elementwise op on the GPU (the adapter the binary picks) and on the CPU
//! reference, in GFLOP/s (matmul) and GB/s (elementwise).
//!
//! What is timed: each iteration records `per_sync` calls of the op (4, or 1 for products of over
//! a GFLOP; outputs dropped as they come, so the pool recycles them) and then waits for the
//! device, so submission and the wait are amortised and nothing is read back; inputs are uploaded
//! once outside the timing. The figure is the time per call.
//! `UNREID_MATMUL=sg|reg|tiled` picks the GPU kernel (default: by adapter type).
//!
//! Short run: `cargo bench --bench matmul -- --warm-up-time 1 --measurement-time 3`
//! (filter with a name, e.g. `-- matmul/1024`).

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use unreid::{Device, Tensor};

fn gpu() -> Option<Device> {
    match Device::gpu() {
        Ok(d) => {
            let g = d.as_gpu().unwrap();
            eprintln!(
                "GPU adapter: {} (subgroups: {:?})",
                g.summary(),
                g.subgroup_min_size()
            );
            Some(d)
        }
        Err(e) => {
            eprintln!("no GPU adapter, GPU benches skipped: {e}");
            None
        }
    }
}

/// Times `op` on `device`, `per_sync` calls per device wait.
fn time_op(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: BenchmarkId,
    device: &Device,
    per_sync: u32,
    op: impl Fn() -> Tensor,
) {
    group.bench_function(id, |bench| {
        bench.iter_custom(|iters| {
            let start = std::time::Instant::now();
            for _ in 0..iters {
                for _ in 0..per_sync {
                    drop(op());
                }
                device.sync().unwrap();
            }
            start.elapsed() / per_sync
        })
    });
}

fn matmul(c: &mut Criterion) {
    let gpu = gpu();
    let mut devices = vec![("cpu", Device::cpu())];
    if let Some(g) = gpu {
        devices.insert(0, ("gpu", g));
    }
    // (m, k, n): square sizes and the re-ID classifier head (batch 64, 2048-d features, 751 ids).
    let shapes = [
        (256, 256, 256),
        (512, 512, 512),
        (1024, 1024, 1024),
        (2048, 2048, 2048),
        (64, 2048, 751),
    ];
    let mut group = c.benchmark_group("matmul");
    for (m, k, n) in shapes {
        let flops = 2 * m * k * n;
        group.throughput(Throughput::Elements(flops as u64));
        let big = flops >= 1 << 30;
        group.sample_size(if big { 10 } else { 20 });
        group.sampling_mode(if big {
            SamplingMode::Flat
        } else {
            SamplingMode::Auto
        });
        for (name, device) in &devices {
            let a = Tensor::randn(&[m, k], 0.0, 1.0, 1, device).unwrap();
            let b = Tensor::randn(&[k, n], 0.0, 1.0, 2, device).unwrap();
            device.sync().unwrap();
            time_op(
                &mut group,
                BenchmarkId::new(*name, format!("{m}x{k}x{n}")),
                device,
                if big { 1 } else { 4 },
                || a.matmul(&b).unwrap(),
            );
        }
    }
    group.finish();
    eprintln!("matmul: criterion's 'elem/s' above is FLOP/s (2*m*k*n per product)");
}

fn elementwise(c: &mut Criterion) {
    let mut devices = vec![("cpu", Device::cpu())];
    if let Ok(g) = Device::gpu() {
        devices.insert(0, ("gpu", g));
    }
    let n = 16 << 20;
    let mut group = c.benchmark_group("add");
    // Two reads and one write of 4 bytes per element.
    group.throughput(Throughput::Bytes(12 * n as u64));
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    for (name, device) in &devices {
        let a = Tensor::randn(&[n], 0.0, 1.0, 3, device).unwrap();
        let b = Tensor::randn(&[n], 0.0, 1.0, 4, device).unwrap();
        device.sync().unwrap();
        time_op(
            &mut group,
            BenchmarkId::new(*name, "16M"),
            device,
            4,
            || a.add(&b).unwrap(),
        );
    }
    group.finish();
}

criterion_group!(benches, matmul, elementwise);
criterion_main!(benches);
