//! Fused optimiser kernels (see shaders/optim.wgsl). They read parameters, gradients and state
//! and return new tensors; they record nothing for autograd.

pub use crate::cpu::optim::{AdamHyper, SgdHyper};
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Kernel};
use crate::ops::{alloc_f32, same_device, Params};
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

/// Runs a fused kernel producing `outputs` tensors shaped like `inputs[0]`.
fn launch(
    entry: &'static str,
    params: Params,
    inputs: &[&Tensor],
    outputs: usize,
) -> Result<Vec<Tensor>> {
    let Device::Gpu(g) = inputs[0].device() else {
        unreachable!()
    };
    let n = inputs[0].numel();
    let outs = (0..outputs)
        .map(|_| alloc_f32(g, n, entry))
        .collect::<Result<Vec<_>>>()?;
    let mut bufs: Vec<_> = inputs.iter().map(|t| t.gpu_buffer().unwrap()).collect();
    bufs.extend(outs.iter());
    g.dispatch(
        &Kernel::new("optim", entry),
        params.bytes(),
        &bufs,
        grid_1d(n as u32, 256),
    )?;
    Ok(outs
        .into_iter()
        .map(|b| like(inputs[0], Data::Gpu(b.into())))
        .collect())
}

/// One Adam step: returns (param, m, v).
pub fn adam_update(
    p: &Tensor,
    g: &Tensor,
    m: &Tensor,
    v: &Tensor,
    h: AdamHyper,
) -> Result<(Tensor, Tensor, Tensor)> {
    check("adam", &[p, g, m, v])?;
    let bc1 = 1.0 - h.beta1.powi(h.step as i32);
    let bc2_sqrt = (1.0 - h.beta2.powi(h.step as i32)).sqrt();
    if p.device().is_gpu() {
        let params = Params::new()
            .usize(p.numel())
            .f32(h.lr as f32)
            .f32(h.beta1 as f32)
            .f32(h.beta2 as f32)
            .f32(h.eps as f32)
            .f32(h.weight_decay as f32)
            .f32(bc1 as f32)
            .f32(bc2_sqrt as f32);
        let mut out = launch("adam", params, &[p, g, m, v], 3)?.into_iter();
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

/// One SGD step: returns (param, momentum buffer).
pub fn sgd_update(p: &Tensor, g: &Tensor, buf: &Tensor, h: SgdHyper) -> Result<(Tensor, Tensor)> {
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
        let mut out = launch("sgd", params, &[p, g, buf], 2)?.into_iter();
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

/// `alpha * mean + (1 - alpha) * student` in one pass (the mean-teacher update).
pub fn ema_update(mean: &Tensor, student: &Tensor, alpha: f64) -> Result<Tensor> {
    check("ema", &[mean, student])?;
    if mean.device().is_gpu() {
        let params = Params::new().usize(mean.numel()).f32(alpha as f32);
        return Ok(launch("ema", params, &[mean, student], 1)?.remove(0));
    }
    let data = crate::ops::host_float2!(mean, student, |a, b| cpu::optim::ema(a, b, alpha));
    Ok(like(mean, data))
}
