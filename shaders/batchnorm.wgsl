// Batch normalisation over x viewed as [N, C, S] (S = H*W for 2-D inputs, 1 for [N, C]).
//
// bn_stats:      one workgroup (RED_WG invocations) per channel: mean, then the biased variance
//                (two passes).
//                Bindings 1 x, 2 mean [C], 3 var [C]. Dispatch: C workgroups (2-D folded).
// bn_stats_running: bn_stats, and the running statistics updated in place in the same pass
//                (torch.nn.BatchNorm, momentum m): rmean = (1 - m) rmean + m mean,
//                rvar = (1 - m) rvar + m var * unbias (unbias = M / (M - 1), M = N*S, from the host).
//                Bindings 1 x, 2 mean [C], 3 var [C], 4 running mean [C] (in/out),
//                5 running var [C] (in/out). Dispatch: C workgroups (2-D folded).
// bn_apply:      y = act((x - mean) / sqrt(var + eps) * gamma + beta) (batch or running
//                statistics; act by ACT, torch.nn.BatchNorm2d then ReLU / ReLU6).
//                Bindings 1 x, 2 mean, 3 var, 4 gamma, 5 beta, 6 y. One invocation per run of RUN
//                elements of a plane (see `run_of`), as the bn_bwd_apply forms.
// bn_bwd_reduce: per channel sum(g') and sum(g' * xhat), g' = g masked by the activation's
//                derivative at the forward's output y (g itself for ACT = 0). Bindings 1 x, 2 g,
//                3 y (any read-only buffer of N*C*S floats, unread, for ACT = 0), 4 mean, 5 var,
//                6 sum_g [C*P], 7 sum_gx [C*P]. P = p.parts workgroups per channel: workgroup
//                c*P + k sums the k-th of P equal chunks of channel c's M values (P = 1: the whole
//                channel, the final sums; else partial sums for bn_bwd_combine).
// bn_bwd_combine: sum_g[c] = sum_k part_g[c*P + k], sum_gx likewise. Bindings 1 part_g [C*P],
//                2 part_gx [C*P], 3 sum_g [C], 4 sum_gx [C]. One invocation per channel.
// bn_stats_part: the statistics of channel c split over P workgroups (as bn_bwd_reduce's chunks):
//                workgroup c*P + k writes its chunk's sum and sum of squared deviations from the
//                chunk's own mean (two passes over the chunk). Bindings 1 x, 2 part_sum [C*P],
//                3 part_m2 [C*P].
// bn_stats_combine / bn_stats_combine_running: per channel mean = sum / M and biased variance
//                (sum_k m2_k + n_k (mean_k - mean)^2) / M (Chan, Golub & LeVeque's pairwise
//                combination), the running variant also updating the running statistics as
//                bn_stats_running. Bindings 1 part_sum, 2 part_m2, 3 mean [C], 4 var [C],
//                5 running mean, 6 running var (running variant). One invocation per channel.
// bn_bwd_apply:  TRAIN = 1: dx = gamma * invstd * (g' - sum_g / M - xhat * sum_gx / M), M = N*S;
//                TRAIN = 0 (running statistics are constants): dx = g' * gamma * invstd.
//                Bindings 1 x, 2 g, 3 y (as bn_bwd_reduce), 4 mean, 5 var, 6 gamma, 7 sum_g,
//                8 sum_gx, 9 dx.
// bn_bwd_apply_packed: bn_bwd_apply with sum_g and sum_gx in one buffer [2C] (sum_g, then
//                sum_gx), so it binds 8 storage buffers, not 9: what adapters with WebGPU's
//                baseline of 8 per shader stage run (src/ops/batchnorm.rs chooses by the limit).
//                Bindings 1-6 as bn_bwd_apply, 7 sums [2C], 8 dx. Same arithmetic (`bwd_dx`).
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

struct Params { n: u32, c: u32, s: u32, eps: f32, momentum: f32, unbias: f32, parts: u32 }
@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
// Invocations per workgroup of the per-channel reductions (bn_stats, bn_stats_running,
// bn_stats_part, bn_bwd_reduce): a power of two up to 256, set by src/ops/batchnorm.rs from
// `Gpu::reduction_workgroup` (256 on GPUs; 8 on CPU adapters, where a workgroup wider than one
// SIMD batch runs its batches as coroutines switched at every barrier: lavapipe spent 157 ms of a
// ResNet-18 b8 step in bn_stats_running at 256, 13 ms at 8). The grid does not depend on it.
override RED_WG: u32 = 256u;
var<workgroup> red_a: array<f32, 256>;
var<workgroup> red_b: array<f32, 256>;

fn elem(i: u32, c: u32) -> u32 {
    return ((i / p.s) * p.c + c) * p.s + i % p.s;
}

// Chunk k of P = p.parts equal chunks of a channel's M = N*S values: [lo, hi) (empty past M).
fn chunk(k: u32) -> vec2<u32> {
    let m = p.n * p.s;
    let size = (m + p.parts - 1u) / p.parts;
    let lo = min(k * size, m);
    return vec2<u32>(lo, min(lo + size, m));
}

fn tree2(lid: u32) {
    workgroupBarrier();
    for (var k = RED_WG / 2u; k > 0u; k = k >> 1u) {
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

// Sum of channel c's values with indices in [r.x, r.y), and their sum of squared deviations from
// their own mean (two passes), the same in every invocation of the workgroup. Called in uniform
// control flow (it has barriers).
fn range_stats(c: u32, r: vec2<u32>, lid: u32) -> vec2<f32> {
    let valid = c < p.c;
    var s = 0.0;
    if (valid) {
        for (var i = r.x + lid; i < r.y; i = i + RED_WG) { s = s + st_x[elem(i, c)]; }
    }
    red_a[lid] = s;
    red_b[lid] = 0.0;
    tree2(lid);
    let sum = red_a[0];
    let mean = sum / f32(max(r.y - r.x, 1u));
    workgroupBarrier();
    var q = 0.0;
    if (valid) {
        for (var i = r.x + lid; i < r.y; i = i + RED_WG) {
            let d = st_x[elem(i, c)] - mean;
            q = q + d * d;
        }
    }
    red_a[lid] = 0.0;
    red_b[lid] = q;
    tree2(lid);
    return vec2<f32>(sum, red_b[0]);
}

// Mean and biased variance of channel c (all its M values).
fn channel_stats(c: u32, lid: u32) -> vec2<f32> {
    let m = p.n * p.s;
    let sq = range_stats(c, vec2<u32>(0u, m), lid);
    return vec2<f32>(sq.x / f32(max(m, 1u)), sq.y / f32(max(m, 1u)));
}

@compute @workgroup_size(RED_WG)
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

@compute @workgroup_size(RED_WG)
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

// The elementwise passes (bn_apply, bn_bwd_apply, bn_bwd_apply_packed) give each invocation a run
// of RUN elements of one [N, C] plane, so its channel and that channel's values are found once per
// run: RUN = 1 on GPUs, more on CPU adapters, where every division and every load is a per-lane
// scalar loop (`Gpu::run_length`, set by src/ops/batchnorm.rs, which sizes the grid: one
// invocation per run, N*C*ceil(S / RUN) in all).
override RUN: u32 = 1u;

// Invocation t's run: (channel, first element, end) of its plane's elements; first = end past the
// last run.
fn run_of(t: u32) -> vec3<u32> {
    let runs = (p.s + RUN - 1u) / RUN;
    let plane = t / runs;
    if (plane >= p.n * p.c) { return vec3<u32>(0u, 0u, 0u); }
    let lo = plane * p.s + (t % runs) * RUN;
    return vec3<u32>(plane % p.c, lo, min(lo + RUN, (plane + 1u) * p.s));
}

@compute @workgroup_size(256)
fn bn_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = run_of((wid.y * nwg.x + wid.x) * WG + lid.x);
    let c = r.x;
    if (r.y >= r.z) { return; }
    let invstd = 1.0 / sqrt(ap_var[c] + p.eps);
    let mean = ap_mean[c];
    let gamma = ap_gamma[c];
    let beta = ap_beta[c];
    for (var t = r.y; t < r.z; t = t + 1u) {
        ap_y[t] = activate((ap_x[t] - mean) * invstd * gamma + beta);
    }
}

@group(0) @binding(1) var<storage, read> br_x: array<f32>;
@group(0) @binding(2) var<storage, read> br_g: array<f32>;
@group(0) @binding(3) var<storage, read> br_y: array<f32>;
@group(0) @binding(4) var<storage, read> br_mean: array<f32>;
@group(0) @binding(5) var<storage, read> br_var: array<f32>;
@group(0) @binding(6) var<storage, read_write> br_sum_g: array<f32>;
@group(0) @binding(7) var<storage, read_write> br_sum_gx: array<f32>;

@compute @workgroup_size(RED_WG)
fn bn_bwd_reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = wid.y * nwg.x + wid.x;
    let c = w / p.parts;
    let valid = c < p.c;
    var sg = 0.0;
    var sgx = 0.0;
    if (valid) {
        let mean = br_mean[c];
        let invstd = 1.0 / sqrt(br_var[c] + p.eps);
        let r = chunk(w % p.parts);
        for (var i = r.x + lid.x; i < r.y; i = i + RED_WG) {
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
        br_sum_g[w] = red_a[0];
        br_sum_gx[w] = red_b[0];
    }
}

@group(0) @binding(1) var<storage, read> bc_part_g: array<f32>;
@group(0) @binding(2) var<storage, read> bc_part_gx: array<f32>;
@group(0) @binding(3) var<storage, read_write> bc_sum_g: array<f32>;
@group(0) @binding(4) var<storage, read_write> bc_sum_gx: array<f32>;

@compute @workgroup_size(64)
fn bn_bwd_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (c >= p.c) { return; }
    var sg = 0.0;
    var sgx = 0.0;
    for (var k = 0u; k < p.parts; k = k + 1u) {
        sg = sg + bc_part_g[c * p.parts + k];
        sgx = sgx + bc_part_gx[c * p.parts + k];
    }
    bc_sum_g[c] = sg;
    bc_sum_gx[c] = sgx;
}

@group(0) @binding(2) var<storage, read_write> sp_sum: array<f32>;
@group(0) @binding(3) var<storage, read_write> sp_m2: array<f32>;

@compute @workgroup_size(RED_WG)
fn bn_stats_part(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let w = wid.y * nwg.x + wid.x;
    let c = w / p.parts;
    let sm = range_stats(c, chunk(w % p.parts), lid.x);
    if (c < p.c && lid.x == 0u) {
        sp_sum[w] = sm.x;
        sp_m2[w] = sm.y;
    }
}

@group(0) @binding(1) var<storage, read> sc_sum: array<f32>;
@group(0) @binding(2) var<storage, read> sc_m2: array<f32>;
@group(0) @binding(3) var<storage, read_write> sc_mean: array<f32>;
@group(0) @binding(4) var<storage, read_write> sc_var: array<f32>;
@group(0) @binding(5) var<storage, read_write> sc_rmean: array<f32>;
@group(0) @binding(6) var<storage, read_write> sc_rvar: array<f32>;

// Channel c's mean and biased variance from its P chunks' sums and squared deviations.
fn combine_stats(c: u32) -> vec2<f32> {
    let m = f32(max(p.n * p.s, 1u));
    var sum = 0.0;
    for (var k = 0u; k < p.parts; k = k + 1u) { sum = sum + sc_sum[c * p.parts + k]; }
    let mean = sum / m;
    var m2 = 0.0;
    for (var k = 0u; k < p.parts; k = k + 1u) {
        let r = chunk(k);
        if (r.y > r.x) {
            let nk = f32(r.y - r.x);
            let d = sc_sum[c * p.parts + k] / nk - mean;
            m2 = m2 + sc_m2[c * p.parts + k] + nk * d * d;
        }
    }
    return vec2<f32>(mean, m2 / m);
}

@compute @workgroup_size(64)
fn bn_stats_combine(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (c >= p.c) { return; }
    let mv = combine_stats(c);
    sc_mean[c] = mv.x;
    sc_var[c] = mv.y;
}

@compute @workgroup_size(64)
fn bn_stats_combine_running(@builtin(workgroup_id) wid: vec3<u32>,
                            @builtin(num_workgroups) nwg: vec3<u32>,
                            @builtin(local_invocation_id) lid: vec3<u32>) {
    let c = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (c >= p.c) { return; }
    let mv = combine_stats(c);
    sc_mean[c] = mv.x;
    sc_var[c] = mv.y;
    sc_rmean[c] = (1.0 - p.momentum) * sc_rmean[c] + p.momentum * mv.x;
    sc_rvar[c] = (1.0 - p.momentum) * sc_rvar[c] + p.momentum * mv.y * p.unbias;
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

// Channel c's constants of the backward's elementwise pass, given its sum_g and sum_gx.
struct BwdChannel { invstd: f32, scale: f32, mean: f32, sum_g: f32, sum_gx: f32 }

fn bwd_channel(c: u32, sum_g: f32, sum_gx: f32) -> BwdChannel {
    let invstd = 1.0 / sqrt(ba_var[c] + p.eps);
    return BwdChannel(invstd, ba_gamma[c] * invstd, ba_mean[c], sum_g, sum_gx);
}

// Element t of x (channel constants k) -> dx (both bn_bwd_apply forms).
fn bwd_dx(t: u32, k: BwdChannel) -> f32 {
    let gv = act_grad(ba_g[t], ba_y[t]);
    if (TRAIN == 1u) {
        let m = f32(p.n * p.s);
        let xhat = (ba_x[t] - k.mean) * k.invstd;
        return k.scale * (gv - k.sum_g / m - xhat * k.sum_gx / m);
    }
    return gv * k.scale;
}

@compute @workgroup_size(256)
fn bn_bwd_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = run_of((wid.y * nwg.x + wid.x) * WG + lid.x);
    if (r.y >= r.z) { return; }
    let k = bwd_channel(r.x, ba_sum_g[r.x], ba_sum_gx[r.x]);
    for (var t = r.y; t < r.z; t = t + 1u) { ba_dx[t] = bwd_dx(t, k); }
}

@group(0) @binding(7) var<storage, read> bp_sums: array<f32>;
@group(0) @binding(8) var<storage, read_write> bp_dx: array<f32>;

@compute @workgroup_size(256)
fn bn_bwd_apply_packed(@builtin(workgroup_id) wid: vec3<u32>,
                       @builtin(num_workgroups) nwg: vec3<u32>,
                       @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = run_of((wid.y * nwg.x + wid.x) * WG + lid.x);
    if (r.y >= r.z) { return; }
    let k = bwd_channel(r.x, bp_sums[r.x], bp_sums[p.c + r.x]);
    for (var t = r.y; t < r.z; t = t + 1u) { bp_dx[t] = bwd_dx(t, k); }
}
