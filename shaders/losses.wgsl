// Kernels the losses need beyond the generic ops.
//
// segment_mean: x [B, N] -> out [B, C], out[b, c] = mean of x[b, r] over rows r of class c, where
// class c's rows are members[offsets[c] .. offsets[c+1]] (CSR, built on the host per clustering).
// A class with no row gives 0. One invocation per output: total work B * N, not B * C * N.
// Bindings: 0 params, 1 x, 2 offsets (i32, C+1), 3 members (i32, N), 4 out. Workgroup 256.

struct Params { batch: u32, rows: u32, classes: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> offsets: array<i32>;
@group(0) @binding(3) var<storage, read> members: array<i32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn segment_mean(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_id) lid: vec3<u32>) {
    let t = (wid.y * nwg.x + wid.x) * 256u + lid.x;
    if (t >= p.batch * p.classes) { return; }
    let b = t / p.classes;
    let c = t % p.classes;
    let start = u32(offsets[c]);
    let end = u32(offsets[c + 1u]);
    var acc = 0.0;
    for (var k = start; k < end; k = k + 1u) {
        acc = acc + x[b * p.rows + u32(members[k])];
    }
    out[t] = select(0.0, acc / f32(end - start), end > start);
}
