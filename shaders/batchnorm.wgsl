// Batch normalisation over x viewed as [N, C, S] (S = H*W for 2-D inputs, 1 for [N, C]).
//
// bn_stats:      one workgroup (256) per channel: mean, then the biased variance (two passes).
//                Bindings 1 x, 2 mean [C], 3 var [C]. Dispatch: C workgroups (2-D folded).
// bn_stats_running: bn_stats, and the running statistics updated in place in the same pass
//                (torch.nn.BatchNorm, momentum m): rmean = (1 - m) rmean + m mean,
//                rvar = (1 - m) rvar + m var * unbias (unbias = M / (M - 1), M = N*S, from the host).
//                Bindings 1 x, 2 mean [C], 3 var [C], 4 running mean [C] (in/out),
//                5 running var [C] (in/out). Dispatch: C workgroups (2-D folded).
// bn_apply:      y = act((x - mean) / sqrt(var + eps) * gamma + beta) (batch or running
//                statistics; act by ACT, torch.nn.BatchNorm2d then ReLU / ReLU6).
//                Bindings 1 x, 2 mean, 3 var, 4 gamma, 5 beta, 6 y. One invocation per element.
// bn_bwd_reduce: per channel sum(g') and sum(g' * xhat), g' = g masked by the activation's
//                derivative at the forward's output y (g itself for ACT = 0). Bindings 1 x, 2 g,
//                3 y (any read-only buffer of N*C*S floats, unread, for ACT = 0), 4 mean, 5 var,
//                6 sum_g [C], 7 sum_gx [C]. One workgroup per channel.
// bn_bwd_apply:  TRAIN = 1: dx = gamma * invstd * (g' - sum_g / M - xhat * sum_gx / M), M = N*S;
//                TRAIN = 0 (running statistics are constants): dx = g' * gamma * invstd.
//                Bindings 1 x, 2 g, 3 y (as bn_bwd_reduce), 4 mean, 5 var, 6 gamma, 7 sum_g,
//                8 sum_gx, 9 dx.
//
// ACT (the activation fused into the epilogue, cpu::elementwise::Activation): 0 none,
// 1 ReLU max(v, 0), 2 ReLU6 min(max(v, 0), 6); the backward's mask from the output y: ReLU 0 < y,
// ReLU6 0 < y < 6 (elementwise.wgsl's relu_backward, zero at the kinks).

override TRAIN: u32 = 1u;
override ACT: u32 = 0u;

fn activate(v: f32) -> f32 {
    if (ACT == 1u) { return max(v, 0.0); }
    if (ACT == 2u) { return min(max(v, 0.0), 6.0); }
    return v;
}

// The gradient g through the activation, given the forward's output y.
fn act_grad(g: f32, y: f32) -> f32 {
    if (ACT == 0u) { return g; }
    let pass_through = y > 0.0 && (ACT == 1u || y < 6.0);
    return select(0.0, g, pass_through);
}

struct Params { n: u32, c: u32, s: u32, eps: f32, momentum: f32, unbias: f32 }
@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

fn elem(i: u32, c: u32) -> u32 {
    return ((i / p.s) * p.c + c) * p.s + i % p.s;
}

fn tree2(lid: u32) {
    workgroupBarrier();
    for (var k = WG / 2u; k > 0u; k = k >> 1u) {
        if (lid < k) {
            red_a[lid] = red_a[lid] + red_a[lid + k];
            red_b[lid] = red_b[lid] + red_b[lid + k];
        }
        workgroupBarrier();
    }
}

@group(0) @binding(1) var<storage, read> st_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> st_mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> st_var: array<f32>;

// Mean and biased variance of channel c (two passes), the same in every invocation of the
// workgroup. Called in uniform control flow (it has barriers).
fn channel_stats(c: u32, lid: u32) -> vec2<f32> {
    let valid = c < p.c;
    let m = p.n * p.s;
    var s = 0.0;
    if (valid) {
        for (var i = lid; i < m; i = i + WG) { s = s + st_x[elem(i, c)]; }
    }
    red_a[lid] = s;
    red_b[lid] = 0.0;
    tree2(lid);
    let mean = red_a[0] / f32(max(m, 1u));
    workgroupBarrier();
    var q = 0.0;
    if (valid) {
        for (var i = lid; i < m; i = i + WG) {
            let d = st_x[elem(i, c)] - mean;
            q = q + d * d;
        }
    }
    red_a[lid] = 0.0;
    red_b[lid] = q;
    tree2(lid);
    return vec2<f32>(mean, red_b[0] / f32(max(m, 1u)));
}

@compute @workgroup_size(256)
fn bn_stats(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.y * nwg.x + wid.x;
    let mv = channel_stats(c, lid.x);
    if (c < p.c && lid.x == 0u) {
        st_mean[c] = mv.x;
        st_var[c] = mv.y;
    }
}

@group(0) @binding(4) var<storage, read_write> st_rmean: array<f32>;
@group(0) @binding(5) var<storage, read_write> st_rvar: array<f32>;

@compute @workgroup_size(256)
fn bn_stats_running(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.y * nwg.x + wid.x;
    let mv = channel_stats(c, lid.x);
    if (c < p.c && lid.x == 0u) {
        st_mean[c] = mv.x;
        st_var[c] = mv.y;
        st_rmean[c] = (1.0 - p.momentum) * st_rmean[c] + p.momentum * mv.x;
        st_rvar[c] = (1.0 - p.momentum) * st_rvar[c] + p.momentum * mv.y * p.unbias;
    }
}

@group(0) @binding(1) var<storage, read> ap_x: array<f32>;
@group(0) @binding(2) var<storage, read> ap_mean: array<f32>;
@group(0) @binding(3) var<storage, read> ap_var: array<f32>;
@group(0) @binding(4) var<storage, read> ap_gamma: array<f32>;
@group(0) @binding(5) var<storage, read> ap_beta: array<f32>;
@group(0) @binding(6) var<storage, read_write> ap_y: array<f32>;

@compute @workgroup_size(256)
fn bn_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (t >= p.n * p.c * p.s) { return; }
    let c = (t / p.s) % p.c;
    let invstd = 1.0 / sqrt(ap_var[c] + p.eps);
    ap_y[t] = activate((ap_x[t] - ap_mean[c]) * invstd * ap_gamma[c] + ap_beta[c]);
}

@group(0) @binding(1) var<storage, read> br_x: array<f32>;
@group(0) @binding(2) var<storage, read> br_g: array<f32>;
@group(0) @binding(3) var<storage, read> br_y: array<f32>;
@group(0) @binding(4) var<storage, read> br_mean: array<f32>;
@group(0) @binding(5) var<storage, read> br_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> br_sum_g: array<f32>;
@group(0) @binding(7) var<storage, read_write> br_sum_gx: array<f32>;

@compute @workgroup_size(256)
fn bn_bwd_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = wid.y * nwg.x + wid.x;
    let valid = c < p.c;
    var sg = 0.0;
    var sgx = 0.0;
    if (valid) {
        let mean = br_mean[c];
        let invstd = 1.0 / sqrt(br_var[c] + p.eps);
        for (var i = lid.x; i < p.n * p.s; i = i + WG) {
            let e = elem(i, c);
            let gv = act_grad(br_g[e], br_y[e]);
            sg = sg + gv;
            sgx = sgx + gv * (br_x[e] - mean) * invstd;
        }
    }
    red_a[lid.x] = sg;
    red_b[lid.x] = sgx;
    tree2(lid.x);
    if (valid && lid.x == 0u) {
        br_sum_g[c] = red_a[0];
        br_sum_gx[c] = red_b[0];
    }
}

@group(0) @binding(1) var<storage, read> ba_x: array<f32>;
@group(0) @binding(2) var<storage, read> ba_g: array<f32>;
@group(0) @binding(3) var<storage, read> ba_y: array<f32>;
@group(0) @binding(4) var<storage, read> ba_mean: array<f32>;
@group(0) @binding(5) var<storage, read> ba_var: array<f32>;
@group(0) @binding(6) var<storage, read> ba_gamma: array<f32>;
@group(0) @binding(7) var<storage, read> ba_sum_g: array<f32>;
@group(0) @binding(8) var<storage, read> ba_sum_gx: array<f32>;
@group(0) @binding(9) var<storage, read_write> ba_dx: array<f32>;

@compute @workgroup_size(256)
fn bn_bwd_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (t >= p.n * p.c * p.s) { return; }
    let c = (t / p.s) % p.c;
    let invstd = 1.0 / sqrt(ba_var[c] + p.eps);
    let scale = ba_gamma[c] * invstd;
    let gv = act_grad(ba_g[t], ba_y[t]);
    if (TRAIN == 1u) {
        let m = f32(p.n * p.s);
        let xhat = (ba_x[t] - ba_mean[c]) * invstd;
        ba_dx[t] = scale * (gv - ba_sum_g[c] / m - xhat * ba_sum_gx[c] / m);
    } else {
        ba_dx[t] = gv * scale;
    }
}
