// Softmax and log-softmax over the last axis, numerically stable (subtract the row max).
// One workgroup of 256 per row: a max tree, a sum-of-exp tree, then the write.
// LOG (override): 0 softmax, 1 log-softmax. Bindings: 0 params, 1 x, 2 out. Rows: 2-D folded grid.

override LOG: u32 = 0u;

struct Params { rows: u32, len: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;
var<workgroup> scratch: array<f32, 256>;

fn tree(lid: u32, is_max: bool) -> f32 {
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s = s >> 1u) {
        if (lid < s) {
            if (is_max) {
                scratch[lid] = max(scratch[lid], scratch[lid + s]);
            } else {
                scratch[lid] = scratch[lid] + scratch[lid + s];
            }
        }
        workgroupBarrier();
    }
    let r = scratch[0];
    workgroupBarrier();
    return r;
}

@compute @workgroup_size(256)
fn softmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * nwg.x + wid.x;
    // Uniform control flow: out-of-range workgroups still take part in barriers, then skip the writes.
    let valid = row < p.rows;
    let base = row * p.len;
    var m = -3.402823e38;
    if (valid) {
        for (var k = lid.x; k < p.len; k = k + WG) { m = max(m, x[base + k]); }
    }
    scratch[lid.x] = m;
    m = tree(lid.x, true);
    var s = 0.0;
    if (valid) {
        for (var k = lid.x; k < p.len; k = k + WG) { s = s + exp(x[base + k] - m); }
    }
    scratch[lid.x] = s;
    s = tree(lid.x, false);
    if (!valid) { return; }
    if (LOG == 1u) {
        let log_s = log(s);
        for (var k = lid.x; k < p.len; k = k + WG) { out[base + k] = x[base + k] - m - log_s; }
    } else {
        let inv = 1.0 / s;
        for (var k = lid.x; k < p.len; k = k + WG) { out[base + k] = exp(x[base + k] - m) * inv; }
    }
}
