//! The training step (`unreid::bench::TrainStep`: ReidNet forward, label-smoothed CE + softmax
//! triplet, backward, Adam, exactly what `unreid bench` times) in images/s, and training-mode
//! batch norm (forward + backward) at ResNet / MobileNetV2 activation shapes in GB/s, on the GPU
//! adapter and the CPU device. `cargo bench --bench train_step`. Sizes from the environment:
//! UNREID_BENCH_STEP_BATCH (default 8; the table uses 32) at 128x64 for ResNet-18 and
//! MobileNetV2; UNREID_BENCH_CPU=0 skips the CPU device, UNREID_BENCH_GPU=0 the adapter.

use std::time::Duration;

mod common;
use common::{devices, env_usize, timed};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use unreid::bench::{Mode, ModelCase, TrainStep};
use unreid::ops::batchnorm::Activation;
use unreid::Tensor;

fn train_step(c: &mut Criterion) {
    let n = env_usize("UNREID_BENCH_STEP_BATCH", 8);
    let mut group = c.benchmark_group("train step");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5));
    for (dev_name, dev) in devices() {
        for arch in ["resnet18", "mobilenet_v2"] {
            let case = ModelCase::new(arch, n, 128, 64, Mode::Train);
            let mut step = match TrainStep::new(&dev, &case) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("{} on {dev_name}: {e}", case.name());
                    continue;
                }
            };
            let mut k = 0;
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(format!("{} [{dev_name}]", case.name()), |b| {
                b.iter_custom(|iters| {
                    let t = timed(iters, &mut || {
                        step.run(k).unwrap();
                        k += 1;
                    });
                    eprintln!(
                        "    {:.2} images/s",
                        n as f64 * iters as f64 / t.as_secs_f64()
                    );
                    t
                })
            });
        }
    }
    group.finish();
}

fn batch_norm(c: &mut Criterion) {
    // (name, activation [N, C, H, W])
    let cases = [
        ("resnet18 layer1 b32 128x64", [32, 64, 32, 16]),
        ("resnet50 layer1 b16 256x128", [16, 256, 64, 32]),
        ("mobilenet_v2 expand b32 128x64", [32, 96, 64, 32]),
        ("resnet50 layer4 b16 256x128", [16, 2048, 16, 8]),
    ];
    let mut group = c.benchmark_group("batch_norm train");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(3));
    for (dev_name, dev) in devices() {
        for (name, shape) in cases {
            let ch = shape[1];
            let x = Tensor::randn(&shape, 0.0, 1.0, 1, &dev)
                .unwrap()
                .with_requires_grad();
            let gamma = Tensor::full(&[ch], 1.0, &dev).unwrap().with_requires_grad();
            let beta = Tensor::zeros(&[ch], &dev).unwrap().with_requires_grad();
            let g = Tensor::randn(&shape, 0.0, 1.0, 2, &dev).unwrap();
            // Forward reads x and writes y; backward reads x, dy and writes dx (two passes
            // each for the statistics): counted as 6 tensor sweeps of 4 bytes per element.
            let bytes = 6 * 4 * shape.iter().product::<usize>();
            group.throughput(Throughput::Bytes(bytes as u64));
            group.bench_function(format!("{name} [{dev_name}]"), |b| {
                b.iter_custom(|iters| {
                    timed(iters, &mut || {
                        let (y, _, _) = x
                            .batch_norm_train(&gamma, &beta, 1e-5, Activation::None)
                            .unwrap();
                        y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
                        dev.sync().unwrap();
                        x.zero_grad();
                        gamma.zero_grad();
                        beta.zero_grad();
                    })
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, train_step, batch_norm);
criterion_main!(benches);
