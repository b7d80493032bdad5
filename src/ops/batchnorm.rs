//! Batch normalisation over [N, C] or [N, C, H, W]: fused kernels (per-channel statistics, one
//! normalising pass; backward: per-channel sums of g and g*xhat, one elementwise pass), with an
//! optional activation ([`Activation`]: ReLU, ReLU6) in the normalising pass's epilogue and its
//! mask (from the saved output) folded into both backward passes.
//! Running statistics and domain-specific sets live in `nn::BatchNorm`; these ops are pure.
//! `Device::Cpu` runs the fast path `cpu::fast::batchnorm`; `Device::CpuF64` the plain reference.

use crate::autograd::record;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Gpu, Kernel};
use crate::ops::{alloc_f32, binds_storage_buffers, same_device, writable_state, HostElem, Params};
use crate::tensor::{DType, Data, HostFloat};
use crate::{cpu, Device, Tensor};

pub use crate::cpu::elementwise::Activation;

#[derive(Clone, Copy)]
struct Dims {
    n: usize,
    c: usize,
    s: usize,
}

fn dims(x: &Tensor, per_channel: &[&Tensor]) -> Result<Dims> {
    if x.rank() < 2 {
        return shape_err(
            "batch_norm",
            format!("needs [N, C, ...], got {:?}", x.shape()),
        );
    }
    let c = x.shape()[1];
    for t in per_channel {
        t.expect_dtype("batch_norm", DType::F32)?;
        if t.shape() != [c] {
            return shape_err(
                "batch_norm",
                format!(
                    "per-channel operand {:?} should be [{c}] for input {:?}",
                    t.shape(),
                    x.shape()
                ),
            );
        }
    }
    Ok(Dims {
        n: x.shape()[0],
        c,
        s: x.shape()[2..].iter().product(),
    })
}

/// Params of every batchnorm.wgsl kernel: n, c, s, eps, momentum, unbias (the running update's),
/// parts (workgroups per channel of a split reduction).
fn params(d: Dims, eps: f64, running: (f64, f64), parts: usize) -> Params {
    Params::new()
        .usize(d.n)
        .usize(d.c)
        .usize(d.s)
        .f32(eps as f32)
        .f32(running.0 as f32)
        .f32(running.1 as f32)
        .usize(parts)
}

fn vec_tensor(like: &Tensor, shape: Vec<usize>, data: Data) -> Tensor {
    Tensor::from_parts(shape, DType::F32, like.device().clone(), data)
}

/// Workgroups the GPU's per-channel reductions (statistics, backward sums) aim to fill together.
const PART_TARGET: usize = 512;
/// The fewest values a split reduction's workgroup sums (16 per invocation).
const PART_MIN: usize = 4096;
/// The most workgroups one channel's reduction is split over.
const PART_MAX: usize = 64;

/// Workgroups per channel of the GPU's statistics and backward reductions (issue 16.6): with
/// few channels of many values one workgroup each leaves most of a GPU idle, so each channel's
/// M = N*S values are cut into P equal chunks of at least [`PART_MIN`] values, enough for about
/// [`PART_TARGET`] workgroups in all, whose partial results a second, per-channel kernel combines.
/// 1 (one workgroup per channel, no combine) when the channels already fill the device or are
/// short.
fn parts(d: Dims) -> usize {
    let by_fill = PART_TARGET.div_ceil(d.c.max(1));
    let by_size = d.n * d.s / PART_MIN;
    by_fill.min(by_size).clamp(1, PART_MAX)
}

/// Dispatches `kernel` over `inputs` then one fresh output per shape in `outs`.
fn launch(
    kernel: Kernel,
    params: Params,
    inputs: &[&Tensor],
    outs: &[Vec<usize>],
    grid: [u32; 3],
) -> Result<Vec<Tensor>> {
    let gpu = inputs[0].device().as_gpu().unwrap();
    let out_bufs = outs
        .iter()
        .map(|s| alloc_f32(gpu, s.iter().product(), kernel.entry))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut bufs: Vec<_> = inputs.iter().map(|t| t.gpu_buffer().unwrap()).collect();
    bufs.extend(out_bufs.iter());
    gpu.dispatch(&kernel, params.bytes(), &bufs, grid)?;
    Ok(out_bufs
        .into_iter()
        .zip(outs)
        .map(|(b, shape)| Tensor::from_gpu(shape.clone(), DType::F32, inputs[0].device(), b))
        .collect())
}

fn bn_kernel(entry: &'static str) -> Kernel {
    Kernel::new("batchnorm", entry)
}

/// A per-channel reduction kernel (bn_stats*, bn_bwd_reduce) with the adapter's reduction
/// workgroup size (its `RED_WG`; the grid, one workgroup per channel or chunk, is the same).
fn reduce_kernel(gpu: &Gpu, entry: &'static str) -> Kernel {
    bn_kernel(entry).with("RED_WG", gpu.reduction_workgroup())
}

/// An elementwise pass (bn_apply, bn_bwd_apply*) with the adapter's run length (its `RUN`), and
/// its grid: one invocation per run of a plane's elements, 256 per workgroup.
fn elementwise(gpu: &Gpu, kernel: Kernel, d: Dims) -> (Kernel, [u32; 3]) {
    let run = gpu.run_length() as usize;
    let runs = d.n * d.c * d.s.div_ceil(run);
    (kernel.with("RUN", run as u32), grid_1d(runs as u32, 256))
}

/// One invocation per channel (64 per workgroup).
fn per_channel(d: Dims) -> [u32; 3] {
    grid_1d(d.c as u32, 64)
}

/// The batch mean and biased variance [C] on the GPU, and with `running` (running mean, running
/// variance, momentum, unbias) their update in the same kernels, in place in those tensors'
/// storage. One workgroup per channel, or [`parts`] of them and a combining kernel.
fn gpu_stats(
    x: &Tensor,
    d: Dims,
    running: Option<(&Tensor, &Tensor, f64, f64)>,
) -> Result<(Tensor, Tensor)> {
    let gpu = x.device().as_gpu().unwrap();
    let p = parts(d);
    let consts = running.map_or((0.0, 0.0), |r| (r.2, r.3));
    let pars = || params(d, 0.0, consts, p);
    let running_on = running.is_some();
    // The kernel that writes the statistics, and what it reads: x itself (one workgroup per
    // channel), or the chunks' partial results.
    let partial;
    let (kernel, reads, grid): (Kernel, Vec<&Tensor>, _) = if p == 1 {
        let entry = if running_on {
            "bn_stats_running"
        } else {
            "bn_stats"
        };
        (reduce_kernel(gpu, entry), vec![x], grid_1d(d.c as u32, 1))
    } else {
        partial = launch(
            reduce_kernel(gpu, "bn_stats_part"),
            pars(),
            &[x],
            &[vec![d.c * p], vec![d.c * p]],
            grid_1d((d.c * p) as u32, 1),
        )?;
        let entry = if running_on {
            "bn_stats_combine_running"
        } else {
            "bn_stats_combine"
        };
        (bn_kernel(entry), partial.iter().collect(), per_channel(d))
    };
    let label = kernel.entry;
    let outs = [alloc_f32(gpu, d.c, label)?, alloc_f32(gpu, d.c, label)?];
    let mut bufs: Vec<_> = reads.iter().map(|t| t.gpu_buffer().unwrap()).collect();
    bufs.extend([&outs[0], &outs[1]]);
    // The running statistics last (read and written in place).
    bufs.extend(
        running
            .iter()
            .flat_map(|r| [r.0, r.1].map(|t| t.gpu_buffer().unwrap())),
    );
    gpu.dispatch(&kernel, pars().bytes(), &bufs, grid)?;
    let [mean, var] = outs.map(|b| Tensor::from_gpu(vec![d.c], DType::F32, x.device(), b));
    Ok((mean, var))
}

fn stats_raw(x: &Tensor, d: Dims) -> Result<(Tensor, Tensor)> {
    if x.device().is_gpu() {
        return gpu_stats(x, d, None);
    }
    // The CPU device never comes here: `train_forward_raw` sweeps statistics and output at once.
    fn run<T: HostElem>(x: &Tensor, d: Dims) -> (Data, Data) {
        let (m, v) = cpu::batchnorm::stats(T::slice(x), d.n, d.c, d.s);
        (T::wrap(m), T::wrap(v))
    }
    let (m, v) = match x.host_float().unwrap() {
        HostFloat::F32(_) => run::<f32>(x, d),
        HostFloat::F64(_) => run::<f64>(x, d),
    };
    Ok((vec_tensor(x, vec![d.c], m), vec_tensor(x, vec![d.c], v)))
}

#[allow(clippy::too_many_arguments)]
fn apply_raw(
    x: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    d: Dims,
    eps: f64,
    act: Activation,
) -> Result<Tensor> {
    if let Device::Gpu(gpu) = x.device() {
        let (kernel, grid) = elementwise(gpu, bn_kernel("bn_apply").with("ACT", act as u32), d);
        return Ok(launch(
            kernel,
            params(d, eps, (0.0, 0.0), 1),
            &[x, mean, var, gamma, beta],
            &[x.shape().to_vec()],
            grid,
        )?
        .remove(0));
    }
    if let Device::Cpu = x.device() {
        let [xs, mean, var, gamma, beta] = [x, mean, var, gamma, beta].map(f32::slice);
        let y = cpu::fast::batchnorm::apply(xs, mean, var, gamma, beta, d.c, d.s, eps, act);
        return Ok(Tensor::from_host_f32(x.shape().to_vec(), &Device::Cpu, y));
    }
    fn run<T: HostElem>(t: [&Tensor; 5], d: Dims, eps: f64, act: Activation) -> Data {
        let s = t.map(T::slice);
        T::wrap(cpu::batchnorm::apply(
            s[0], s[1], s[2], s[3], s[4], d.c, d.s, eps, act,
        ))
    }
    let t = [x, mean, var, gamma, beta];
    let data = match x.host_float().unwrap() {
        HostFloat::F32(_) => run::<f32>(t, d, eps, act),
        HostFloat::F64(_) => run::<f64>(t, d, eps, act),
    };
    Ok(vec_tensor(x, x.shape().to_vec(), data))
}

/// Training-mode forward without autograd: (act(normalised x), batch mean [C], biased batch
/// variance [C]). The CPU device computes each channel's statistics and output in one sweep
/// (`cpu::fast::batchnorm::train_forward`, bit-identical to statistics then apply); the other
/// devices run `stats_raw` then `apply_raw`.
fn train_forward_raw(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    d: Dims,
    eps: f64,
    act: Activation,
) -> Result<(Tensor, Tensor, Tensor)> {
    if let Device::Cpu = x.device() {
        let [xs, gamma, beta] = [x, gamma, beta].map(f32::slice);
        let dims = (d.n, d.c, d.s);
        let (y, mean, var) = cpu::fast::batchnorm::train_forward(xs, gamma, beta, dims, eps, act);
        let wrap = |v| vec_tensor(x, vec![d.c], f32::wrap(v));
        let y = Tensor::from_host_f32(x.shape().to_vec(), &Device::Cpu, y);
        return Ok((y, wrap(mean), wrap(var)));
    }
    let (mean, var) = stats_raw(x, d)?;
    let out = apply_raw(x, &mean, &var, gamma, beta, d, eps, act)?;
    Ok((out, mean, var))
}

/// (dx, dgamma, dbeta) from the output gradient `g`; `fused`: the forward's activation and its
/// output y (the mask's source), `None` without one. `beta` is the forward's shift (the CPU device
/// recomputes the pre-activation from x and the forward's statistics instead of reading y).
#[allow(clippy::too_many_arguments)]
fn backward_raw(
    x: &Tensor,
    g: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    (gamma, beta): (&Tensor, &Tensor),
    d: Dims,
    eps: f64,
    train: bool,
    fused: Option<(Activation, &Tensor)>,
) -> Result<(Tensor, Tensor, Tensor)> {
    let act = fused.map_or(Activation::None, |f| f.0);
    if x.device().is_gpu() {
        // Without an activation the kernels leave their y binding unread: x stands in.
        let gpu = x.device().as_gpu().unwrap();
        let y = fused.map_or(x, |f| f.1);
        // Per-channel sums, over [`parts`] workgroups per channel and then combined.
        let p = parts(d);
        let pars = || params(d, eps, (0.0, 0.0), p);
        let mut sums = launch(
            reduce_kernel(gpu, "bn_bwd_reduce").with("ACT", act as u32),
            pars(),
            &[x, g, y, mean, var],
            &[vec![d.c * p], vec![d.c * p]],
            grid_1d((d.c * p) as u32, 1),
        )?;
        if p > 1 {
            let partial: Vec<&Tensor> = sums.iter().collect();
            sums = launch(
                bn_kernel("bn_bwd_combine"),
                pars(),
                &partial,
                &[vec![d.c], vec![d.c]],
                per_channel(d),
            )?;
        }
        let sum_gx = sums.pop().unwrap();
        let sum_g = sums.pop().unwrap();
        // bn_bwd_apply binds 9 storage buffers; where the adapter allows fewer (WebGPU's baseline
        // of 8), the two sums travel packed in one [2C] buffer to bn_bwd_apply_packed (same
        // arithmetic, two small copies more).
        let packed;
        let (entry, sums): (_, Vec<&Tensor>) = if binds_storage_buffers(gpu, 9) {
            ("bn_bwd_apply", vec![&sum_g, &sum_gx])
        } else {
            packed = Tensor::concat(&[&sum_g, &sum_gx], 0)?;
            ("bn_bwd_apply_packed", vec![&packed])
        };
        let mut inputs = vec![x, g, y, mean, var, gamma];
        inputs.extend(sums);
        let (kernel, grid) = elementwise(
            gpu,
            bn_kernel(entry)
                .with("TRAIN", train as u32)
                .with("ACT", act as u32),
            d,
        );
        let dx = launch(kernel, pars(), &inputs, &[x.shape().to_vec()], grid)?.remove(0);
        return Ok((dx, sum_gx, sum_g));
    }
    if let Device::Cpu = x.device() {
        // The mask comes from the pre-activation recomputed from x (one stream less than y).
        let [xs, gs, mean, var, gamma, beta] = [x, g, mean, var, gamma, beta].map(f32::slice);
        let (dx, dgamma, dbeta) = cpu::fast::batchnorm::backward(
            xs,
            gs,
            (mean, var, gamma, beta),
            (d.n, d.c, d.s),
            eps,
            train,
            act,
        );
        return Ok((
            Tensor::from_host_f32(x.shape().to_vec(), &Device::Cpu, dx),
            Tensor::from_host_f32(vec![d.c], &Device::Cpu, dgamma),
            Tensor::from_host_f32(vec![d.c], &Device::Cpu, dbeta),
        ));
    }
    fn run<T: HostElem>(
        t: [&Tensor; 5],
        d: Dims,
        eps: f64,
        train: bool,
        fused: Option<(Activation, &Tensor)>,
    ) -> (Data, Data, Data) {
        let [x, g, mean, var, gamma] = t.map(T::slice);
        // The reference masks the gradient first (the unfused sequence's own step).
        let masked =
            fused.map(|(act, y)| cpu::elementwise::activation_backward(act, g, T::slice(y)));
        let g = masked.as_deref().unwrap_or(g);
        let (sg, sgx) = cpu::batchnorm::backward_reduce(x, g, mean, var, d.n, d.c, d.s, eps);
        let dx = cpu::batchnorm::backward_apply(
            x,
            g,
            mean,
            var,
            gamma,
            (&sg, &sgx),
            (d.n, d.c, d.s),
            eps,
            train,
        );
        (T::wrap(dx), T::wrap(sgx), T::wrap(sg))
    }
    let t = [x, g, mean, var, gamma];
    let (dx, dgamma, dbeta) = match x.host_float().unwrap() {
        HostFloat::F32(_) => run::<f32>(t, d, eps, train, fused),
        HostFloat::F64(_) => run::<f64>(t, d, eps, train, fused),
    };
    Ok((
        vec_tensor(x, x.shape().to_vec(), dx),
        vec_tensor(x, vec![d.c], dgamma),
        vec_tensor(x, vec![d.c], dbeta),
    ))
}

#[allow(clippy::too_many_arguments)]
fn record_bn(
    out: Tensor,
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    mean: Tensor,
    var: Tensor,
    d: Dims,
    eps: f64,
    train: bool,
    act: Activation,
) -> Tensor {
    let (xs, gs, bs) = (x.detach(), gamma.detach(), beta.detach());
    // The activation's mask comes from the output (which its consumers hold anyway) on the GPU
    // and reference devices; the CPU device recomputes the pre-activation from x and beta.
    let y = (act != Activation::None).then(|| out.detach());
    record(out, "batch_norm", &[x, gamma, beta], move |g, needs| {
        let fused = y.as_ref().map(|y| (act, y));
        let (dx, dgamma, dbeta) =
            backward_raw(&xs, g, &mean, &var, (&gs, &bs), d, eps, train, fused)?;
        Ok(vec![
            needs[0].then_some(dx),
            needs[1].then_some(dgamma),
            needs[2].then_some(dbeta),
        ])
    })
}

/// The running statistics a training-mode batch norm updates
/// ([`Tensor::batch_norm_train_running`]).
pub struct RunningStats<'a> {
    /// Running mean [C].
    pub mean: &'a Tensor,
    /// Running (unbiased) variance [C].
    pub var: &'a Tensor,
    /// Weight of the new batch (torch's `momentum`, 0.1 by default).
    pub momentum: f64,
    /// The caller holds `mean` and `var` storage alone: the GPU may update it in place.
    pub donated: bool,
}

/// What [`Tensor::batch_norm_train_running`] returns.
pub struct BatchNormTrain {
    /// The normalised output (tracked), shaped like the input.
    pub y: Tensor,
    /// Batch mean [C] (a constant).
    pub mean: Tensor,
    /// Biased batch variance [C] (a constant).
    pub var: Tensor,
    /// Updated running mean [C].
    pub running_mean: Tensor,
    /// Updated running variance [C].
    pub running_var: Tensor,
}

impl Tensor {
    /// Training-mode batch norm over x [N, C, ...] with per-channel `gamma`, `beta` [C]:
    /// normalises with this batch's statistics, then applies `act` in the same pass
    /// (torch.nn.BatchNorm2d in training mode, then torch.nn.ReLU / ReLU6 for `act`):
    /// `y = act(gamma (x - mean) / sqrt(var + eps) + beta)`, shaped like x. Returns y, the batch
    /// mean and the biased batch variance [C] (constants, for running-statistics updates). The
    /// backward masks y's gradient by the activation's derivative at y (zero at the kinks) and
    /// keeps no tensor beyond x, gamma, the statistics and y. On the CPU device (f32) the results
    /// are bit-identical to the unfused `batch_norm_train(.., Activation::None)?.0.relu()`.
    /// Errors: shapes, devices, dtype, an empty batch.
    pub fn batch_norm_train(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
        act: Activation,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let d = self.train_dims(&[gamma, beta])?;
        let (out, mean, var) = train_forward_raw(self, gamma, beta, d, eps, act)?;
        let y = self.record_train(out, &mean, &var, (gamma, beta), d, eps, act);
        Ok((y, mean, var))
    }

    /// Training-mode checks shared by both training entry points: one device, f32, per-channel
    /// tensors of C values (`per_channel`), and at least one value per channel.
    fn train_dims(&self, per_channel: &[&Tensor]) -> Result<Dims> {
        let mut all = vec![self];
        all.extend_from_slice(per_channel);
        same_device("batch_norm", &all)?;
        self.expect_dtype("batch_norm", DType::F32)?;
        let d = dims(self, per_channel)?;
        if d.n * d.s == 0 {
            return shape_err(
                "batch_norm",
                format!("no values per channel in {:?}", self.shape()),
            );
        }
        Ok(d)
    }

    /// `out`, the normalised (and activated) x with the batch statistics `mean`, `var`, recorded
    /// for autograd (their own gradient included).
    #[allow(clippy::too_many_arguments)]
    fn record_train(
        &self,
        out: Tensor,
        mean: &Tensor,
        var: &Tensor,
        (gamma, beta): (&Tensor, &Tensor),
        d: Dims,
        eps: f64,
        act: Activation,
    ) -> Tensor {
        record_bn(
            out,
            self,
            gamma,
            beta,
            mean.clone(),
            var.clone(),
            d,
            eps,
            true,
            act,
        )
    }

    /// [`Tensor::batch_norm_train`] (activation `act` included) that also updates running
    /// statistics (torch.nn.BatchNorm, momentum `running.momentum`): returns (output, batch mean,
    /// biased batch variance, new running mean, new running variance), the last two
    /// `(1 - m) running + m batch` with the variance unbiased by `M / (M - 1)` (M = N*H*W values
    /// per channel, at least 2 in the divisor as before). On the GPU the update happens in the
    /// statistics kernel itself (one dispatch, or the combining one of a channel reduction split
    /// over several workgroups; no elementwise ops), in place when
    /// `running.donated` (the caller holds the running tensors' storage alone, see
    /// `Param::get_for_update`), else into copies. Errors: shapes, devices, an empty batch.
    pub fn batch_norm_train_running(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
        act: Activation,
        running: RunningStats<'_>,
    ) -> Result<BatchNormTrain> {
        let d = self.train_dims(&[gamma, beta, running.mean, running.var])?;
        let per_channel = d.n * d.s;
        let unbias = per_channel as f64 / (per_channel.max(2) - 1) as f64;
        let (out, mean, var, rmean, rvar) = if self.device().is_gpu() {
            let rmean = writable_state(running.mean, running.donated, "bn_stats_running")?;
            let rvar = writable_state(running.var, running.donated, "bn_stats_running")?;
            let (mean, var) = gpu_stats(self, d, Some((&rmean, &rvar, running.momentum, unbias)))?;
            let out = apply_raw(self, &mean, &var, gamma, beta, d, eps, act)?;
            (out, mean, var, rmean, rvar)
        } else {
            let (out, mean, var) = train_forward_raw(self, gamma, beta, d, eps, act)?;
            fn run<T: HostElem>(
                mean: &Tensor,
                var: &Tensor,
                r: &RunningStats<'_>,
                per_channel: usize,
            ) -> (Data, Data) {
                let mut rm = T::slice(r.mean).to_vec();
                let mut rv = T::slice(r.var).to_vec();
                cpu::batchnorm::running_update(
                    &mut rm,
                    &mut rv,
                    T::slice(mean),
                    T::slice(var),
                    r.momentum,
                    per_channel,
                );
                (T::wrap(rm), T::wrap(rv))
            }
            let (rm, rv) = match self.host_float().unwrap() {
                HostFloat::F32(_) => run::<f32>(&mean, &var, &running, per_channel),
                HostFloat::F64(_) => run::<f64>(&mean, &var, &running, per_channel),
            };
            let rm = vec_tensor(self, vec![d.c], rm);
            let rv = vec_tensor(self, vec![d.c], rv);
            (out, mean, var, rm, rv)
        };
        let y = self.record_train(out, &mean, &var, (gamma, beta), d, eps, act);
        Ok(BatchNormTrain {
            y,
            mean,
            var,
            running_mean: rmean,
            running_var: rvar,
        })
    }

    /// Evaluation-mode batch norm over x [N, C, ...] with given (running) `mean` and `var` [C],
    /// which get no gradient, then `act` in the same pass (torch.nn.BatchNorm2d in eval mode,
    /// then ReLU / ReLU6): `y = act(gamma (x - mean) / sqrt(var + eps) + beta)`, shaped like x;
    /// gradients to x, gamma and beta masked by the activation's derivative at y. Errors: shapes,
    /// devices, dtype.
    pub fn batch_norm_eval(
        &self,
        gamma: &Tensor,
        beta: &Tensor,
        mean: &Tensor,
        var: &Tensor,
        eps: f64,
        act: Activation,
    ) -> Result<Tensor> {
        same_device("batch_norm", &[self, gamma, beta, mean, var])?;
        self.expect_dtype("batch_norm", DType::F32)?;
        let d = dims(self, &[gamma, beta, mean, var])?;
        let (mean, var) = (mean.detach(), var.detach());
        let out = apply_raw(self, &mean, &var, gamma, beta, d, eps, act)?;
        Ok(record_bn(
            out, self, gamma, beta, mean, var, d, eps, false, act,
        ))
    }
}
