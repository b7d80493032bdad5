// Indexed reads and writes along one axis; tensors are viewed as [outer, dim, inner].
//
// index_select: out[o, j, i] = x[o, idx[j], i]                     (idx: [count])
// gather:       out[o, j, i] = x[o, idx[o, j, i], i]               (idx: [outer, count, inner])
// index_add:    out[o, r, i] = base[o, r, i] + sum_{j: idx[j] == r} src[o, j, i]
// scatter_add:  out[o, r, i] = base[o, r, i] + sum_{j: idx[o, j, i] == r} src[o, j, i]
// The adds are gathers over j (one invocation per output element, summing in index order), so
// results are deterministic without float atomics. An index outside [0, dim) reads as NaN.
// Bindings: 0 params, then the buffers in the order of each entry's declaration. Workgroup 256.

struct Params { outer: u32, dim: u32, inner: u32, count: u32 }
@group(0) @binding(0) var<uniform> p: Params;

fn linear(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * 256u + lid.x;
}

const NAN_BITS: u32 = 0x7fc00000u;

// Reads: bindings 1 = x, 2 = idx, 3 = out.
@group(0) @binding(1) var<storage, read> rd_x: array<f32>;
@group(0) @binding(2) var<storage, read> rd_idx: array<i32>;
@group(0) @binding(3) var<storage, read_write> rd_out: array<f32>;

fn read_row(o: u32, r: i32, i: u32) -> f32 {
    if (r < 0 || u32(r) >= p.dim) { return bitcast<f32>(NAN_BITS); }
    return rd_x[(o * p.dim + u32(r)) * p.inner + i];
}

@compute @workgroup_size(256)
fn index_select(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = linear(wid, nwg, lid);
    if (t >= p.outer * p.count * p.inner) { return; }
    let i = t % p.inner;
    let j = (t / p.inner) % p.count;
    let o = t / (p.inner * p.count);
    rd_out[t] = read_row(o, rd_idx[j], i);
}

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = linear(wid, nwg, lid);
    if (t >= p.outer * p.count * p.inner) { return; }
    let i = t % p.inner;
    let o = t / (p.inner * p.count);
    rd_out[t] = read_row(o, rd_idx[t], i);
}

// Adds: bindings 1 = base, 2 = idx, 3 = src, 4 = out.
@group(0) @binding(1) var<storage, read> add_base: array<f32>;
@group(0) @binding(2) var<storage, read> add_idx: array<i32>;
@group(0) @binding(3) var<storage, read> add_src: array<f32>;
@group(0) @binding(4) var<storage, read_write> add_out: array<f32>;

@compute @workgroup_size(256)
fn index_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = linear(wid, nwg, lid);
    if (t >= p.outer * p.dim * p.inner) { return; }
    let i = t % p.inner;
    let r = i32((t / p.inner) % p.dim);
    let o = t / (p.inner * p.dim);
    var acc = add_base[t];
    for (var j = 0u; j < p.count; j = j + 1u) {
        if (add_idx[j] == r) { acc = acc + add_src[(o * p.count + j) * p.inner + i]; }
    }
    add_out[t] = acc;
}

@compute @workgroup_size(256)
fn scatter_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = linear(wid, nwg, lid);
    if (t >= p.outer * p.dim * p.inner) { return; }
    let i = t % p.inner;
    let r = i32((t / p.inner) % p.dim);
    let o = t / (p.inner * p.dim);
    var acc = add_base[t];
    for (var j = 0u; j < p.count; j = j + 1u) {
        let s = (o * p.count + j) * p.inner + i;
        if (add_idx[s] == r) { acc = acc + add_src[s]; }
    }
    add_out[t] = acc;
}
