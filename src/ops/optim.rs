//! Fused optimiser kernels (see shaders/optim.wgsl). They update their state tensors in place on
//! the GPU and record nothing for autograd.
//!
//! Values stay immutable to every observer: a state tensor is overwritten in place only when its
//! caller donates it (says no other tensor shares its storage, see `Param::get_for_update`);
//! otherwise it is first copied into a fresh buffer and the copy is updated. Donation is what
//! keeps parameters and moments in the same GPU buffers step after step (issue 16: cached bind
//! groups keep matching).

pub use crate::cpu::optim::{AdamHyper, SgdHyper};
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::{alloc_f32, binds_storage_buffers, same_device, writable_state, Params};
use crate::tensor::{DType, Data, HostFloat};
use crate::{cpu, Device, Tensor};

fn check(op: &'static str, tensors: &[&Tensor]) -> Result<()> {
    same_device(op, tensors)?;
    for t in tensors {
        t.expect_dtype(op, DType::F32)?;
        if t.shape() != tensors[0].shape() {
            return shape_err(
                op,
                format!("{:?} and {:?} differ", tensors[0].shape(), t.shape()),
            );
        }
    }
    Ok(())
}

fn like(t: &Tensor, data: Data) -> Tensor {
    Tensor::from_parts(t.shape().to_vec(), DType::F32, t.device().clone(), data)
}

/// Copies host data out of a CPU tensor in its own precision, for in-place reference updates.
macro_rules! host_vec {
    ($t:expr, $ty:ident) => {
        match $t.host_float().unwrap() {
            HostFloat::$ty(v) => v.to_vec(),
            _ => unreachable!("one device, one precision"),
        }
    };
}

/// Runs a fused in-place kernel over `state` (written, bindings 1..) and `inputs` (read, after
/// them) with `invocations` invocations (one per element, or per vec4 for `adam4`); returns the
/// updated state tensors.
fn launch(
    entry: &'static str,
    params: Params,
    state: &[&Tensor],
    inputs: &[&Tensor],
    donated: bool,
    invocations: usize,
) -> Result<Vec<Tensor>> {
    let Device::Gpu(g) = state[0].device() else {
        unreachable!()
    };
    let outs = state
        .iter()
        .map(|t| writable_state(t, donated, entry))
        .collect::<Result<Vec<_>>>()?;
    let mut bufs: Vec<_> = outs.iter().map(|t| t.gpu_buffer().unwrap()).collect();
    bufs.extend(inputs.iter().map(|t| t.gpu_buffer().unwrap()));
    g.dispatch(
        &Kernel::new("optim", entry),
        params.bytes(),
        &bufs,
        grid_1d(invocations as u32, 256),
    )?;
    Ok(outs)
}

/// One Adam step: returns (param, m, v), new tensors (`p`, `m`, `v` keep their values).
pub fn adam_update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: AdamHyper,
) -> Result<(Tensor, Tensor, Tensor)> {
    adam_update_donated(p, g, m, v, h, false)
}

/// One Adam step: returns (param, m, v). With `donated`, the caller vouches that no other tensor
/// shares the storage of `p`, `m` and `v` (each is the sole holder, see
/// `Tensor::owns_storage_alone`): on the GPU the update then overwrites those buffers and the
/// results share them. Without, as [`adam_update`]. On the CPU devices results are always new.
/// With CPU-adapter kernel shapes (`Gpu::cpu_shapes`) a tensor of a multiple of 4 elements takes
/// `adam4` (vec4 accesses, the same arithmetic per element): lavapipe's ResNet-18 b8 step spent
/// 81 ms in `adam`, 36-38 ms in `adam4` (issue 14).
pub fn adam_update_donated(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: AdamHyper,
    donated: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    check("adam", &[p, g, m, v])?;
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2_sqrt = (1.0 - h.beta2.powi(h.step as i32)).sqrt();
    if let Device::Gpu(gpu) = p.device() {
        let (entry, invocations) = if gpu.cpu_shapes() && p.numel() % 4 == 0 {
            ("adam4", p.numel() / 4)
        } else {
            ("adam", p.numel())
        };
        let params = Params::new()
            .usize(invocations)
            .f32(h.lr as f32)
            .f32(h.beta1 as f32)
            .f32(h.beta2 as f32)
            .f32(h.eps as f32)
            .f32(h.weight_decay as f32)
            .f32(bc1 as f32)
            .f32(bc2_sqrt as f32);
        let mut out = launch(entry, params, &[p, m, v], &[g], donated, invocations)?.into_iter();
        return Ok((
            out.next().unwrap(),
            out.next().unwrap(),
            out.next().unwrap(),
        ));
    }
    if let Device::Cpu = p.device() {
        let [pv, gv, mv, vv] = [p, g, m, v].map(|t| match t.host_float().unwrap() {
            HostFloat::F32(s) => s,
            _ => unreachable!("the CPU device holds f32"),
        });
        let [pd, md, vd] = cpu::fast::optim::adam(pv, gv, mv, vv, h);
        return Ok((
            like(p, Data::F32(pd.into())),
            like(p, Data::F32(md.into())),
            like(p, Data::F32(vd.into())),
        ));
    }
    macro_rules! run {
        ($ty:ident) => {{
            let (mut pv, gv, mut mv, mut vv) = (
                host_vec!(p, $ty),
                host_vec!(g, $ty),
                host_vec!(m, $ty),
                host_vec!(v, $ty),
            );
            cpu::optim::adam(&mut pv, &gv, &mut mv, &mut vv, h);
            (
                Data::$ty(pv.into()),
                Data::$ty(mv.into()),
                Data::$ty(vv.into()),
            )
        }};
    }
    let (pd, md, vd) = match p.host_float().unwrap() {
        HostFloat::F32(_) => run!(F32),
        HostFloat::F64(_) => run!(F64),
    };
    Ok((like(p, pd), like(p, md), like(p, vd)))
}

/// Tensors one `adam_multi` dispatch updates (its slots; see shaders/optim.wgsl).
pub const ADAM_SLOTS: usize = 7;

/// One tensor of a multi-tensor Adam step ([`adam_update_multi`]).
pub struct AdamTensor<'a> {
    pub p: &'a Tensor,
    pub g: &'a Tensor,
    pub m: &'a Tensor,
    pub v: &'a Tensor,
    /// This tensor's 1-based step count (its bias corrections).
    pub step: u64,
    /// As in [`adam_update_donated`].
    pub donated: bool,
}

/// One Adam step of many tensors: the same results as [`adam_update_donated`] on each (with
/// `h.step` replaced by each tensor's own `step`), returned in order as (param, m, v). On the GPU
/// up to [`ADAM_SLOTS`] tensors share one dispatch (multi-tensor Adam, as torch's
/// `foreach=True`), so a ResNet-18's 62 updates take 9 dispatches; an adapter that cannot bind
/// the 28 storage buffers that needs (`max_storage_buffers_per_shader_stage`) gets one dispatch
/// per tensor. Errors: devices or shapes that differ within a tensor's operands.
pub fn adam_update_multi(
    tensors: &[AdamTensor<'_>],
    h: AdamHyper,
) -> Result<Vec<(Tensor, Tensor, Tensor)>> {
    for t in tensors {
        check("adam", &[t.p, t.g, t.m, t.v])?;
    }
    let Some(first) = tensors.first() else {
        return Ok(Vec::new());
    };
    let gpu = match first.p.device() {
        Device::Gpu(g) if binds_storage_buffers(g, 4 * ADAM_SLOTS) => g,
        _ => {
            return tensors
                .iter()
                .map(|t| {
                    adam_update_donated(
                        t.p,
                        t.g,
                        t.m,
                        t.v,
                        AdamHyper { step: t.step, ..h },
                        t.donated,
                    )
                })
                .collect()
        }
    };
    let all: Vec<&Tensor> = tensors.iter().flat_map(|t| [t.p, t.g]).collect();
    same_device("adam", &all)?;
    let mut out = Vec::with_capacity(tensors.len());
    for chunk in tensors.chunks(ADAM_SLOTS) {
        let state = chunk
            .iter()
            .map(|t| {
                Ok((
                    writable_state(t.p, t.donated, "adam_multi")?,
                    writable_state(t.m, t.donated, "adam_multi")?,
                    writable_state(t.v, t.donated, "adam_multi")?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        // Unused slots bind 1-float dummies (the layout binds every slot) and get no workgroups.
        let dummies = (0..4 * (ADAM_SLOTS - chunk.len()))
            .map(|_| alloc_f32(gpu, 1, "adam_multi"))
            .collect::<Result<Vec<_>>>()?;
        let mut params = Params::new()
            .f32(h.lr as f32)
            .f32(h.beta1 as f32)
            .f32(h.beta2 as f32)
            .f32(h.eps as f32)
            .f32(h.weight_decay as f32)
            .usize(chunk.len())
            .u32(0)
            .u32(0);
        let mut groups = 0usize;
        let mut bufs = Vec::with_capacity(4 * ADAM_SLOTS);
        for (t, (p, m, v)) in chunk.iter().zip(&state) {
            let bc1 = 1.0 - h.beta1.powi(t.step as i32);
            let bc2_sqrt = (1.0 - h.beta2.powi(t.step as i32)).sqrt();
            params = params
                .usize(t.p.numel())
                .usize(groups)
                .f32(bc1 as f32)
                .f32(bc2_sqrt as f32);
            groups += t.p.numel().div_ceil(256);
            for x in [p, m, v, t.g] {
                bufs.push(x.gpu_buffer().unwrap());
            }
        }
        for _ in chunk.len()..ADAM_SLOTS {
            params = params.u32(0).usize(groups).f32(1.0).f32(1.0);
        }
        bufs.extend(dummies.iter());
        gpu.dispatch(
            &Kernel::new("optim", "adam_multi"),
            params.bytes(),
            &bufs,
            grid_1d((groups * 256) as u32, 256),
        )?;
        out.extend(state);
    }
    Ok(out)
}

/// One SGD step: returns (param, momentum buffer), new tensors.
pub fn sgd_update(p: &Tensor, g: &Tensor, buf: &Tensor, h: SgdHyper) -> Result<(Tensor, Tensor)> {
    sgd_update_donated(p, g, buf, h, false)
}

/// One SGD step; `donated` as in [`adam_update_donated`] (for `p` and `buf`).
pub fn sgd_update_donated(
    p: &Tensor,
    g: &Tensor,
    buf: &Tensor,
    h: SgdHyper,
    donated: bool,
) -> Result<(Tensor, Tensor)> {
    check("sgd", &[p, g, buf])?;
    if p.device().is_gpu() {
        let params = Params::new()
            .usize(p.numel())
            .f32(h.lr as f32)
            .f32(h.momentum as f32)
            .f32(h.dampening as f32)
            .f32(h.weight_decay as f32)
            .u32(h.nesterov as u32)
            .u32(h.first as u32)
            .u32(0);
        let mut out = launch("sgd", params, &[p, buf], &[g], donated, p.numel())?.into_iter();
        return Ok((out.next().unwrap(), out.next().unwrap()));
    }
    macro_rules! run {
        ($ty:ident) => {{
            let (mut pv, gv, mut bv) = (host_vec!(p, $ty), host_vec!(g, $ty), host_vec!(buf, $ty));
            cpu::optim::sgd(&mut pv, &gv, &mut bv, h);
            (Data::$ty(pv.into()), Data::$ty(bv.into()))
        }};
    }
    let (pd, bd) = match p.host_float().unwrap() {
        HostFloat::F32(_) => run!(F32),
        HostFloat::F64(_) => run!(F64),
    };
    Ok((like(p, pd), like(p, bd)))
}

/// `alpha * mean + (1 - alpha) * student` in one pass (the mean-teacher update), a new tensor.
pub fn ema_update(mean: &Tensor, student: &Tensor, alpha: f64) -> Result<Tensor> {
    ema_update_donated(mean, student, alpha, false)
}

/// The mean-teacher update; `donated` as in [`adam_update_donated`] (for `mean`).
pub fn ema_update_donated(
    mean: &Tensor,
    student: &Tensor,
    alpha: f64,
    donated: bool,
) -> Result<Tensor> {
    check("ema", &[mean, student])?;
    if mean.device().is_gpu() {
        let params = Params::new().usize(mean.numel()).f32(alpha as f32);
        return Ok(launch("ema", params, &[mean], &[student], donated, mean.numel())?.remove(0));
    }
    let data = crate::ops::host_float2!(mean, student, |a, b| cpu::optim::ema(a, b, alpha));
    Ok(like(mean, data))
}
