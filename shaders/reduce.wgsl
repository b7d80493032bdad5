// Reductions over one axis of a tensor viewed as [outer, len, inner]; one output per (outer, inner).
//
// OP (override): 0 sum (times `scale`, so mean is sum with scale 1/len), 1 max, 2 min, 3 argmax,
// 4 argmin. Outputs are written as u32 words: f32 bits for values, the index for arg ops
// (ties resolve to the lowest index). Bindings: 0 params, 1 x (f32), 2 out (u32 words).

override OP: u32 = 0u;

struct Params { outer: u32, len: u32, inner: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;
var<workgroup> vals: array<f32, 256>;
var<workgroup> idxs: array<u32, 256>;

fn init_value() -> f32 {
    switch OP {
        case 1u, 3u: { return -3.402823e38; }
        case 2u, 4u: { return 3.402823e38; }
        default: { return 0.0; }
    }
}

// Folds candidate (v, i) into accumulator (a, ai); returns the new pair.
fn combine(a: f32, ai: u32, v: f32, i: u32) -> vec2<u32> {
    var r = a;
    var ri = ai;
    switch OP {
        case 0u: { r = a + v; }
        case 1u: { r = max(a, v); }
        case 2u: { r = min(a, v); }
        case 3u: { if (v > a || (v == a && i < ai)) { r = v; ri = i; } }
        case 4u: { if (v < a || (v == a && i < ai)) { r = v; ri = i; } }
        default: {}
    }
    return vec2<u32>(bitcast<u32>(r), ri);
}

fn write_result(o: u32, v: f32, i: u32) {
    if (OP == 3u || OP == 4u) {
        out[o] = i;
    } else if (OP == 0u) {
        out[o] = bitcast<u32>(v * p.scale);
    } else {
        out[o] = bitcast<u32>(v);
    }
}

// reduce_workgroup: one workgroup per output; threads stride over the axis, then a tree reduce.
// Dispatch: outer*inner workgroups (2-D folded: o = wid.y * nwg.x + wid.x).
@compute @workgroup_size(256)
fn reduce_workgroup(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = wid.y * nwg.x + wid.x;
    let valid = o < p.outer * p.inner;
    let base = (o / p.inner) * p.len * p.inner + o % p.inner;
    var acc = init_value();
    var acc_i = 0xffffffffu;
    if (valid) {
        for (var k = lid.x; k < p.len; k = k + WG) {
            let r = combine(acc, acc_i, x[base + k * p.inner], k);
            acc = bitcast<f32>(r.x);
            acc_i = r.y;
        }
    }
    vals[lid.x] = acc;
    idxs[lid.x] = acc_i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid.x < s) {
            let r = combine(vals[lid.x], idxs[lid.x], vals[lid.x + s], idxs[lid.x + s]);
            vals[lid.x] = bitcast<f32>(r.x);
            idxs[lid.x] = r.y;
        }
        workgroupBarrier();
    }
    if (lid.x == 0u && valid) {
        write_result(o, vals[0], idxs[0]);
    }
}

// reduce_thread: one invocation per output, a serial loop over a short axis (coalesced over inner).
@compute @workgroup_size(256)
fn reduce_thread(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let o = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (o >= p.outer * p.inner) { return; }
    let base = (o / p.inner) * p.len * p.inner + o % p.inner;
    var acc = init_value();
    var acc_i = 0xffffffffu;
    for (var k = 0u; k < p.len; k = k + 1u) {
        let r = combine(acc, acc_i, x[base + k * p.inner], k);
        acc = bitcast<f32>(r.x);
        acc_i = r.y;
    }
    write_result(o, acc, acc_i);
}
