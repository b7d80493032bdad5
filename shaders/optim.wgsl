// Fused optimiser updates, in place: one dispatch per parameter tensor, every state tensor read and
// written once, into its own buffer (so parameters and moments keep their buffers step after step
// and the runtime's cached bind groups keep matching). Update forms follow torch.optim exactly
// (see src/cpu/optim.rs for the same in plain Rust).
// Workgroup 256, 1-D index folded into a 2-D grid, bounds-checked against n.

fn linear(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

// The Adam step `adam`, `adam4` and `adam_multi` take, torch.optim.Adam (no amsgrad):
// g += wd*p; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps), bc_i = 1 - b_i^t.
struct AdamHyper { lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, bc1: f32, bc2_sqrt: f32 }

// (param, m, v) after one step of an element with param p, gradient g0 and moments m0, v0.
fn adam_step(h: AdamHyper, p: f32, g0: f32, m0: f32, v0: f32) -> vec3<f32> {
    let g = g0 + h.weight_decay * p;
    let m = h.beta1 * m0 + (1.0 - h.beta1) * g;
    let v = h.beta2 * v0 + (1.0 - h.beta2) * g * g;
    let denom = sqrt(v) / h.bc2_sqrt + h.eps;
    return vec3<f32>(p - (h.lr / h.bc1) * m / denom, m, v);
}

// adam: bindings 1 = param (in/out), 2 = m (in/out), 3 = v (in/out), 4 = grad; `adam_step`.
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
    let h = AdamHyper(ap.lr, ap.beta1, ap.beta2, ap.eps, ap.weight_decay, ap.bc1, ap.bc2_sqrt);
    let r = adam_step(h, a_p[i], a_g[i], a_m[i], a_v[i]);
    a_p[i] = r.x;
    a_m[i] = r.y;
    a_v[i] = r.z;
}

// adam4: `adam` on tensors of a multiple of 4 elements, four per invocation through vec4 bindings
// (ap.n counts vec4s): on CPU adapters each storage access is a per-lane loop whatever its width,
// so a vec4 moves four elements for the price of one (src/ops/optim.rs picks it there). Same
// arithmetic per element (`adam_step`). Bindings as `adam`.
@group(0) @binding(1) var<storage, read_write> a4_p: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> a4_m: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> a4_v: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> a4_g: array<vec4<f32>>;

@compute @workgroup_size(256)
fn adam4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = linear(wid, nwg, lid);
    if (i >= ap.n) { return; }
    let h = AdamHyper(ap.lr, ap.beta1, ap.beta2, ap.eps, ap.weight_decay, ap.bc1, ap.bc2_sqrt);
    let p = a4_p[i];
    let g = a4_g[i];
    let m = a4_m[i];
    let v = a4_v[i];
    let r0 = adam_step(h, p.x, g.x, m.x, v.x);
    let r1 = adam_step(h, p.y, g.y, m.y, v.y);
    let r2 = adam_step(h, p.z, g.z, m.z, v.z);
    let r3 = adam_step(h, p.w, g.w, m.w, v.w);
    a4_p[i] = vec4<f32>(r0.x, r1.x, r2.x, r3.x);
    a4_m[i] = vec4<f32>(r0.y, r1.y, r2.y, r3.y);
    a4_v[i] = vec4<f32>(r0.z, r1.z, r2.z, r3.z);
}

// adam_multi: the Adam update of up to 7 tensors in one dispatch (multi-tensor Adam, as
// torch.optim.Adam(foreach=True) / apex's multi_tensor_apply). Slot k binds 4k+1 = param (in/out),
// 4k+2 = m (in/out), 4k+3 = v (in/out), 4k+4 = grad; slots past `slots` bind 1-float dummies and
// get no workgroups. Slot k owns the workgroups [start_k, start_{k+1}) of the linear grid, 256
// elements each; its own bias corrections (steps may differ per tensor). Same update as `adam`
// (`adam_step`).
// Workgroup 256, linear workgroup index folded into a 2-D grid.
struct AdamSlot { n: u32, start: u32, bc1: f32, bc2_sqrt: f32 }
struct AdamMultiParams { lr: f32, beta1: f32, beta2: f32, eps: f32, weight_decay: f32, slots: u32, _pad0: u32, _pad1: u32, s: array<AdamSlot, 7> }
@group(0) @binding(0) var<uniform> mp: AdamMultiParams;
@group(0) @binding(1) var<storage, read_write> t0_p: array<f32>;
@group(0) @binding(2) var<storage, read_write> t0_m: array<f32>;
@group(0) @binding(3) var<storage, read_write> t0_v: array<f32>;
@group(0) @binding(4) var<storage, read> t0_g: array<f32>;
@group(0) @binding(5) var<storage, read_write> t1_p: array<f32>;
@group(0) @binding(6) var<storage, read_write> t1_m: array<f32>;
@group(0) @binding(7) var<storage, read_write> t1_v: array<f32>;
@group(0) @binding(8) var<storage, read> t1_g: array<f32>;
@group(0) @binding(9) var<storage, read_write> t2_p: array<f32>;
@group(0) @binding(10) var<storage, read_write> t2_m: array<f32>;
@group(0) @binding(11) var<storage, read_write> t2_v: array<f32>;
@group(0) @binding(12) var<storage, read> t2_g: array<f32>;
@group(0) @binding(13) var<storage, read_write> t3_p: array<f32>;
@group(0) @binding(14) var<storage, read_write> t3_m: array<f32>;
@group(0) @binding(15) var<storage, read_write> t3_v: array<f32>;
@group(0) @binding(16) var<storage, read> t3_g: array<f32>;
@group(0) @binding(17) var<storage, read_write> t4_p: array<f32>;
@group(0) @binding(18) var<storage, read_write> t4_m: array<f32>;
@group(0) @binding(19) var<storage, read_write> t4_v: array<f32>;
@group(0) @binding(20) var<storage, read> t4_g: array<f32>;
@group(0) @binding(21) var<storage, read_write> t5_p: array<f32>;
@group(0) @binding(22) var<storage, read_write> t5_m: array<f32>;
@group(0) @binding(23) var<storage, read_write> t5_v: array<f32>;
@group(0) @binding(24) var<storage, read> t5_g: array<f32>;
@group(0) @binding(25) var<storage, read_write> t6_p: array<f32>;
@group(0) @binding(26) var<storage, read_write> t6_m: array<f32>;
@group(0) @binding(27) var<storage, read_write> t6_v: array<f32>;
@group(0) @binding(28) var<storage, read> t6_g: array<f32>;

// (param, m, v) after one Adam step of slot k's element with these old values (`adam_step`).
fn adam_one(p: f32, g0: f32, m0: f32, v0: f32, k: u32) -> vec3<f32> {
    let h = AdamHyper(mp.lr, mp.beta1, mp.beta2, mp.eps, mp.weight_decay, mp.s[k].bc1, mp.s[k].bc2_sqrt);
    return adam_step(h, p, g0, m0, v0);
}

@compute @workgroup_size(256)
fn adam_multi(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = wid.y * nwg.x + wid.x;
    var k = 0u;
    for (var j = 1u; j < mp.slots; j = j + 1u) {
        if (w >= mp.s[j].start) { k = j; }
    }
    let i = (w - mp.s[k].start) * 256u + lid.x;
    if (k >= mp.slots || i >= mp.s[k].n) { return; }
    switch k {
        case 0u: {
            let r = adam_one(t0_p[i], t0_g[i], t0_m[i], t0_v[i], k);
            t0_p[i] = r.x; t0_m[i] = r.y; t0_v[i] = r.z;
        }
        case 1u: {
            let r = adam_one(t1_p[i], t1_g[i], t1_m[i], t1_v[i], k);
            t1_p[i] = r.x; t1_m[i] = r.y; t1_v[i] = r.z;
        }
        case 2u: {
            let r = adam_one(t2_p[i], t2_g[i], t2_m[i], t2_v[i], k);
            t2_p[i] = r.x; t2_m[i] = r.y; t2_v[i] = r.z;
        }
        case 3u: {
            let r = adam_one(t3_p[i], t3_g[i], t3_m[i], t3_v[i], k);
            t3_p[i] = r.x; t3_m[i] = r.y; t3_v[i] = r.z;
        }
        case 4u: {
            let r = adam_one(t4_p[i], t4_g[i], t4_m[i], t4_v[i], k);
            t4_p[i] = r.x; t4_m[i] = r.y; t4_v[i] = r.z;
        }
        case 5u: {
            let r = adam_one(t5_p[i], t5_g[i], t5_m[i], t5_v[i], k);
            t5_p[i] = r.x; t5_m[i] = r.y; t5_v[i] = r.z;
        }
        case 6u: {
            let r = adam_one(t6_p[i], t6_g[i], t6_m[i], t6_v[i], k);
            t6_p[i] = r.x; t6_m[i] = r.y; t6_v[i] = r.z;
        }
        default: {}
    }
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
