// Fused optimiser updates, in place: one dispatch per parameter tensor, every state tensor read and
// written once, into its own buffer (so parameters and moments keep their buffers step after step
// and the runtime's cached bind groups keep matching). Update forms follow torch.optim exactly
// (see src/cpu/optim.rs for the same in plain Rust).
// Workgroup 256, 1-D index folded into a 2-D grid, bounds-checked against n.

fn linear(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// adam: bindings 1 = param (in/out), 2 = m (in/out), 3 = v (in/out), 4 = grad.
// torch.optim.Adam (no amsgrad): g += wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), bc_i = 1 - b_i^t.
struct AdamParams { n: u32, lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, bc1: f32, bc2_sqrt: f32 }
@group(0) @binding(0) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read_write> a_p: array<f32>;
@group(0) @binding(2) var<storage, read_write> a_m: array<f32>;
@group(0) @binding(3) var<storage, read_write> a_v: array<f32>;
@group(0) @binding(4) var<storage, read> a_g: array<f32>;

@compute @workgroup_size(256)
fn adam(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear(wid, nwg, lid);
    if (i >= ap.n) { return; }
    let p = a_p[i];
    let g = a_g[i] + ap.weight_decay * p;
    let m = ap.beta1 * a_m[i] + (1.0 - ap.beta1) * g;
    let v = ap.beta2 * a_v[i] + (1.0 - ap.beta2) * g * g;
    let denom = sqrt(v) / ap.bc2_sqrt + ap.eps;
    a_p[i] = p - (ap.lr / ap.bc1) * m / denom;
    a_m[i] = m;
    a_v[i] = v;
}

// sgd: bindings 1 = param (in/out), 2 = momentum buffer (in/out), 3 = grad.
// torch.optim.SGD: g += wd*p; buf = first ? g : mu buf + (1-dampening) g;
// step = nesterov ? g + mu buf : buf; p -= lr * step. (momentum 0: buf unused, step = g.)
struct SgdParams { n: u32, lr: f32, momentum: f32, dampening: f32, weight_decay: f32, nesterov: u32, first: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> sp: SgdParams;
@group(0) @binding(1) var<storage, read_write> s_p: array<f32>;
@group(0) @binding(2) var<storage, read_write> s_buf: array<f32>;
@group(0) @binding(3) var<storage, read> s_g: array<f32>;

@compute @workgroup_size(256)
fn sgd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear(wid, nwg, lid);
    if (i >= sp.n) { return; }
    let p = s_p[i];
    let g = s_g[i] + sp.weight_decay * p;
    var buf = g;
    if (sp.first == 0u) { buf = sp.momentum * s_buf[i] + (1.0 - sp.dampening) * g; }
    var step = buf;
    if (sp.nesterov == 1u) { step = g + sp.momentum * buf; }
    if (sp.momentum == 0.0) { step = g; }
    s_p[i] = p - sp.lr * step;
    s_buf[i] = buf;
}

// ema: bindings 1 = mean (teacher) values (in/out), 2 = student values. mean = a*mean + (1-a)*student.
struct EmaParams { n: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> ep: EmaParams;
@group(0) @binding(1) var<storage, read_write> e_mean: array<f32>;
@group(0) @binding(2) var<storage, read> e_student: array<f32>;

@compute @workgroup_size(256)
fn ema(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear(wid, nwg, lid);
    if (i >= ep.n) { return; }
    e_mean[i] = ep.alpha * e_mean[i] + (1.0 - ep.alpha) * e_student[i];
}
