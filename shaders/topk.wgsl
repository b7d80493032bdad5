// Per-row top-k along the last axis: the k smallest (or, with LARGEST, largest) values of each row
// of x [rows, len], sorted, ties broken by the lower index. Used for kNN over distance blocks.
//
// One workgroup of 128 per row. Each invocation scans its strided share of the row keeping a
// sorted private list of its best k (k <= 64); then k merge rounds each pick the best head over
// all lists with a lexicographic (value, index) tree reduce, and the owner of that head advances.
// Bindings: 0 params, 1 x, 2 values out [rows, k], 3 indices out [rows, k] (u32). 2-D folded grid.

override LARGEST: bool = false;

const WG: u32 = 128u;
const K_MAX: u32 = 64u;

struct Params { rows: u32, len: u32, k: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> values: array<f32>;
@group(0) @binding(3) var<storage, read_write> indices: array<u32>;

var<workgroup> red_v: array<f32, 128>;
var<workgroup> red_i: array<u32, 128>;

const NONE: u32 = 0xffffffffu;

// (a, ai) before (b, bi)? Smaller key first (keys are negated values for LARGEST), then lower index.
fn before(a: f32, ai: u32, b: f32, bi: u32) -> bool {
    return a < b || (a == b && ai < bi);
}

@compute @workgroup_size(128)
fn topk_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid3: vec3<u32>) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.rows) { return; } // uniform per workgroup
    let lid = lid3.x;
    let base = row * p.len;
    var list_v: array<f32, 64>;
    var list_i: array<u32, 64>;
    var count = 0u;
    // 1. Private sorted lists; indices arrive in increasing order, so equal keys stay index-sorted.
    for (var j = lid; j < p.len; j = j + WG) {
        var key = x[base + j];
        if (LARGEST) { key = -key; }
        if (count == p.k && !before(key, j, list_v[p.k - 1u], list_i[p.k - 1u])) { continue; }
        var pos = min(count, p.k - 1u);
        if (count < p.k) { count = count + 1u; }
        while (pos > 0u && before(key, j, list_v[pos - 1u], list_i[pos - 1u])) {
            list_v[pos] = list_v[pos - 1u];
            list_i[pos] = list_i[pos - 1u];
            pos = pos - 1u;
        }
        list_v[pos] = key;
        list_i[pos] = j;
    }
    // 2. k merge rounds over the list heads.
    var head = 0u;
    for (var r = 0u; r < p.k; r = r + 1u) {
        var hv = 3.402823e38;
        var hi = NONE;
        if (head < count) { hv = list_v[head]; hi = list_i[head]; }
        red_v[lid] = hv;
        red_i[lid] = hi;
        workgroupBarrier();
        for (var s = WG / 2u; s > 0u; s = s >> 1u) {
            if (lid < s && before(red_v[lid + s], red_i[lid + s], red_v[lid], red_i[lid])) {
                red_v[lid] = red_v[lid + s];
                red_i[lid] = red_i[lid + s];
            }
            workgroupBarrier();
        }
        let win_i = red_i[0];
        let win_v = red_v[0];
        workgroupBarrier();
        if (head < count && hi == win_i) { head = head + 1u; }
        if (lid == 0u) {
            var v = win_v;
            if (LARGEST) { v = -v; }
            values[row * p.k + r] = v;
            indices[row * p.k + r] = win_i;
        }
    }
}
