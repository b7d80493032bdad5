//! 2-D convolution (NCHW) with stride, padding, dilation and groups, and its backward rules.
//!
//! groups == 1: im2col + the tiled matmul, chunked over the batch so that every per-chunk buffer
//! (columns, products, matmul's zero-padded operands) fits the adapter's binding limit
//! (`Gpu::max_binding_bytes`); dW = dY cols^T and dX = col2im(W^T dY) (a gather, deterministic).
//! 1x1 stride-1 convolutions skip im2col (a batched matmul), chunked over the batch only when a
//! padded operand would not fit one binding. Activations themselves are single buffers: a layer
//! whose output exceeds the limit cannot run, which `binding_needs` lets a model say before
//! training starts.
//! groups > 1 (depthwise included): direct kernels. See shaders/conv2d.wgsl.
//! `Device::Cpu` runs the fast path `cpu::fast::conv2d`; `Device::CpuF64` the plain reference
//! `cpu::conv2d` (the ground truth both are tested against).

use std::sync::Arc;

use crate::autograd::record;
use crate::cpu::conv2d::ConvGeom;
use crate::error::{shape_err, Result};
use crate::gpu::{grid_1d, Gpu, Kernel};
use crate::ops::matmul::MatmulDims;
use crate::ops::{alloc_f32, host_float2, same_device, HostElem, Params};
use crate::tensor::DType;
use crate::{cpu, no_grad, Device, Tensor};

/// Stride, padding, dilation (each (height, width)) and groups of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dSpec {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for Conv2dSpec {
    fn default() -> Self {
        Conv2dSpec {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dSpec {
    /// Square stride `s` and padding `p`, no dilation, one group.
    pub fn new(stride: usize, padding: usize) -> Self {
        Conv2dSpec {
            stride: (stride, stride),
            padding: (padding, padding),
            ..Default::default()
        }
    }
    pub fn dilation(mut self, d: usize) -> Self {
        self.dilation = (d, d);
        self
    }
    pub fn groups(mut self, g: usize) -> Self {
        self.groups = g;
        self
    }
}

pub(crate) fn geometry(x: &[usize], w: &[usize], spec: &Conv2dSpec) -> Result<ConvGeom> {
    if x.len() != 4 || w.len() != 4 {
        return shape_err(
            "conv2d",
            format!(
                "needs input [N,C,H,W] and weight [Cout,Cin/groups,KH,KW], got {x:?} and {w:?}"
            ),
        );
    }
    let g = spec.groups;
    let bad = |m: String| shape_err("conv2d", m);
    if g == 0 || x[1] % g != 0 || w[0] % g != 0 {
        return bad(format!(
            "groups {g} must divide input channels {} and output channels {}",
            x[1], w[0]
        ));
    }
    if w[1] * g != x[1] {
        return bad(format!(
            "weight {w:?} expects {} input channels (groups {g}) but the input {x:?} has {}",
            w[1] * g,
            x[1]
        ));
    }
    let (sh, sw) = spec.stride;
    let (dh, dw) = spec.dilation;
    if sh == 0 || sw == 0 || dh == 0 || dw == 0 {
        return bad("stride and dilation must be at least 1".into());
    }
    let span_h = dh * (w[2] - 1) + 1;
    let span_w = dw * (w[3] - 1) + 1;
    let (ph, pw) = spec.padding;
    if x[2] + 2 * ph < span_h || x[3] + 2 * pw < span_w || w[2] == 0 || w[3] == 0 {
        return bad(format!(
            "kernel {}x{} (dilation {dh}x{dw}) does not fit input {}x{} with padding {ph}x{pw}",
            w[2], w[3], x[2], x[3]
        ));
    }
    Ok(ConvGeom {
        n: x[0],
        c: x[1],
        h: x[2],
        w: x[3],
        cout: w[0],
        kh: w[2],
        kw: w[3],
        groups: g,
        stride: spec.stride,
        padding: spec.padding,
        dilation: spec.dilation,
        ho: (x[2] + 2 * ph - span_h) / sh + 1,
        wo: (x[3] + 2 * pw - span_w) / sw + 1,
    })
}

fn params(g: &ConvGeom, n0: usize, chunk: usize) -> Params {
    Params::new()
        .usize(g.n)
        .usize(g.c)
        .usize(g.h)
        .usize(g.w)
        .usize(g.cout)
        .usize(g.kh)
        .usize(g.kw)
        .usize(g.groups)
        .usize(g.stride.0)
        .usize(g.stride.1)
        .usize(g.padding.0)
        .usize(g.padding.1)
        .usize(g.dilation.0)
        .usize(g.dilation.1)
        .usize(g.ho)
        .usize(g.wo)
        .usize(n0)
        .usize(chunk)
        .u32(0)
        .u32(0)
}

/// Bytes of the largest per-chunk buffer of the im2col path for `c` images: the columns
/// [K, c*P] (dX: their gradient; dW: read transposed), dY / Y [Cout, c*P] and its permuted copy,
/// each as `matmul_sg` may zero-pad it (rows and the contiguous axis to multiples of 4).
fn im2col_chunk_bytes(g: &ConvGeom, c: usize) -> u64 {
    let rows = g.kg().next_multiple_of(4).max(g.cout.next_multiple_of(4));
    4 * (rows * (c * g.p()).next_multiple_of(4)) as u64
}

/// Bytes of the largest buffer of the pointwise path for `c` images: X [c, Cin, P], Y / dY
/// [c, Cout, P], and either as `matmul_sg` zero-pads it (channels and P to multiples of 4).
fn pointwise_chunk_bytes(g: &ConvGeom, c: usize) -> u64 {
    let rows = g.c.next_multiple_of(4).max(g.cout.next_multiple_of(4));
    4 * (c * rows * g.p().next_multiple_of(4)) as u64
}

/// The most images (at least 1, at most N) whose chunk (`bytes(c)`) fits the binding limit `max`
/// (the adapter's `Gpu::max_binding_bytes`, lowered by `GpuOptions::max_binding_bytes` in
/// tests); an error when even one image does not fit.
fn chunk_images(max: u64, g: &ConvGeom, bytes: fn(&ConvGeom, usize) -> u64) -> Result<usize> {
    if bytes(g, 1) > max {
        return shape_err(
            "conv2d",
            format!(
                "one image of input {:?} (kernel {}x{}, {} -> {} channels) needs a {}-byte buffer; \
                 the adapter binds at most {max} bytes",
                [g.n, g.c, g.h, g.w],
                g.kh,
                g.kw,
                g.c,
                g.cout,
                bytes(g, 1)
            ),
        );
    }
    // bytes(c) grows with c: the largest c with bytes(c) <= max, by bisection.
    let (mut lo, mut hi) = (1, g.n.max(1));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if bytes(g, mid) <= max {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// What a GPU convolution needs of one storage binding, for the model's check before training
/// (`nn::ReidNet::check_binding_limit`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindingNeeds {
    /// Output shape [N, Cout, Ho, Wo].
    pub out_shape: Vec<usize>,
    /// Bytes per image of the buffers held whole for the batch (the input and output
    /// activations and their gradients): the batch fits while `batch * per_image <= limit`.
    pub per_image: u64,
    /// Bytes of the smallest chunk the op can split into (one image's im2col columns or padded
    /// pointwise operands; 0 for grouped convolutions), which must fit whatever the batch.
    pub min_chunk: u64,
    /// The convolution itself: input shape [N, C, H, W], weight shape and spec (what
    /// [`gemms`] lists the products of).
    pub input: Vec<usize>,
    pub weight: Vec<usize>,
    pub spec: Conv2dSpec,
}

/// The binding needs of `x` [N, C, H, W] convolved with weight `w` [Cout, C/groups, KH, KW].
/// Errors: the shapes do not make a convolution (as `Tensor::conv2d`).
pub fn binding_needs(x: &[usize], w: &[usize], spec: &Conv2dSpec) -> Result<BindingNeeds> {
    let g = geometry(x, w, spec)?;
    let per_image = 4 * (g.c * g.h * g.w).max(g.cout * g.p()) as u64;
    let min_chunk = if g.groups != 1 {
        0
    } else if is_pointwise(&g) {
        pointwise_chunk_bytes(&g, 1)
    } else {
        im2col_chunk_bytes(&g, 1)
    };
    Ok(BindingNeeds {
        out_shape: out_shape(&g),
        per_image,
        min_chunk,
        input: x.to_vec(),
        weight: w.to_vec(),
        spec: *spec,
    })
}

/// The matrix products a GPU device runs for one training step of `x` [N, C, H, W] convolved
/// with `w` [Cout, C, KH, KW] (groups 1; grouped convolutions run direct kernels and no
/// product), in order: the forward, then the input gradient (when `input_grad`), then the weight
/// gradient, each once per chunk of images that fits a binding limit of `max_binding` bytes,
/// labelled "forward", "input grad" and "weight grad". Lets a dry run count the workgroups of a
/// step on a device that is not here (`ops::matmul::launch_plan`); tests/split_k.rs checks the
/// list against the products a real step launches. Errors: the shapes do not make a
/// convolution, or one image's chunk exceeds `max_binding`.
pub fn gemms(
    x: &[usize],
    w: &[usize],
    spec: &Conv2dSpec,
    max_binding: u64,
    input_grad: bool,
) -> Result<Vec<(&'static str, MatmulDims)>> {
    let g = geometry(x, w, spec)?;
    if g.groups != 1 {
        return Ok(Vec::new());
    }
    let product = |batch, m, k, n, trans_a, trans_b, b_batched| MatmulDims {
        batch,
        m,
        k,
        n,
        trans_a,
        trans_b,
        a_batched: false,
        b_batched,
    };
    let chunks = |c: usize| (0..g.n).step_by(c).map(move |n0| c.min(g.n - n0));
    let mut out = Vec::new();
    let im2col = chunk_images(max_binding, &g, im2col_chunk_bytes)?;
    if is_pointwise(&g) {
        // by_chunks: one call on the whole batch when it fits.
        let c = chunk_images(max_binding, &g, pointwise_chunk_bytes)?.min(g.n);
        for c in chunks(c) {
            out.push((
                "forward",
                product(c, g.cout, g.c, g.p(), false, false, true),
            ));
        }
        if input_grad {
            for c in chunks(c) {
                out.push((
                    "input grad",
                    product(c, g.c, g.cout, g.p(), true, false, true),
                ));
            }
        }
    } else {
        for c in chunks(im2col) {
            out.push((
                "forward",
                product(1, g.cout, g.kg(), c * g.p(), false, false, false),
            ));
        }
    }
    let weight_grad = |c| product(1, g.cout, c * g.p(), g.kg(), false, true, false);
    for c in chunks(im2col) {
        // `backward_im2col_gpu`: each chunk's input gradient (not a pointwise one's: that is
        // listed above), then its weight gradient.
        if input_grad && !is_pointwise(&g) {
            out.push((
                "input grad",
                product(1, g.kg(), g.cout, c * g.p(), true, false, false),
            ));
        }
        out.push(("weight grad", weight_grad(c)));
    }
    Ok(out)
}

fn gpu_tensor(dev: &Device, shape: Vec<usize>, buf: crate::gpu::GpuBuffer) -> Tensor {
    Tensor::from_gpu(shape, DType::F32, dev, buf)
}

/// Invocations per workgroup of `im2col` / `col2im` (their `PIX_WG`), one column each.
const PIX_WG: usize = 128;
/// Rows of the column matrix per `im2col` workgroup (its `K_PER`): a column's pixel arithmetic
/// is shared by that many rows. 4 on GPUs (measured on the H200, issue 16); 32 on CPU adapters,
/// where each row is a per-lane scalar store and the column's divisions are the rest: lavapipe's
/// ResNet-18 b8 step spent 226 ms in im2col with 4 rows, 147-164 with 9, 116-119 with 32 and 64
/// (issue 14).
fn im2col_rows(gpu: &Gpu) -> usize {
    if gpu.cpu_shapes() {
        32
    } else {
        4
    }
}

/// Channels per `col2im` workgroup (its `C_PER`), which share a pixel's divisions: 1 on GPUs; 16
/// on CPU adapters (lavapipe's ResNet-18 b8 step: 78 ms of col2im with 1, issue 14).
fn col2im_channels(gpu: &Gpu) -> usize {
    if gpu.cpu_shapes() {
        16
    } else {
        1
    }
}

/// The `STRIDE` constant of `col2im` / `conv_direct_dx`: the stride when both dims share it (the
/// shader compiler then folds the per-tap division), else 0 (each dim's from the parameters).
fn tap_stride(g: &ConvGeom) -> u32 {
    match g.stride {
        (sh, sw) if sh == sw => sh as u32,
        _ => 0,
    }
}

/// `kernel` with its workgroup size [`PIX_WG`], and its grid: x over `columns` in workgroups of
/// [`PIX_WG`], y over `row_blocks`, each at most 65,535 (WebGPU's per-dimension limit; the kernels
/// loop over the rest).
fn column_grid(kernel: Kernel, columns: usize, row_blocks: usize) -> (Kernel, [u32; 3]) {
    const MAX: usize = 65_535;
    let kernel = kernel.with("PIX_WG", PIX_WG as u32);
    let grid = [
        columns.div_ceil(PIX_WG).clamp(1, MAX) as u32,
        row_blocks.clamp(1, MAX) as u32,
        1,
    ];
    (kernel, grid)
}

/// Columns [K, chunk*P] of images n0..n0+chunk.
fn im2col_gpu(
    gpu: &Arc<Gpu>,
    dev: &Device,
    x: &Tensor,
    g: &ConvGeom,
    n0: usize,
    chunk: usize,
) -> Result<Tensor> {
    let n = g.kg() * chunk * g.p();
    let cols = alloc_f32(gpu, n, "conv2d im2col columns")?;
    let rows = im2col_rows(gpu);
    let (kernel, grid) = column_grid(
        Kernel::new("conv2d", "im2col").with("K_PER", rows as u32),
        chunk * g.p(),
        g.kg().div_ceil(rows),
    );
    gpu.dispatch(
        &kernel,
        params(g, n0, chunk).bytes(),
        &[x.gpu_buffer().unwrap(), &cols],
        grid,
    )?;
    Ok(gpu_tensor(dev, vec![g.kg(), chunk * g.p()], cols))
}

fn direct_gpu(
    entry: &'static str,
    a: &Tensor,
    b: &Tensor,
    g: &ConvGeom,
    out_shape: Vec<usize>,
) -> Result<Tensor> {
    let dev = a.device();
    let gpu = dev.as_gpu().unwrap();
    let n: usize = out_shape.iter().product();
    let out = alloc_f32(gpu, n, entry)?;
    let kernel = Kernel::new("conv2d", entry);
    // conv_direct_dw: one workgroup per weight element. The others: one invocation per run of
    // an output plane's pixels (out_shape is [N, C, H, W]).
    let run = gpu.run_length();
    let runs = || {
        let plane = out_shape[2] * out_shape[3];
        grid_1d(
            (out_shape[0] * out_shape[1] * plane.div_ceil(run as usize)) as u32,
            256,
        )
    };
    let (kernel, groups) = match entry {
        "conv_direct_dw" => (
            kernel.with("DW_WG", gpu.reduction_workgroup()),
            grid_1d(n as u32, 1),
        ),
        "conv_direct_dx" => (
            kernel.with("RUN", run).with("STRIDE", tap_stride(g)),
            runs(),
        ),
        _ => (kernel.with("RUN", run), runs()),
    };
    gpu.dispatch(
        &kernel,
        params(g, 0, g.n).bytes(),
        &[a.gpu_buffer().unwrap(), b.gpu_buffer().unwrap(), &out],
        groups,
    )?;
    Ok(gpu_tensor(dev, out_shape, out))
}

fn out_shape(g: &ConvGeom) -> Vec<usize> {
    vec![g.n, g.cout, g.ho, g.wo]
}

/// A 1x1, stride-1, unpadded, ungrouped convolution is a GEMM on the input as it lies: no im2col.
fn is_pointwise(g: &ConvGeom) -> bool {
    g.kh == 1 && g.kw == 1 && g.stride == (1, 1) && g.padding == (0, 0) && g.groups == 1
}

fn forward_raw(x: &Tensor, w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let dev = x.device();
    match dev {
        // W [Cout, Cin] x x[n] [Cin, P] for every n at once -> [N, Cout, P], already NCHW.
        Device::Gpu(gpu) if is_pointwise(g) => no_grad(|| {
            let w2 = w.detach().reshape(&[g.cout, g.c])?;
            by_chunks(gpu, g, x, |xc, c| {
                w2.matmul(&xc.reshape(&[c, g.c, g.p()])?)?
                    .reshape(&[c, g.cout, g.ho, g.wo])
            })
        }),
        Device::Gpu(gpu) if g.groups == 1 => no_grad(|| {
            let chunk = chunk_images(gpu.max_binding_bytes(), g, im2col_chunk_bytes)?;
            let w2 = w.detach().reshape(&[g.cout, g.kg()])?;
            let mut parts = Vec::new();
            for n0 in (0..g.n).step_by(chunk) {
                let c = chunk.min(g.n - n0);
                let cols = im2col_gpu(gpu, dev, x, g, n0, c)?;
                // [Cout, c*P] -> [c, Cout, P]
                let y = w2.matmul(&cols)?;
                let y = if c == 1 {
                    y
                } else {
                    y.reshape(&[g.cout, c, g.p()])?.permute(&[1, 0, 2])?
                };
                parts.push(y.reshape(&[c, g.cout, g.ho, g.wo])?);
            }
            if parts.len() == 1 {
                Ok(parts.pop().unwrap())
            } else {
                Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)
            }
        }),
        Device::Gpu(_) => direct_gpu("conv_direct", x, w, g, out_shape(g)),
        Device::Cpu => {
            let data = cpu::fast::conv2d::forward(f32::slice(x), f32::slice(w), g);
            Ok(Tensor::from_host_f32(out_shape(g), dev, data))
        }
        Device::CpuF64 => {
            let data = host_float2!(x, w, |xv, wv| cpu::conv2d::forward(xv, wv, g));
            Ok(Tensor::from_parts(
                out_shape(g),
                DType::F32,
                dev.clone(),
                data,
            ))
        }
    }
}

/// A pointwise convolution (or its input gradient) of `t` [N, ..] run on chunks of images that
/// fit the binding limit (`pointwise_chunk_bytes`), concatenated over the batch; one call on the
/// whole batch when it fits. `f(chunk, images)` returns the chunk's result [images, ..].
fn by_chunks(
    gpu: &Gpu,
    g: &ConvGeom,
    t: &Tensor,
    f: impl Fn(&Tensor, usize) -> Result<Tensor>,
) -> Result<Tensor> {
    let chunk = chunk_images(gpu.max_binding_bytes(), g, pointwise_chunk_bytes)?;
    if chunk >= g.n {
        return f(&t.detach(), g.n);
    }
    let mut parts = Vec::new();
    for n0 in (0..g.n).step_by(chunk) {
        let c = chunk.min(g.n - n0);
        parts.push(f(&t.detach().narrow(0, n0, c)?, c)?);
    }
    Tensor::concat(&parts.iter().collect::<Vec<_>>(), 0)
}

/// dL/dx from dL/dy (on the GPU: pointwise and grouped convolutions; the others'
/// are [`backward_im2col_gpu`]'s).
fn backward_input_raw(dy: &Tensor, w: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let dev = dy.device();
    let x_shape = vec![g.n, g.c, g.h, g.w];
    match dev {
        // W^T [Cin, Cout] x dY[n] [Cout, P] -> [N, Cin, P].
        Device::Gpu(gpu) if is_pointwise(g) => no_grad(|| {
            let w2 = w.detach().reshape(&[g.cout, g.c])?;
            by_chunks(gpu, g, dy, |dyc, c| {
                w2.matmul_t(&dyc.reshape(&[c, g.cout, g.p()])?, true, false)?
                    .reshape(&[c, g.c, g.h, g.w])
            })
        }),
        Device::Gpu(_) => direct_gpu("conv_direct_dx", dy, w, g, x_shape),
        Device::Cpu => {
            let data = cpu::fast::conv2d::backward_input(f32::slice(dy), f32::slice(w), g);
            Ok(Tensor::from_host_f32(x_shape, dev, data))
        }
        Device::CpuF64 => {
            let data = host_float2!(dy, w, |d, wv| cpu::conv2d::backward_input(d, wv, g));
            Ok(Tensor::from_parts(x_shape, DType::F32, dev.clone(), data))
        }
    }
}

/// The GPU's im2col-path gradients of an ungrouped convolution: dL/dx [N, C, H, W] when
/// `need_dx` (W^T x dY per chunk, then col2im; not asked for pointwise convolutions, whose dX is
/// one batched product) and dL/dW [Cout, C, KH, KW] when `need_dw` (dY x cols^T summed over
/// chunks), in one pass over the chunks of images that fit the binding limit, so each chunk's dY
/// is permuted to [Cout, c*P] once for both products.
fn backward_im2col_gpu(
    gpu: &Arc<Gpu>,
    dy: &Tensor,
    x: &Tensor,
    w: &Tensor,
    g: &ConvGeom,
    (need_dx, need_dw): (bool, bool),
) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if !need_dx && !need_dw {
        return Ok((None, None));
    }
    no_grad(|| {
        let dev = dy.device();
        let chunk = chunk_images(gpu.max_binding_bytes(), g, im2col_chunk_bytes)?;
        let w2 = w.detach().reshape(&[g.cout, g.kg()])?;
        let mut dx_parts = Vec::new();
        let mut dw: Option<Tensor> = None;
        for n0 in (0..g.n).step_by(chunk) {
            let c = chunk.min(g.n - n0);
            let dyc = dy_chunk(dy, g, n0, c)?;
            if need_dx {
                let dcols = w2.matmul_t(&dyc, true, false)?; // [K, c*P]
                let dx = alloc_f32(gpu, c * g.c * g.h * g.w, "conv2d col2im")?;
                let channels = col2im_channels(gpu);
                let (kernel, grid) = column_grid(
                    Kernel::new("conv2d", "col2im")
                        .with("STRIDE", tap_stride(g))
                        .with("C_PER", channels as u32),
                    c * g.h * g.w,
                    g.c.div_ceil(channels),
                );
                gpu.dispatch(
                    &kernel,
                    params(g, n0, c).bytes(),
                    &[dcols.gpu_buffer().unwrap(), &dx],
                    grid,
                )?;
                dx_parts.push(gpu_tensor(dev, vec![c, g.c, g.h, g.w], dx));
            }
            if need_dw {
                let cols = im2col_gpu(gpu, dev, x, g, n0, c)?;
                let part = dyc.matmul_t(&cols, false, true)?; // [Cout, K]
                dw = Some(match dw {
                    Some(acc) => acc.add(&part)?,
                    None => part,
                });
            }
        }
        let dx = match dx_parts.len() {
            0 => None,
            1 => dx_parts.pop(),
            _ => Some(Tensor::concat(&dx_parts.iter().collect::<Vec<_>>(), 0)?),
        };
        let dw = dw
            .map(|t| t.reshape(&[g.cout, g.cin_g(), g.kh, g.kw]))
            .transpose()?;
        Ok((dx, dw))
    })
}

/// dY of images n0..n0+c as [Cout, c*P].
fn dy_chunk(dy: &Tensor, g: &ConvGeom, n0: usize, c: usize) -> Result<Tensor> {
    let part = if c == g.n {
        dy.clone()
    } else {
        dy.narrow(0, n0, c)?
    };
    if c == 1 {
        part.reshape(&[g.cout, g.p()])
    } else {
        part.reshape(&[c, g.cout, g.p()])?
            .permute(&[1, 0, 2])?
            .reshape(&[g.cout, c * g.p()])
    }
}

/// dL/dW from dL/dy and x (on the GPU: grouped convolutions; ungrouped ones' are
/// [`backward_im2col_gpu`]'s).
fn backward_weight_raw(dy: &Tensor, x: &Tensor, g: &ConvGeom) -> Result<Tensor> {
    let dev = dy.device();
    let w_shape = vec![g.cout, g.cin_g(), g.kh, g.kw];
    match dev {
        Device::Gpu(_) => direct_gpu("conv_direct_dw", dy, x, g, w_shape),
        Device::Cpu => {
            let data = cpu::fast::conv2d::backward_weight(f32::slice(dy), f32::slice(x), g);
            Ok(Tensor::from_host_f32(w_shape, dev, data))
        }
        Device::CpuF64 => {
            let data = host_float2!(dy, x, |d, xv| cpu::conv2d::backward_weight(d, xv, g));
            Ok(Tensor::from_parts(w_shape, DType::F32, dev.clone(), data))
        }
    }
}

impl Tensor {
    /// 2-D convolution of this [N, C, H, W] tensor with `weight` [Cout, C/groups, KH, KW] and an
    /// optional `bias` [Cout] (cross-correlation, as torch.nn.functional.conv2d).
    pub fn conv2d(
        &self,
        weight: &Tensor,
        bias: Option<&Tensor>,
        spec: Conv2dSpec,
    ) -> Result<Tensor> {
        same_device("conv2d", &[self, weight])?;
        self.expect_dtype("conv2d", DType::F32)?;
        weight.expect_dtype("conv2d", DType::F32)?;
        let g = geometry(self.shape(), weight.shape(), &spec)?;
        let out = forward_raw(self, weight, &g)?;
        let (x, w) = (self.detach(), weight.detach());
        let y = record(out, "conv2d", &[self, weight], move |dy, needs| {
            if let Device::Gpu(gpu) = dy.device() {
                if g.groups == 1 {
                    // A pointwise convolution's dX is one batched product (no col2im); its dW
                    // takes the im2col path like every other ungrouped convolution's.
                    let pointwise = is_pointwise(&g);
                    let dx_pointwise = (pointwise && needs[0])
                        .then(|| backward_input_raw(dy, &w, &g))
                        .transpose()?;
                    let needs_im2col = (needs[0] && !pointwise, needs[1]);
                    let (dx, dw) = backward_im2col_gpu(gpu, dy, &x, &w, &g, needs_im2col)?;
                    return Ok(vec![dx_pointwise.or(dx), dw]);
                }
            }
            Ok(vec![
                needs[0]
                    .then(|| backward_input_raw(dy, &w, &g))
                    .transpose()?,
                needs[1]
                    .then(|| backward_weight_raw(dy, &x, &g))
                    .transpose()?,
            ])
        });
        match bias {
            None => Ok(y),
            Some(b) => {
                if b.shape() != [g.cout] {
                    return shape_err(
                        "conv2d",
                        format!("bias shape {:?} should be [{}]", b.shape(), g.cout),
                    );
                }
                y.add(&b.reshape(&[1, g.cout, 1, 1])?)
            }
        }
    }
}
