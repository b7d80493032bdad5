//! `unreid bench`: training-step and kernel throughput on any device, as one JSON table.
//!
//! A training step is exactly what the training loop repeats: `nn::ReidNet` forward (train mode,
//! batch statistics), label-smoothed cross-entropy (eps 0.1) on the classifier logits +
//! batch-hard softmax-triplet (`loss::softmax_triplet`) on the pooled features' Euclidean
//! distances, `backward()`, then `optim::Adam` (lr 3.5e-4, weight decay 5e-4) over
//! `Module::trainable()`. It mirrors `shared/bench/torch_train_step.py`, the PyTorch yardstick:
//! 751 classes, PK labels with 4 images per identity, the median of `steps` timed steps after
//! `warmup` untimed ones. Inference cases time `ReidNet::extract` (eval mode, no autograd).
//!
//! On a GPU device each model case first checks that its activations fit the adapter's
//! storage-binding limit (`nn::ReidNet::check_binding_limit`): a case that cannot run there
//! (MobileNetV2 b64 256x128 on lavapipe's 128 MiB) becomes a row whose error names the layer and
//! the largest batch that fits, without allocating anything large. `UNREID_MAX_BINDING_BYTES`
//! rehearses a smaller adapter's limit on a larger one.
//!
//! Kernel cases time one conv2d (forward + both gradients) or one matmul and report GFLOP/s
//! (2 x multiply-adds). Peak memory is the process's peak resident set (Linux `VmHWM`, reset
//! before each case where the kernel allows it), so on the CPU device and on CPU adapters
//! (lavapipe) it covers tensors; on a discrete GPU it covers only host memory.

use std::time::Instant;

use serde::Serialize;

use crate::gpu::{GpuStats, KernelTime, TimestampSupport};
use crate::loss::{batch_hard, cross_entropy, euclidean_distance, softmax_triplet};
use crate::nn::{Ctx, Module, ReidConfig, ReidNet};
use crate::ops::conv2d::Conv2dSpec;
use crate::optim::{Adam, Optimizer};
use crate::{Device, Result, Tensor};

/// What a case times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Forward + losses + backward + Adam.
    Train,
    /// Evaluation-mode feature extraction.
    Infer,
}

/// One model case: architecture, batch and image size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelCase {
    /// `resnet18`, `resnet34`, `resnet50` or `mobilenet_v2`.
    pub arch: String,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    /// Stride of ResNet's layer4 (the yardstick uses 1 for ResNet-50, 2 otherwise).
    pub last_stride: usize,
    pub mode: Mode,
}

impl ModelCase {
    /// A case with the yardstick's last stride (1 for ResNet-50, 2 otherwise).
    pub fn new(arch: &str, batch: usize, height: usize, width: usize, mode: Mode) -> ModelCase {
        ModelCase {
            arch: arch.into(),
            batch,
            height,
            width,
            last_stride: if arch == "resnet50" { 1 } else { 2 },
            mode,
        }
    }

    /// `resnet18 train b32 3x128x64` (the name in the table).
    pub fn name(&self) -> String {
        let mode = match self.mode {
            Mode::Train => "train",
            Mode::Infer => "infer",
        };
        let ls = if self.arch.starts_with("resnet") {
            format!(" last_stride {}", self.last_stride)
        } else {
            String::new()
        };
        format!(
            "{} {mode} b{} 3x{}x{}{ls}",
            self.arch, self.batch, self.height, self.width
        )
    }
}

/// The cases of issue 14's table: ResNet-18 b32 128x64, ResNet-50 (last stride 1) b16 256x128
/// train and inference, MobileNetV2 b32 128x64 and b64 256x128, ResNet-50 b64 256x128 (the
/// published training batch).
pub fn default_cases() -> Vec<ModelCase> {
    vec![
        ModelCase::new("resnet18", 32, 128, 64, Mode::Train),
        ModelCase::new("resnet50", 16, 256, 128, Mode::Train),
        ModelCase::new("resnet50", 16, 256, 128, Mode::Infer),
        ModelCase::new("mobilenet_v2", 32, 128, 64, Mode::Train),
        ModelCase::new("mobilenet_v2", 64, 256, 128, Mode::Train),
        ModelCase::new("resnet50", 64, 256, 128, Mode::Train),
    ]
}

/// How many steps to run.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Untimed steps first (pipeline compilation, allocator warm-up).
    pub warmup: usize,
    /// Timed steps; the table reports their median.
    pub steps: usize,
    /// Also time single conv2d and matmul kernels (GFLOP/s).
    pub kernels: bool,
    /// The matmul kernel cases, each `(m, k, n)`: `[m, k] x [k, n]`.
    pub matmuls: Vec<(usize, usize, usize)>,
}

/// The matmul kernel cases when none are asked for: small enough for lavapipe.
pub const DEFAULT_MATMULS: [(usize, usize, usize); 2] = [(1024, 1024, 1024), (2048, 2048, 512)];

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            warmup: 1,
            steps: 3,
            kernels: true,
            matmuls: DEFAULT_MATMULS.to_vec(),
        }
    }
}

/// One row of the table. Times are medians in milliseconds; a case that failed has `error` set
/// and no figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BenchRow {
    pub adapter: String,
    pub case: String,
    /// `train`, `infer`, `conv2d` or `matmul`.
    pub kind: String,
    pub images_per_s: Option<f64>,
    pub step_ms: Option<f64>,
    pub forward_ms: Option<f64>,
    pub backward_ms: Option<f64>,
    pub optimiser_ms: Option<f64>,
    /// Kernel cases: 2 x multiply-adds / second, in 1e9 (conv2d: forward, and backward = both
    /// gradients).
    pub forward_gflops: Option<f64>,
    pub backward_gflops: Option<f64>,
    /// Peak resident set of the process during the case (MiB), when the OS reports it.
    pub peak_memory_mb: Option<f64>,
    pub error: Option<String>,
}

/// The whole table.
#[derive(Clone, Debug, Serialize)]
pub struct BenchTable {
    pub device: String,
    pub warmup: usize,
    pub steps: usize,
    pub rows: Vec<BenchRow>,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Resets the kernel's peak-RSS counter (Linux; elsewhere a no-op, the peak then spans the run).
fn reset_peak_memory() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Peak resident set in MiB (Linux `VmHWM`), None where unavailable.
fn peak_memory_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The yardstick's PK labels: 4 images per identity, 751 classes, changing every step.
fn pk_labels(batch: usize, step: usize, classes: usize) -> Vec<i32> {
    let ids = batch / 4;
    (0..batch)
        .map(|i| (((step * ids + i / 4) * 7) % classes) as i32)
        .collect()
}

const CLASSES: usize = 751;

/// One model case ready to step: the model, a fixed random input batch and the optimiser.
/// `unreid bench` and the criterion bench `benches/train_step.rs` time the same step.
pub struct TrainStep {
    pub case: ModelCase,
    device: Device,
    net: ReidNet,
    x: Tensor,
    adam: Adam,
}

/// Milliseconds of one step's phases (inference: all in `forward`).
#[derive(Clone, Copy, Debug, Default)]
pub struct PhaseMs {
    pub forward: f64,
    pub backward: f64,
    pub optimiser: f64,
}

impl TrainStep {
    /// Builds the case's model and input on `device`. On a GPU device it first checks that every
    /// activation fits the adapter's storage-binding limit (`ReidNet::check_binding_limit`):
    /// a batch too large for the adapter is an error naming the layer and the largest batch that
    /// fits, before anything large is allocated. Errors: unknown architecture, that check,
    /// out of memory.
    pub fn new(device: &Device, case: &ModelCase) -> Result<TrainStep> {
        let cfg = ReidConfig {
            arch: case.arch.clone(),
            last_stride: case.last_stride,
            classes: Some(CLASSES),
            ..Default::default()
        };
        let net = ReidNet::new(device, &cfg)?;
        if let Device::Gpu(gpu) = device {
            net.check_binding_limit(case.batch, case.height, case.width, gpu.max_binding_bytes())?;
        }
        let x = Tensor::randn(
            &[case.batch, 3, case.height, case.width],
            0.0,
            1.0,
            7,
            device,
        )?;
        Ok(TrainStep {
            case: case.clone(),
            device: device.clone(),
            net,
            x,
            adam: Adam::new(3.5e-4, 5e-4),
        })
    }

    /// The yardstick's loss of step `step` (train-mode forward): label-smoothed cross-entropy +
    /// batch-hard softmax-triplet on the pooled features, with the step's PK labels.
    fn loss(&self, step: usize) -> Result<Tensor> {
        let labels = pk_labels(self.case.batch, step, CLASSES);
        let out = self.net.forward(&self.x, &Ctx::train().seed(step as u64))?;
        let logits = out
            .logits
            .as_ref()
            .expect("the bench model has a classifier");
        let ce = cross_entropy(logits, &labels, 0.1)?;
        let dist = euclidean_distance(&out.pooled, &out.pooled)?;
        ce.add(&softmax_triplet(&batch_hard(&dist, &labels)?)?)
    }

    /// One training step as training runs it: no syncs between the phases, the loss read back at
    /// the end (`bench --profile` counts and times this). Returns that loss (before the step's
    /// update).
    pub fn run_unsynced(&mut self, step: usize) -> Result<f32> {
        let loss = self.loss(step)?;
        loss.backward()?;
        self.adam.step(&self.net.trainable())?;
        loss.item()
    }

    /// Runs step number `step` (its PK labels depend on it) and returns its phase times; each
    /// phase ends with a device sync.
    pub fn run(&mut self, step: usize) -> Result<PhaseMs> {
        let device = &self.device;
        let t0 = Instant::now();
        let (t1, t2) = match self.case.mode {
            Mode::Infer => {
                let f = self.net.extract(&self.x, 0)?;
                device.sync()?;
                drop(f);
                let t = Instant::now();
                (t, t)
            }
            Mode::Train => {
                let loss = self.loss(step)?;
                device.sync()?;
                let t1 = Instant::now();
                loss.backward()?;
                drop(loss);
                device.sync()?;
                let t2 = Instant::now();
                self.adam.step(&self.net.trainable())?;
                device.sync()?;
                (t1, t2)
            }
        };
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        Ok(PhaseMs {
            forward: ms(t0, t1),
            backward: ms(t1, t2),
            optimiser: ms(t2, t3),
        })
    }
}

/// Times one model case on `device`; a failure (unknown architecture, a batch whose activations
/// exceed the adapter's binding limit, out of memory) comes back as an error.
pub fn run_model_case(device: &Device, case: &ModelCase, opts: &BenchOptions) -> Result<BenchRow> {
    reset_peak_memory();
    let mut stepper = TrainStep::new(device, case)?;
    let (mut total, mut fw, mut bw, mut op) = (vec![], vec![], vec![], vec![]);
    for step in 0..opts.warmup + opts.steps {
        let t = stepper.run(step)?;
        if step >= opts.warmup {
            total.push(t.forward + t.backward + t.optimiser);
            fw.push(t.forward);
            bw.push(t.backward);
            op.push(t.optimiser);
        }
    }
    let step_ms = median(&mut total);
    let train = case.mode == Mode::Train;
    Ok(BenchRow {
        adapter: device.to_string(),
        case: case.name(),
        kind: if train { "train" } else { "infer" }.into(),
        images_per_s: Some(case.batch as f64 / (step_ms / 1e3)),
        step_ms: Some(step_ms),
        forward_ms: Some(median(&mut fw)),
        backward_ms: train.then(|| median(&mut bw)),
        optimiser_ms: train.then(|| median(&mut op)),
        peak_memory_mb: peak_memory_mb(),
        ..Default::default()
    })
}

/// One convolution layer of a kernel case.
#[derive(Clone, Copy, Debug)]
pub struct ConvCase {
    pub name: &'static str,
    /// Input [N, C, H, W].
    pub input: [usize; 4],
    /// Weight [Cout, C/groups, KH, KW].
    pub weight: [usize; 4],
    pub spec: Conv2dSpec,
}

/// ResNet-18 layers at batch 32 x 128 x 64, ResNet-50 layers at batch 16 x 256 x 128, and a
/// MobileNetV2 depthwise layer.
pub fn conv_cases() -> Vec<ConvCase> {
    let s = Conv2dSpec::new;
    vec![
        ConvCase {
            name: "resnet18 layer1 3x3 64->64 b32 32x16",
            input: [32, 64, 32, 16],
            weight: [64, 64, 3, 3],
            spec: s(1, 1),
        },
        ConvCase {
            name: "resnet18 layer3 3x3 256->256 b32 8x4",
            input: [32, 256, 8, 4],
            weight: [256, 256, 3, 3],
            spec: s(1, 1),
        },
        ConvCase {
            name: "resnet18 layer4 3x3 512->512 b32 4x2",
            input: [32, 512, 4, 2],
            weight: [512, 512, 3, 3],
            spec: s(1, 1),
        },
        ConvCase {
            name: "resnet50 conv1 7x7/2 3->64 b16",
            input: [16, 3, 256, 128],
            weight: [64, 3, 7, 7],
            spec: s(2, 3),
        },
        ConvCase {
            name: "resnet50 layer1 3x3 64->64 b16",
            input: [16, 64, 64, 32],
            weight: [64, 64, 3, 3],
            spec: s(1, 1),
        },
        ConvCase {
            name: "resnet50 layer3 1x1 1024->256 b16",
            input: [16, 1024, 16, 8],
            weight: [256, 1024, 1, 1],
            spec: s(1, 0),
        },
        ConvCase {
            name: "resnet50 layer4 3x3 512->512 b16",
            input: [16, 512, 16, 8],
            weight: [512, 512, 3, 3],
            spec: s(1, 1),
        },
        ConvCase {
            name: "mobilenet_v2 depthwise 3x3 144 b32",
            input: [32, 144, 32, 16],
            weight: [144, 1, 3, 3],
            spec: s(1, 1).groups(144),
        },
    ]
}

fn time_ms(reps: usize, f: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
    f()?; // warm-up (pipelines, allocator)
    let mut v = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok(median(&mut v))
}

/// Times one conv2d: forward, then forward + both gradients (backward = total - forward).
pub fn run_conv_case(device: &Device, case: &ConvCase, reps: usize) -> Result<BenchRow> {
    reset_peak_memory();
    let x = Tensor::randn(&case.input, 0.0, 1.0, 1, device)?.with_requires_grad();
    let w = Tensor::randn(&case.weight, 0.0, 0.1, 2, device)?.with_requires_grad();
    let y0 = crate::no_grad(|| x.conv2d(&w, None, case.spec))?;
    let [n, _, _, _] = case.input;
    let [cout, cin_g, kh, kw] = case.weight;
    let flops = 2.0 * (n * cout * y0.shape()[2] * y0.shape()[3] * cin_g * kh * kw) as f64;
    let g = Tensor::randn(y0.shape(), 0.0, 1.0, 3, device)?;
    drop(y0);
    let fwd = time_ms(reps, &mut || {
        let y = crate::no_grad(|| x.conv2d(&w, None, case.spec))?;
        device.sync()?;
        drop(y);
        Ok(())
    })?;
    let both = time_ms(reps, &mut || {
        x.zero_grad();
        w.zero_grad();
        let loss = x.conv2d(&w, None, case.spec)?.mul(&g)?.sum_all()?;
        loss.backward()?;
        device.sync()?;
        Ok(())
    })?;
    // The timed backward pass also holds the elementwise product and the sum (small next to
    // the two gradient convolutions).
    let bwd = (both - fwd).max(1e-6);
    Ok(BenchRow {
        adapter: device.to_string(),
        case: case.name.into(),
        kind: "conv2d".into(),
        step_ms: Some(both),
        forward_ms: Some(fwd),
        backward_ms: Some(bwd),
        forward_gflops: Some(flops / (fwd * 1e6)),
        backward_gflops: Some(2.0 * flops / (bwd * 1e6)),
        peak_memory_mb: peak_memory_mb(),
        ..Default::default()
    })
}

/// Times one [m, k] x [k, n] product (forward only): the median of `reps` synced products after
/// one warm-up.
pub fn run_matmul_case(
    device: &Device,
    (m, k, n): (usize, usize, usize),
    reps: usize,
) -> Result<BenchRow> {
    reset_peak_memory();
    let a = Tensor::randn(&[m, k], 0.0, 1.0, 1, device)?;
    let b = Tensor::randn(&[k, n], 0.0, 1.0, 2, device)?;
    let ms = time_ms(reps, &mut || {
        let c = a.matmul(&b)?;
        device.sync()?;
        drop(c);
        Ok(())
    })?;
    Ok(BenchRow {
        adapter: device.to_string(),
        case: format!("matmul {m}x{k} * {k}x{n}"),
        kind: "matmul".into(),
        step_ms: Some(ms),
        forward_ms: Some(ms),
        forward_gflops: Some(2.0 * (m * k * n) as f64 / (ms * 1e6)),
        peak_memory_mb: peak_memory_mb(),
        ..Default::default()
    })
}

/// Runs `cases` (then the kernel cases when `opts.kernels`) on `device`, printing one progress
/// line per case to stderr. A failed case becomes a row with its error; the others still run.
pub fn run(device: &Device, cases: &[ModelCase], opts: &BenchOptions) -> BenchTable {
    let mut rows = Vec::new();
    let failed = |case: String, kind: &str, e: crate::Error| BenchRow {
        adapter: device.to_string(),
        case,
        kind: kind.into(),
        error: Some(e.to_string()),
        ..Default::default()
    };
    let report = |row: &BenchRow| match (&row.error, row.images_per_s, row.forward_gflops) {
        (Some(e), _, _) => eprintln!("bench: {} failed: {e}", row.case),
        (None, Some(ips), _) => eprintln!(
            "bench: {}: {ips:.2} images/s ({:.1} ms per step)",
            row.case,
            row.step_ms.unwrap_or(f64::NAN)
        ),
        (None, None, Some(gf)) => eprintln!("bench: {}: {gf:.1} GFLOP/s forward", row.case),
        _ => {}
    };
    for case in cases {
        eprintln!("bench: running {} on {device}", case.name());
        let row =
            run_model_case(device, case, opts).unwrap_or_else(|e| failed(case.name(), "model", e));
        report(&row);
        rows.push(row);
    }
    if opts.kernels {
        for case in conv_cases() {
            let row = run_conv_case(device, &case, opts.steps.max(1))
                .unwrap_or_else(|e| failed(case.name.into(), "conv2d", e));
            report(&row);
            rows.push(row);
        }
        for &dims in &opts.matmuls {
            let row = run_matmul_case(device, dims, opts.steps.max(3))
                .unwrap_or_else(|e| failed(format!("matmul {dims:?}"), "matmul", e));
            report(&row);
            rows.push(row);
        }
    }
    BenchTable {
        device: device.to_string(),
        warmup: opts.warmup,
        steps: opts.steps,
        rows,
    }
}

// ---------------------------------------------------------------------------------------------
// `unreid bench --profile` (issue 16): what a step costs the host and the device.

/// The host cost of recording: `dispatches` back-to-back dispatches of one tiny kernel, then one
/// sync.
#[derive(Clone, Debug, Serialize)]
pub struct DispatchCost {
    /// What was dispatched.
    pub path: String,
    pub dispatches: u64,
    /// Host time of the recording loop (before the sync), µs per dispatch.
    pub record_us_per_dispatch: f64,
    /// Host time including the final sync (so the device's work on the tail too), µs per dispatch.
    pub total_us_per_dispatch: f64,
    /// CPU time of the recording thread in the loop (Linux schedstat), µs per dispatch: unlike
    /// the wall time it leaves out other processes and the driver's threads (on lavapipe the
    /// device itself runs on the host's cores).
    pub thread_cpu_us_per_dispatch: Option<f64>,
    /// The runtime's own split: recording (`GpuStats::record_ns`) and submitting
    /// (`GpuStats::submit_ns`), µs per dispatch.
    pub runtime_record_us_per_dispatch: f64,
    pub runtime_submit_us_per_dispatch: f64,
    pub submissions: u64,
}

/// CPU time this thread has run, in ns (Linux `/proc/thread-self/schedstat`), None elsewhere.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Counters and kernel times of one training step (forward, losses, backward, Adam, then the
/// loss read back, as the training loop runs it: no syncs between the phases).
#[derive(Clone, Debug, Serialize)]
pub struct StepProfile {
    pub case: String,
    /// Host time of the unprofiled step (ms).
    pub step_ms: f64,
    /// Its runtime counters (dispatches, submissions, host waits, bind groups, ...).
    pub counters: GpuStats,
    /// Host µs spent recording per dispatch (`counters.record_ns / counters.dispatches`).
    pub record_us_per_dispatch: f64,
    /// Sum of the per-kernel GPU times of a second, profiled step (ms); None without timestamps.
    pub gpu_ms: Option<f64>,
    /// GPU time per kernel (shader:entry) of the profiled step, longest first.
    pub kernels: Option<Vec<KernelTime>>,
}

/// The whole `--profile` report.
#[derive(Clone, Debug, Serialize)]
pub struct ProfileReport {
    pub device: String,
    /// Which timestamp queries the adapter has; kernel times need `inside_passes`.
    pub timestamps: TimestampSupport,
    pub dispatch_cost: Vec<DispatchCost>,
    pub steps: Vec<StepProfile>,
}

/// Times `n` dispatches of `elementwise:fill` on one buffer through [`Gpu::dispatch`], then `n`
/// chained `Tensor::add_scalar` ops (each also allocates from the pool and records autograd-free
/// tensor bookkeeping), then `n` chained 8x8 `Tensor::matmul`s (a kernel with pipeline
/// constants and three buffers, one dispatch each on every adapter: no padding, no split). A
/// warm-up of each path runs first (pipelines, bind groups, pool).
pub fn dispatch_cost(device: &Device, n: u64) -> Result<Vec<DispatchCost>> {
    let gpu = device.as_gpu().ok_or_else(|| {
        crate::gpu::GpuError::Unsupported("bench --profile needs a GPU device".into())
    })?;
    let mut out = Vec::new();
    let mut measure = |path: &str, f: &mut dyn FnMut(u64) -> Result<()>| -> Result<()> {
        f(n.min(200))?;
        gpu.sync()?;
        let before = gpu.stats();
        let cpu0 = thread_cpu_ns();
        let t0 = Instant::now();
        f(n)?;
        let t1 = Instant::now();
        let cpu1 = thread_cpu_ns();
        gpu.sync()?;
        let t2 = Instant::now();
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n.max(1) as f64;
        let per_ns = |ns: u64| ns as f64 / 1e3 / n.max(1) as f64;
        let delta = gpu.stats().since(&before);
        out.push(DispatchCost {
            path: path.into(),
            dispatches: delta.dispatches,
            record_us_per_dispatch: per(t1 - t0),
            total_us_per_dispatch: per(t2 - t0),
            thread_cpu_us_per_dispatch: cpu0.zip(cpu1).map(|(a, b)| per_ns(b - a)),
            runtime_record_us_per_dispatch: per_ns(delta.record_ns),
            runtime_submit_us_per_dispatch: per_ns(delta.submit_ns),
            submissions: delta.submissions,
        });
        Ok(())
    };
    let buf = gpu.alloc(1024, "dispatch-cost buffer")?;
    measure("Gpu::dispatch elementwise:fill, 256 floats", &mut |reps| {
        for k in 0..reps {
            gpu.fill_u32(&buf, k as u32 | 1)?;
        }
        Ok(())
    })?;
    let x0 = Tensor::ones(&[256], device)?;
    measure("Tensor::add_scalar chain, 256 floats", &mut |reps| {
        let mut x = x0.clone();
        for _ in 0..reps {
            x = x.add_scalar(1.0)?;
        }
        Ok(())
    })?;
    // A matmul records the way a step's products do: a kernel with pipeline constants (the
    // transposes, the tile shape), three buffers and a larger parameter block.
    let a = Tensor::full(&[8, 8], 0.125, device)?;
    measure("Tensor::matmul chain, 8x8", &mut |reps| {
        let mut x = a.clone();
        for _ in 0..reps {
            x = x.matmul(&a)?;
        }
        Ok(())
    })?;
    Ok(out)
}

/// Profiles one training step of `case` (after `warmup` steps): its counters and host time, then
/// a second step under timestamp queries for the per-kernel GPU times where the adapter has them.
pub fn profile_step(device: &Device, case: &ModelCase, warmup: usize) -> Result<StepProfile> {
    let gpu = device.as_gpu().ok_or_else(|| {
        crate::gpu::GpuError::Unsupported("bench --profile needs a GPU device".into())
    })?;
    let mut train = TrainStep::new(device, case)?;
    for step in 0..warmup {
        train.run_unsynced(step)?;
    }
    device.sync()?;
    let before = gpu.stats();
    let t0 = Instant::now();
    train.run_unsynced(warmup)?;
    let step_ms = t0.elapsed().as_secs_f64() * 1e3;
    let counters = gpu.stats().since(&before);
    let kernels = if gpu.timestamp_support() == TimestampSupport::InsidePasses {
        gpu.start_profiling()?;
        let run = train.run_unsynced(warmup + 1);
        let times = gpu.stop_profiling()?;
        run?;
        Some(times)
    } else {
        None
    };
    Ok(StepProfile {
        case: case.name(),
        step_ms,
        record_us_per_dispatch: counters.record_us_per_dispatch(),
        counters,
        gpu_ms: kernels.as_ref().map(|k| k.iter().map(|t| t.gpu_ms).sum()),
        kernels,
    })
}

/// `unreid bench --profile`: the dispatch cost (`dispatches` per path), then each case's step
/// profile. Errors on a device without a GPU runtime.
pub fn profile(
    device: &Device,
    cases: &[ModelCase],
    warmup: usize,
    dispatches: u64,
) -> Result<ProfileReport> {
    let gpu = device.as_gpu().ok_or_else(|| {
        crate::gpu::GpuError::Unsupported("bench --profile needs a GPU device".into())
    })?;
    let dispatch_cost = dispatch_cost(device, dispatches)?;
    let mut steps = Vec::new();
    for case in cases {
        eprintln!("bench: profiling {} on {device}", case.name());
        steps.push(profile_step(device, case, warmup)?);
    }
    Ok(ProfileReport {
        device: device.to_string(),
        timestamps: gpu.timestamp_support(),
        dispatch_cost,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn pk_labels_match_the_yardstick() {
        // torch_train_step.py: ((step * ids + i // 4) * 7) % classes, ids = batch // 4.
        assert_eq!(pk_labels(8, 0, 751), vec![0, 0, 0, 0, 7, 7, 7, 7]);
        assert_eq!(pk_labels(8, 1, 751), vec![14, 14, 14, 14, 21, 21, 21, 21]);
    }

    #[test]
    fn tiny_train_case_reports_every_phase() {
        let case = ModelCase::new("resnet18", 4, 32, 16, Mode::Train);
        let opts = BenchOptions {
            warmup: 0,
            steps: 1,
            kernels: false,
            ..Default::default()
        };
        let row = run_model_case(&Device::Cpu, &case, &opts).unwrap();
        assert_eq!(row.kind, "train");
        for v in [
            row.images_per_s,
            row.forward_ms,
            row.backward_ms,
            row.optimiser_ms,
        ] {
            assert!(v.unwrap() > 0.0, "{row:?}");
        }
    }
}
