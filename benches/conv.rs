//! conv2d forward and backward at ResNet-50 layer shapes (256x128 input, batch from
//! UNREID_BENCH_BATCH, default 8), GPU vs the CPU reference device, in GFLOP/s (2 x multiply-adds;
//! backward = dX + dW = twice the forward's work). Then ResNet-50 and MobileNetV2 forward
//! (eval) images/s. `cargo bench --bench conv`; UNREID_BENCH_CPU=0 skips the CPU device.

use std::time::Duration;

mod common;
use common::{devices, env_usize, timed};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use unreid::nn::{Ctx, ReidConfig, ReidNet};
use unreid::ops::conv2d::Conv2dSpec;
use unreid::Tensor;

fn conv_layers(c: &mut Criterion) {
    let n = env_usize("UNREID_BENCH_BATCH", 8);
    // (name, input [C, H, W], weight [Cout, Cin, K, K], stride, padding)
    let layers = [
        ("conv1 7x7/2 3->64", [3, 256, 128], [64, 3, 7, 7], 2, 3),
        ("layer1 3x3 64->64", [64, 64, 32], [64, 64, 3, 3], 1, 1),
        ("layer2 1x1 512->128", [512, 32, 16], [128, 512, 1, 1], 1, 0),
        ("layer3 3x3 256->256", [256, 16, 8], [256, 256, 3, 3], 1, 1),
        (
            "layer4 1x1 512->2048",
            [512, 16, 8],
            [2048, 512, 1, 1],
            1,
            0,
        ),
    ];
    let mut group = c.benchmark_group("conv2d");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (dev_name, dev) in devices() {
        for (name, x, w, s, p) in layers {
            let xs = [n, x[0], x[1], x[2]];
            let ho = (x[1] + 2 * p - w[2]) / s + 1;
            let wo = (x[2] + 2 * p - w[3]) / s + 1;
            let flops = 2 * n * w[0] * ho * wo * w[1] * w[2] * w[3];
            let xt = Tensor::randn(&xs, 0.0, 1.0, 1, &dev).unwrap();
            let wt = Tensor::randn(&w, 0.0, 0.1, 2, &dev).unwrap();
            let spec = Conv2dSpec::new(s, p);
            group.throughput(Throughput::Elements(flops as u64));
            group.bench_function(format!("forward {name} batch {n} [{dev_name}]"), |b| {
                b.iter_custom(|iters| {
                    let t = timed(iters, &mut || {
                        let y = xt.conv2d(&wt, None, spec).unwrap();
                        dev.sync().unwrap();
                        drop(y);
                    });
                    eprintln!(
                        "    {:.2} GFLOP/s",
                        flops as f64 * iters as f64 / t.as_secs_f64() / 1e9
                    );
                    t
                })
            });
            let (xl, wl) = (
                xt.clone().with_requires_grad(),
                wt.clone().with_requires_grad(),
            );
            let y = xl.conv2d(&wl, None, spec).unwrap();
            let g = Tensor::randn(y.shape(), 0.0, 1.0, 3, &dev).unwrap();
            group.throughput(Throughput::Elements(2 * flops as u64));
            group.bench_function(format!("backward {name} batch {n} [{dev_name}]"), |b| {
                b.iter_custom(|iters| {
                    let t = timed(iters, &mut || {
                        let y = xl.conv2d(&wl, None, spec).unwrap();
                        y.mul(&g).unwrap().sum_all().unwrap().backward().unwrap();
                        dev.sync().unwrap();
                        xl.zero_grad();
                        wl.zero_grad();
                    });
                    eprintln!(
                        "    {:.2} GFLOP/s (forward + backward counted as 3x forward)",
                        3.0 * flops as f64 * iters as f64 / t.as_secs_f64() / 1e9
                    );
                    t
                })
            });
        }
    }
    group.finish();
}

fn models(c: &mut Criterion) {
    let n = env_usize("UNREID_BENCH_MODEL_BATCH", 2);
    let mut group = c.benchmark_group("model forward");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(5));
    for (dev_name, dev) in devices() {
        for arch in ["resnet50", "mobilenet_v2"] {
            let net = ReidNet::new(&dev, &ReidConfig::arch(arch)).unwrap();
            let x = Tensor::randn(&[n, 3, 256, 128], 0.0, 1.0, 4, &dev).unwrap();
            group.throughput(Throughput::Elements(n as u64));
            group.bench_function(format!("{arch} 256x128 batch {n} [{dev_name}]"), |b| {
                b.iter_custom(|iters| {
                    let t = timed(iters, &mut || {
                        let y = unreid::no_grad(|| net.forward(&x, &Ctx::eval())).unwrap();
                        y.bn.to_vec().unwrap();
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

criterion_group!(benches, conv_layers, models);
criterion_main!(benches);
