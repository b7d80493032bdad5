// 2-D max and average pooling over [N, C, H, W] (no dilation, floor mode; padding reads as -inf for
// max and as zeros counted in the divisor for average, as PyTorch's defaults).
//
// max_pool:     bindings 1 x, 2 out [N,C,Ho,Wo], 3 idx (i32: argmax as iy*W+ix within the plane,
//               first maximum in scan order). One invocation per output.
// max_pool_bwd: bindings 1 g (dL/dout), 2 idx, 3 dx. A gather over the windows covering each input.
// avg_pool:     bindings 1 x, 2 out. avg_pool_bwd: bindings 1 g, 2 dx (gather).
// Workgroup 256; 1-D index folded into 2-D.

struct Params {
    nc: u32, h: u32, w: u32, kh: u32,
    kw: u32, sh: u32, sw: u32, ph: u32,
    pw: u32, ho: u32, wo: u32, _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;

fn lin(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@group(0) @binding(1) var<storage, read> mp_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> mp_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> mp_idx: array<i32>;

@compute @workgroup_size(256)
fn max_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lin(wid, nwg, lid);
    let po = p.ho * p.wo;
    if (t >= p.nc * po) { return; }
    let plane = t / po;
    let oy = (t % po) / p.wo;
    let ox = t % p.wo;
    var best = -3.402823e38;
    var best_i = -1;
    let base = plane * p.h * p.w;
    for (var ki = 0u; ki < p.kh; ki = ki + 1u) {
        let iy = i32(oy * p.sh + ki) - i32(p.ph);
        if (iy < 0 || iy >= i32(p.h)) { continue; }
        for (var kj = 0u; kj < p.kw; kj = kj + 1u) {
            let ix = i32(ox * p.sw + kj) - i32(p.pw);
            if (ix < 0 || ix >= i32(p.w)) { continue; }
            let v = mp_x[base + u32(iy) * p.w + u32(ix)];
            if (best_i < 0 || v > best) {
                best = v;
                best_i = iy * i32(p.w) + ix;
            }
        }
    }
    mp_out[t] = best;
    mp_idx[t] = best_i;
}

// Output rows (or columns) whose window covers input position i: [lo, hi).
fn covering(i: u32, k: u32, s: u32, pad: u32, outs: u32) -> vec2<u32> {
    let top = i32(i + pad);
    var lo = 0;
    if (top - i32(k) + 1 > 0) { lo = (top - i32(k) + 1 + i32(s) - 1) / i32(s); }
    let hi = min(top / i32(s) + 1, i32(outs));
    return vec2<u32>(u32(lo), u32(max(hi, lo)));
}

@group(0) @binding(1) var<storage, read> mb_g: array<f32>;
@group(0) @binding(2) var<storage, read> mb_idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> mb_dx: array<f32>;

@compute @workgroup_size(256)
fn max_pool_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lin(wid, nwg, lid);
    let hw = p.h * p.w;
    if (t >= p.nc * hw) { return; }
    let plane = t / hw;
    let iy = (t % hw) / p.w;
    let ix = t % p.w;
    let me = i32(iy * p.w + ix);
    let ry = covering(iy, p.kh, p.sh, p.ph, p.ho);
    let rx = covering(ix, p.kw, p.sw, p.pw, p.wo);
    var acc = 0.0;
    for (var oy = ry.x; oy < ry.y; oy = oy + 1u) {
        for (var ox = rx.x; ox < rx.y; ox = ox + 1u) {
            let o = (plane * p.ho + oy) * p.wo + ox;
            if (mb_idx[o] == me) { acc = acc + mb_g[o]; }
        }
    }
    mb_dx[t] = acc;
}

@group(0) @binding(1) var<storage, read> ap_x: array<f32>;
@group(0) @binding(2) var<storage, read_write> ap_out: array<f32>;

@compute @workgroup_size(256)
fn avg_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lin(wid, nwg, lid);
    let po = p.ho * p.wo;
    if (t >= p.nc * po) { return; }
    let plane = t / po;
    let oy = (t % po) / p.wo;
    let ox = t % p.wo;
    let base = plane * p.h * p.w;
    var acc = 0.0;
    for (var ki = 0u; ki < p.kh; ki = ki + 1u) {
        let iy = i32(oy * p.sh + ki) - i32(p.ph);
        if (iy < 0 || iy >= i32(p.h)) { continue; }
        for (var kj = 0u; kj < p.kw; kj = kj + 1u) {
            let ix = i32(ox * p.sw + kj) - i32(p.pw);
            if (ix < 0 || ix >= i32(p.w)) { continue; }
            acc = acc + ap_x[base + u32(iy) * p.w + u32(ix)];
        }
    }
    ap_out[t] = acc / f32(p.kh * p.kw);
}

@group(0) @binding(1) var<storage, read> ab_g: array<f32>;
@group(0) @binding(2) var<storage, read_write> ab_dx: array<f32>;

@compute @workgroup_size(256)
fn avg_pool_bwd(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lin(wid, nwg, lid);
    let hw = p.h * p.w;
    if (t >= p.nc * hw) { return; }
    let plane = t / hw;
    let ry = covering((t % hw) / p.w, p.kh, p.sh, p.ph, p.ho);
    let rx = covering(t % p.w, p.kw, p.sw, p.pw, p.wo);
    var acc = 0.0;
    for (var oy = ry.x; oy < ry.y; oy = oy + 1u) {
        for (var ox = rx.x; ox < rx.y; ox = ox + 1u) {
            acc = acc + ab_g[(plane * p.ho + oy) * p.wo + ox];
        }
    }
    ab_dx[t] = acc / f32(p.kh * p.kw);
}
